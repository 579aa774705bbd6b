#include "control/attach_wire.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

// Linux 6.5+. Debian 12's headers predate it.
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace shmlane::control {

dataplane::UniqueFd ReadPeerPidfd(int socket_fd) {
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  // ENOPROTOOPT before 6.5; ENODATA when the socket has no peer pid; ESRCH
  // when the peer is already gone.
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0 ||
      len != sizeof(pidfd) || pidfd < 0) {
    return dataplane::UniqueFd();
  }
  dataplane::UniqueFd fd(pidfd);
  // The kernel makes it close-on-exec; make sure, it must not leak to children.
  ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  return fd;
}

PacketSendResult SendAttachPacket(int socket_fd, absl::string_view bytes, std::span<const int> fds,
                                  int* error) {
  if (fds.size() > kMaxFdsPerPacket || bytes.size() > kMaxAttachMessageBytes) {
    if (error != nullptr) *error = EMSGSIZE;
    return PacketSendResult::kFailed;
  }
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)];
  if (!fds.empty()) {
    const size_t fd_bytes = sizeof(int) * fds.size();
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(fd_bytes);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(fd_bytes);
    std::memcpy(CMSG_DATA(cmsg), fds.data(), fd_bytes);
  }
  while (true) {
    const ssize_t n = ::sendmsg(socket_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return PacketSendResult::kSent;
    if (errno == EINTR) continue;
    if (error != nullptr) *error = errno;
    switch (errno) {
      case EAGAIN:
        return PacketSendResult::kWouldBlock;
      case ENOBUFS:
      case ETOOMANYREFS:
        return PacketSendResult::kRetryLater;
      default:
        return PacketSendResult::kFailed;
    }
  }
}

absl::Status SendAttachMessage(int socket_fd, const shmlane::v1::AttachMessage& message,
                               std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerPacket) {
    return absl::InternalError(absl::StrCat("attach packet with ", fds.size(), " fds"));
  }
  std::string bytes;
  if (!message.SerializeToString(&bytes) || bytes.size() > kMaxAttachMessageBytes) {
    return absl::InternalError("attach message does not serialize within 64 KiB");
  }
  int error = 0;
  if (SendAttachPacket(socket_fd, bytes, fds, &error) == PacketSendResult::kSent) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(
      absl::StrCat("sending to the attach peer failed: ", std::strerror(error)));
}

absl::StatusOr<ReceivedPacket> ReceiveAttachMessage(int socket_fd, int timeout_ms) {
  pollfd pfd{socket_fd, POLLIN, 0};
  while (true) {
    const int r = ::poll(&pfd, 1, timeout_ms);
    if (r > 0) break;
    if (r == 0) return absl::DeadlineExceededError("no attach message before the deadline");
    if (errno != EINTR) return absl::UnavailableError(std::strerror(errno));
  }
  std::string buffer(kMaxAttachMessageBytes + 1, '\0');
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(socket_fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return absl::UnavailableError(std::strerror(errno));
  ReceivedPacket packet;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      packet.fds.emplace_back(fd);
    }
  }
  if (n == 0) return absl::UnavailableError("the daemon closed the attach connection");
  if ((msg.msg_flags & MSG_TRUNC) != 0 || static_cast<size_t>(n) > kMaxAttachMessageBytes) {
    return absl::DataLossError("attach packet larger than 64 KiB");
  }
  if (!packet.message.ParseFromArray(buffer.data(), static_cast<int>(n))) {
    return absl::DataLossError("attach packet is not an AttachMessage");
  }
  return packet;
}

}  // namespace shmlane::control
