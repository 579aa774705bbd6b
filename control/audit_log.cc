#include "control/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace shmlane::control {

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path,
                                                         uint64_t max_bytes) {
  std::unique_ptr<AuditLog> log(new AuditLog(path, max_bytes));
  absl::MutexLock lock(&log->mu_);
  if (absl::Status s = log->OpenLocked(); !s.ok()) return s;
  return log;
}

absl::Status AuditLog::OpenLocked() {
  fd_.Reset(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd_.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open the audit log ", path_, ": ",
                                                      std::strerror(errno),
                                                      " (see --audit-log; \"none\" disables it)"));
  }
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() ||
      (st.st_mode & 077) != 0) {
    fd_.Reset();
    return absl::FailedPreconditionError(absl::StrCat(
        "the audit log ", path_,
        " must be a regular file owned by the daemon's uid with mode 0600; move it away"));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  return absl::OkStatus();
}

void AuditLog::Record(const Caller& caller, absl::string_view method, absl::string_view channel,
                      const absl::Status& result) {
  nlohmann::ordered_json line;
  line["time"] = absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  nlohmann::ordered_json who;
  switch (caller.kind) {
    case Caller::Kind::kLocal:
      who["uid"] = caller.peer.uid;
      who["gid"] = caller.peer.gid;
      who["pid"] = caller.peer.pid;
      break;
    case Caller::Kind::kCertificate:
      who["certificate"] = caller.names;
      break;
    case Caller::Kind::kDaemon:
      who["daemon"] = true;
      break;
    case Caller::Kind::kUnauthenticated:
      who["unauthenticated"] = true;
      break;
  }
  who["admin"] = caller.admin;
  line["caller"] = std::move(who);
  line["method"] = std::string(method);
  line["channel"] = std::string(channel);
  line["code"] = absl::StatusCodeToString(result.code());
  line["message"] = std::string(result.message());
  // Invalid UTF-8 from a request is replaced, never a reason to lose the line.
  const std::string text =
      line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  absl::MutexLock lock(&mu_);
  if (size_ + text.size() > max_bytes_ && fd_.valid()) {
    const std::string old = path_ + ".1";
    if (::rename(path_.c_str(), old.c_str()) != 0 || !OpenLocked().ok()) ++write_errors_;
  }
  if (!fd_.valid() && !OpenLocked().ok()) {
    ++write_errors_;
    return;
  }
  const ssize_t n = ::write(fd_.get(), text.data(), text.size());
  if (n != static_cast<ssize_t>(text.size())) {
    ++write_errors_;
    return;
  }
  size_ += text.size();
}

uint64_t AuditLog::write_errors() const {
  absl::MutexLock lock(&mu_);
  return write_errors_;
}

}  // namespace shmlane::control
