// AuditLog: one JSON line per state-changing control call (and refused
// attempt), with the kernel- or TLS-verified caller:
//   {"time":"2026-12-01T20:00:00.123Z","caller":{"uid":1001,"gid":1001,
//    "pid":42},"method":"CreateChannel","channel":"x","code":"OK",
//    "message":""}
// The file is 0600, opened with O_APPEND | O_NOFOLLOW, and rotated to
// FILE.1 (replacing it) once it grows past its size bound, so it never takes
// more than twice that bound.
//
// Thread safety: Record() may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "control/caller.h"
#include "dataplane/unique_fd.h"

namespace shmlane::control {

class AuditLog {
 public:
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path,
                                                        uint64_t max_bytes);

  // Appends one line. Write errors are counted, not returned: the call it
  // records has happened either way.
  void Record(const Caller& caller, absl::string_view method, absl::string_view channel,
              const absl::Status& result) ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t write_errors() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  AuditLog(std::string path, uint64_t max_bytes) : path_(std::move(path)), max_bytes_(max_bytes) {}
  absl::Status OpenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const uint64_t max_bytes_;
  mutable absl::Mutex mu_;
  dataplane::UniqueFd fd_ ABSL_GUARDED_BY(mu_);
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t write_errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace shmlane::control
