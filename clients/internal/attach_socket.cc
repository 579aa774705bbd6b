#include "clients/internal/attach_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"

namespace shmlane::client::internal {
namespace {

std::string ErrnoText(int err) { return strerror(err); }

// Relative timeout for ppoll; nullptr means forever.
const timespec* TimeoutFor(absl::Time deadline, timespec* storage) {
  if (deadline == absl::InfiniteFuture()) return nullptr;
  const absl::Duration left = std::max(deadline - absl::Now(), absl::ZeroDuration());
  *storage = absl::ToTimespec(left);
  return storage;
}

}  // namespace

absl::StatusCode CodeFromRpc(int32_t code) {
  // google.rpc.Code and absl::StatusCode share their values 0..16.
  if (code < 0 || code > 16) return absl::StatusCode::kUnknown;
  return static_cast<absl::StatusCode>(code);
}

bool WaitReadable(int fd, absl::Time deadline) {
  for (;;) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    timespec ts;
    const int n = ::ppoll(&p, 1, TimeoutFor(deadline, &ts), nullptr);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return true;  // let the caller's recvmsg report it
  }
}

absl::StatusOr<AttachSocket> AttachSocket::Connect(const std::string& path, absl::Duration timeout,
                                                   std::optional<uint32_t> expected_uid) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("attach socket path is ", path.size(), " bytes, longer than the ",
                     sizeof(addr.sun_path) - 1, " a Unix socket allows: ", path,
                     "; use a shorter runtime directory"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return absl::InternalError(absl::StrCat("socket(AF_UNIX, SOCK_SEQPACKET): ", ErrnoText(errno)));
  }
  // A Unix-socket connect blocks while the listener's backlog is full; the
  // send timeout bounds that wait (and is cleared again below).
  timeval tv = absl::ToTimeval(std::max(timeout, absl::Milliseconds(1)));
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot connect to ", path, ": ", ErrnoText(err),
                       "; the daemon's attach socket mode or group keeps this user out"));
    }
    if (err == EAGAIN || err == EINPROGRESS) {
      return absl::DeadlineExceededError(
          absl::StrCat("shmlaned at ", path, " did not accept the connection within ",
                       absl::FormatDuration(timeout), " (its backlog is full)"));
    }
    if (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR) {
      const size_t slash = path.rfind('/');
      const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
      return absl::UnavailableError(
          absl::StrCat("shmlaned is not running at ", path,
                       ": start it with `make run` or set SHMLANE_RUNTIME_DIR (runtime directory ",
                       dir, ", connect: ", ErrnoText(err), ")"));
    }
    return absl::UnavailableError(absl::StrCat("connect to ", path, ": ", ErrnoText(err)));
  }
  tv = timeval{};
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  // Who accepted? The kernel recorded it at listen(); nobody can forge it.
  ucred daemon{};
  socklen_t len = sizeof(daemon);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &daemon, &len) != 0) {
    return absl::InternalError(absl::StrCat("SO_PEERCRED on ", path, ": ", ErrnoText(errno)));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  struct stat st {};
  const bool dir_known = ::stat(dir.c_str(), &st) == 0;
  const bool trusted = expected_uid.has_value()
                           ? daemon.uid == *expected_uid
                           : daemon.uid == 0 || (dir_known && daemon.uid == st.st_uid);
  if (!trusted) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the process behind ", path, " (pid ", daemon.pid, ", uid ", daemon.uid,
        ") is not the shmlane daemon this client trusts: ",
        expected_uid.has_value()
            ? absl::StrCat("expected uid ", *expected_uid)
            : absl::StrCat("a daemon runs as root or as the owner of ", dir, " (uid ",
                           dir_known ? absl::StrCat(st.st_uid) : "unknown", ")"),
        "; nothing was sent. If that uid is right, set AttachOptions::expected_daemon_uid"));
  }
  return AttachSocket(std::move(fd), path);
}

absl::Status AttachSocket::Send(const v1::AttachMessage& message) { return Send(message, {}); }

absl::Status AttachSocket::Send(const v1::AttachMessage& message, std::span<const int> fds) {
  if (!fd_.valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("attach connection to ", path_, " is closed"));
  }
  std::string bytes;
  if (!message.SerializeToString(&bytes)) {
    return absl::InternalError("cannot serialize the attach message");
  }
  if (bytes.size() > kMaxAttachMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat("attach message of ", bytes.size(),
                                                   " bytes exceeds the protocol's ",
                                                   kMaxAttachMessageBytes, "-byte limit"));
  }
  if (fds.size() > kMaxFdsPerMessage) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxFdsPerMessage, " fds a packet"));
  }
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
      fd_.Reset();
      return absl::UnavailableError(absl::StrCat("shmlaned closed the attach connection at ", path_,
                                                 " (", ErrnoText(err), ")"));
    }
    return absl::InternalError(absl::StrCat("send on attach socket: ", ErrnoText(err)));
  }
  if (static_cast<size_t>(n) != bytes.size()) {
    return absl::InternalError("short send on a SOCK_SEQPACKET socket");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<ReceivedMessage>> AttachSocket::ReceiveOnce(int flags) {
  if (!fd_.valid()) {
    return absl::UnavailableError(absl::StrCat("attach connection to ", path_, " is closed"));
  }
  // One byte more than the limit so that an oversized packet shows as
  // MSG_TRUNC rather than silently fitting.
  auto buffer = std::make_unique<char[]>(kMaxAttachMessageBytes + 1);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  iovec iov{.iov_base = buffer.get(), .iov_len = kMaxAttachMessageBytes + 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(fd_.get(), &msg, flags | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return std::nullopt;
    fd_.Reset();
    return absl::UnavailableError(
        absl::StrCat("attach connection to ", path_, " failed: ", ErrnoText(err)));
  }

  // Take ownership of every fd first, so that each one is closed on any
  // error path below.
  ReceivedMessage out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    if (c->cmsg_len < CMSG_LEN(0)) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      out.fds.emplace_back(fd);
    }
  }
  if (n == 0 && out.fds.empty()) {
    fd_.Reset();
    return absl::UnavailableError(absl::StrCat("shmlaned closed the attach connection at ", path_,
                                               " (the daemon exited or dropped this client)"));
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    return absl::DataLossError(absl::StrCat("attach packet carried more than ", kMaxFdsPerMessage,
                                            " file descriptors; they were truncated"));
  }
  if (msg.msg_flags & MSG_TRUNC) {
    return absl::DataLossError(absl::StrCat("attach packet exceeds the protocol's ",
                                            kMaxAttachMessageBytes, "-byte limit"));
  }
  if (!out.message.ParseFromArray(buffer.get(), static_cast<int>(n))) {
    return absl::DataLossError("malformed attach message from shmlaned (not a v1 AttachMessage)");
  }
  return out;
}

absl::StatusOr<ReceivedMessage> AttachSocket::Receive(absl::Time deadline) {
  for (;;) {
    auto got = ReceiveOnce(MSG_DONTWAIT);
    if (!got.ok()) return got.status();
    if (got->has_value()) return std::move(**got);
    if (!WaitReadable(fd_.get(), deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("no answer from shmlaned at ", path_, " before the deadline"));
    }
  }
}

absl::StatusOr<std::optional<ReceivedMessage>> AttachSocket::TryReceive() {
  return ReceiveOnce(MSG_DONTWAIT);
}

}  // namespace shmlane::client::internal
