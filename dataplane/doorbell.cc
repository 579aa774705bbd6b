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

void Doorbell::Ring() const {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated: the owner has been rung already.
  [[maybe_unused]] ssize_t n = ::write(fd_.get(), &one, sizeof(one));
}

void Doorbell::Clear() const {
  uint64_t value = 0;
  [[maybe_unused]] ssize_t n = ::read(fd_.get(), &value, sizeof(value));
}

bool Doorbell::Wait(absl::Time deadline, int also_fd) const {
  for (;;) {
    uint64_t value = 0;
    if (::read(fd_.get(), &value, sizeof(value)) == sizeof(value)) return true;
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {also_fd, POLLIN, 0}};
    const nfds_t nfds = also_fd >= 0 ? 2 : 1;
    timespec ts{};
    timespec* timeout = nullptr;
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      ts = absl::ToTimespec(left);
      timeout = &ts;
    }
    const int r = ::ppoll(fds, nfds, timeout, nullptr);
    if (r < 0 && errno != EINTR) return false;
    if (r == 0) {
      // Timed out; one last non-blocking look so a ring at the deadline counts.
      return ::read(fd_.get(), &value, sizeof(value)) == sizeof(value);
    }
    if (nfds == 2 && fds[1].revents != 0) return true;
  }
}

absl::StatusOr<UniqueFd> Doorbell::DupFd() const {
  UniqueFd copy(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy.valid()) return absl::InternalError(absl::StrCat("dup: ", std::strerror(errno)));
  return copy;
}

}  // namespace shmlane::dataplane
