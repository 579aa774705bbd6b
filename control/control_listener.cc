#include "control/control_listener.h"

#include <grpcpp/server_posix.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "control/peer_credentials.h"
#include "control/runtime_dir.h"

namespace shmlane::control {

absl::Status ControlListener::Bind() {
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!listen_fd_.valid() || !wake_fd_.valid()) {
    return absl::InternalError(absl::StrCat("control socket: ", std::strerror(errno)));
  }
  if (absl::Status s =
          BindUnixSocketAt(listen_fd_.get(), options_.dir_fd, options_.socket_name,
                           options_.socket_mode, options_.socket_gid, options_.socket_path);
      !s.ok()) {
    return s;
  }
  if (::listen(listen_fd_.get(), 1024) != 0) {
    return absl::InternalError(absl::StrCat("listen: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void ControlListener::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] { Loop(server); });
}

void ControlListener::Stop() {
  if (thread_.joinable()) {
    stopping_.store(true, std::memory_order_release);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_.valid()) {
    listen_fd_.Reset();
    ::unlinkat(options_.dir_fd, options_.socket_name.c_str(), 0);
  }
}

void ControlListener::Loop(grpc::Server* server) {
  while (!stopping_.load(std::memory_order_acquire)) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      std::fprintf(stderr, "shmlaned: control socket poll: %s\n", std::strerror(errno));
      return;
    }
    for (int accepted = 0; accepted < 64; ++accepted) {
      // gRPC's endpoint expects a non-blocking socket.
      dataplane::UniqueFd fd(
          ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd.valid())
        break;  // EAGAIN, or EMFILE: gRPC connections close and the next turn retries
      absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(fd.get());
      if (!peer.ok()) continue;  // no identity, no call: closed
      callers_->Set(fd.get(), *peer);
      // gRPC owns the fd from here and closes it when the connection ends;
      // its number is only reused by a later accept, which Set()s it again.
      grpc::AddInsecureChannelFromFd(server, fd.Release());
    }
  }
}

}  // namespace shmlane::control
