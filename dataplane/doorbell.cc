#include "dataplane/doorbell.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace shmlane::dataplane {

absl::StatusOr<Doorbell> Doorbell::Create() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) {
    return absl::ResourceExhaustedError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  return Doorbell(std::move(fd));
}

absl::StatusOr<Doorbell> Doorbell::Adopt(UniqueFd fd) {
  if (!fd.valid()) return absl::InvalidArgumentError("doorbell fd is not valid");
  // Only an eventfd behaves as a doorbell; anything else (a pipe, a socket)
  // could block Ring() or return garbage from Wait().
  char link[64] = {};
  const std::string path = absl::StrCat("/proc/self/fd/", fd.get());
  const ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
  if (n <= 0 || std::string_view(link, static_cast<size_t>(n)) != "anon_inode:[eventfd]") {
    return absl::InvalidArgumentError("doorbell fd is not an eventfd");
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("fcntl on doorbell: ", std::strerror(errno)));
  }
  return Doorbell(std::move(fd));
}

absl::Status Doorbell::Notify() const {
  const uint64_t one = 1;
  if (::write(fd_.get(), &one, sizeof(one)) == sizeof(one)) return absl::OkStatus();
  // EAGAIN: the counter is saturated, so the owner has been rung already.
  if (errno == EAGAIN) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("ringing doorbell fd ", fd_.get(), ": ", std::strerror(errno)));
}

bool Doorbell::Clear() const {
  uint64_t value = 0;
  return ::read(fd_.get(), &value, sizeof(value)) == sizeof(value);
}

absl::StatusOr<WakeReason> Doorbell::Await(Deadline deadline, int also_fd) const {
  // ppoll() ignores a negative fd: waiting on it would just sleep to the deadline.
  if (!valid()) return absl::FailedPreconditionError("waiting on an invalid doorbell (fd -1)");
  if (Clear()) return WakeReason::kRung;
  if (deadline.Expired()) return WakeReason::kTimeout;
  const int fds[2] = {fd_.get(), also_fd};
  absl::StatusOr<uint32_t> ready =
      internal::PollReadable(std::span<const int>(fds, also_fd >= 0 ? 2 : 1), deadline);
  if (!ready.ok()) return ready.status();
  // Drain whatever rang; another reader of the fd may have been quicker,
  // which is why callers re-check their ring rather than trust the answer.
  if ((*ready & 1u) != 0 || Clear()) return WakeReason::kRung;
  if ((*ready & 2u) != 0) return WakeReason::kOtherFd;
  return WakeReason::kTimeout;
}

bool Doorbell::Wait(absl::Time deadline, int also_fd) const {
  absl::StatusOr<WakeReason> r = Await(Deadline::FromTime(deadline), also_fd);
  return r.ok() && *r != WakeReason::kTimeout;
}

absl::StatusOr<UniqueFd> Doorbell::DupFd() const {
  UniqueFd copy(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy.valid()) return absl::InternalError(absl::StrCat("dup: ", std::strerror(errno)));
  return copy;
}

namespace internal {

absl::StatusOr<uint32_t> PollReadable(std::span<const int> fds, Deadline deadline) {
  pollfd p[32];
  const size_t n = std::min<size_t>(fds.size(), 32);
  for (;;) {
    for (size_t i = 0; i < n; ++i) p[i] = {fds[i], POLLIN, 0};
    timespec ts{};
    timespec* timeout = nullptr;
    if (!deadline.infinite()) {
      const int64_t left = deadline.ns() - Deadline::NowNs();
      if (left <= 0) return 0u;
      ts.tv_sec = left / 1'000'000'000;
      ts.tv_nsec = left % 1'000'000'000;
      timeout = &ts;
    }
    const int r = ::ppoll(p, n, timeout, nullptr);
    if (r < 0) {
      if (errno == EINTR) continue;  // the deadline is absolute: the time left shrinks
      return absl::InternalError(absl::StrCat("ppoll: ", std::strerror(errno)));
    }
    if (r == 0) return 0u;  // the kernel's timer ran out; the loop above would agree
    uint32_t ready = 0;
    for (size_t i = 0; i < n; ++i) {
      if ((p[i].revents & (POLLNVAL | POLLERR)) != 0) {
        return absl::InternalError(absl::StrCat("cannot wait on fd ", fds[i], ": ",
                                                (p[i].revents & POLLNVAL) != 0
                                                    ? "not open (closed behind our back?)"
                                                    : "error condition"));
      }
      if ((p[i].revents & (POLLIN | POLLHUP)) != 0) ready |= 1u << i;
    }
    if (ready != 0) return ready;
  }
}

}  // namespace internal

}  // namespace shmlane::dataplane
