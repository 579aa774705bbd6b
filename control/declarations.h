// Declarer: reconciles the daemon's channels, grants and quotas to the file
// of `shmlaned --declare FILE` (text-format shmlane.v1.Declarations), for
// deployments with no orchestrator to call the API, such as a sidecar whose
// declarations come from a ConfigMap.
//
// The file is the desired state of what it names. The daemon remembers what
// exists because of it (its "owned" set, saved in the state file), so that:
// - a declared channel is created if missing, and adopted if it exists with
//   the same spec and owner; one whose spec or owner changed is re-created
//   (its grants kept) once no process is attached, and until then the change
//   waits with one log line saying what and why;
// - a declared grant is added if missing; a declared quota is set exactly
//   (limits left at 0 take the defaults);
// - an owned object dropped from the file is removed: grants at once,
//   channels once nothing is attached to them, quotas reset to defaults.
// Objects created through the API and never declared are left alone.
//
// It applies at start (a file that cannot be read or parsed refuses the
// start), when the file changes (inotify on its directory, which sees a
// ConfigMap's "..data" symlink swap as well as an edit in place), on
// Trigger() (SIGHUP), and every resync interval, which also restores
// declared objects changed through the API and retries waiting changes. A
// file that becomes unreadable or invalid later is reported and ignored: the
// last applied declarations stay in force. Each change is logged, audited
// (caller "the daemon", method "Declare*") and persisted once per pass.
//
// The file grants access, so it must be a regular file owned by root or the
// daemon's uid and writable by no one else.
//
// Thread safety: every public method may be called from any thread. Apply
// passes are serialized; Owned() may be called from the persist callback.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "control/audit_log.h"
#include "control/registry.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/declarations.pb.h"

namespace shmlane::control {

// Most bytes a declarations file may have.
inline constexpr size_t kMaxDeclarationsBytes = 4 << 20;

// Parses text-format declarations and checks them on their own: valid
// channel specs and names, valid grants and quotas, no object twice.
// InvalidArgument names the file, line and what is wrong.
absl::StatusOr<shmlane::v1::Declarations> ParseDeclarations(absl::string_view path,
                                                            const std::string& text);

// Reads `path` (following symlinks), refusing a file that is not regular,
// is owned by a uid other than root or `daemon_uid`, or is group- or
// world-writable, and parses it.
absl::StatusOr<shmlane::v1::Declarations> ReadDeclarations(const std::string& path,
                                                           uint32_t daemon_uid);

struct DeclarerOptions {
  std::string path;
  Registry* registry = nullptr;
  AuditLog* audit = nullptr;  // may be null
  uint32_t daemon_uid = 0;
  // Writes the state file (which includes Owned()). Called after a pass that
  // changed something; an error is logged.
  std::function<absl::Status()> persist;
  // One line of log, without a trailing newline. Default: stderr with a
  // "shmlaned: declarations: " prefix.
  std::function<void(const std::string&)> log;
  // Periodic re-read and re-apply.
  absl::Duration resync = absl::Seconds(10);
  // Re-apply interval while a change waits (for a detach, a quota).
  absl::Duration retry = absl::Seconds(1);
};

class Declarer {
 public:
  // `owned` is what the previous daemon's declarations created (from the
  // state file; empty when there was none).
  Declarer(DeclarerOptions options, shmlane::v1::Declarations owned);
  ~Declarer();
  Declarer(const Declarer&) = delete;
  Declarer& operator=(const Declarer&) = delete;

  // Reads the file and reconciles once, now. InvalidArgument or
  // FailedPrecondition when the file cannot be read or is invalid (then
  // nothing changed). Changes that must wait are logged and retried by the
  // watcher, not returned.
  absl::Status ApplyNow() ABSL_LOCKS_EXCLUDED(apply_mu_, owned_mu_);

  // Starts the watcher thread. FailedPrecondition if the file's directory
  // cannot be watched.
  absl::Status Start();
  // Re-reads and re-applies soon, on the watcher thread (SIGHUP).
  void Trigger();
  // Stops the watcher thread. Idempotent.
  void Stop();

  // What exists because of the declarations, for the state file.
  shmlane::v1::Declarations Owned() const ABSL_LOCKS_EXCLUDED(owned_mu_);

  // Summary for the start-up banner: "N channels, M grants, K quotas".
  std::string Describe() const ABSL_LOCKS_EXCLUDED(owned_mu_);

  // Passes that changed something, and files refused since start.
  uint64_t applied_changes() const { return changes_.load(); }
  uint64_t rejected_files() const { return rejected_.load(); }

 private:
  enum class Why { kStart, kFileChanged, kSignal, kResync };
  // One pass: read, validate, reconcile. Sets *waiting when a change waits.
  absl::Status Pass(Why why, bool* waiting) ABSL_LOCKS_EXCLUDED(apply_mu_, owned_mu_);
  // Reconciles to `desired`; returns how many objects changed, and sets
  // *owned_changed when the owned set did (so the state file needs a write).
  int Reconcile(const shmlane::v1::Declarations& desired, bool* waiting, bool* owned_changed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_) ABSL_LOCKS_EXCLUDED(owned_mu_);
  void Log(const std::string& line) const;
  // Logs `line` under `key` unless the same line was logged for it by the
  // previous pass (so a waiting change is reported once, not every retry).
  void Note(const std::string& key, const std::string& line)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  void Audit(absl::string_view method, absl::string_view channel, const absl::Status& result);
  void Run();

  const DeclarerOptions options_;
  absl::Mutex apply_mu_;  // taken before owned_mu_
  std::map<std::string, std::string> noted_ ABSL_GUARDED_BY(apply_mu_);
  std::map<std::string, std::string> noted_this_pass_ ABSL_GUARDED_BY(apply_mu_);
  std::string last_file_error_ ABSL_GUARDED_BY(apply_mu_);
  mutable absl::Mutex owned_mu_;
  shmlane::v1::Declarations owned_ ABSL_GUARDED_BY(owned_mu_);
  std::atomic<uint64_t> changes_{0};
  std::atomic<uint64_t> rejected_{0};
  dataplane::UniqueFd inotify_;
  dataplane::UniqueFd wake_;  // eventfd: Trigger() and Stop()
  std::atomic<bool> stop_{false};
  std::atomic<bool> triggered_{false};
  std::thread thread_;
};

}  // namespace shmlane::control
