#include "control/metrics_unix_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "prometheus/text_serializer.h"

namespace shmlane::control {
namespace {

int MillisUntil(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
}

// Sends all of `bytes` before `deadline`; false if the peer is slow or gone.
bool SendAll(int fd, absl::string_view bytes, absl::Time deadline) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return false;
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, MillisUntil(deadline)) != 1) return false;
  }
  return true;
}

std::string Response(absl::string_view status, absl::string_view content_type,
                     absl::string_view body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

absl::Status MetricsUnixServer::Start() {
  if (options_.path.empty() || options_.path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen unix:", options_.path,
                                                   ": the socket path must be absolute"));
  }
  absl::StatusOr<FileInDir> where =
      LocateFile(options_.runtime_dir_fd, options_.runtime_dir, options_.path);
  if (!where.ok()) return where.status();
  socket_ = *std::move(where);
  if (absl::Status s = RemoveStaleSocket(socket_.dir_fd, socket_.name, options_.path); !s.ok()) {
    return s;
  }
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!listen_fd_.valid() || !wake_fd_.valid()) {
    return absl::InternalError(absl::StrCat("metrics socket: ", std::strerror(errno)));
  }
  if (absl::Status s = BindUnixSocketAt(listen_fd_.get(), socket_.dir_fd, socket_.name,
                                        options_.mode, options_.gid, options_.path);
      !s.ok()) {
    return s;
  }
  if (::listen(listen_fd_.get(), 64) != 0) {
    return absl::InternalError(absl::StrCat("listen: ", std::strerror(errno)));
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void MetricsUnixServer::Stop() {
  if (thread_.joinable()) {
    stopping_.store(true, std::memory_order_release);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_.valid()) {
    listen_fd_.Reset();
    ::unlinkat(socket_.dir_fd, socket_.name.c_str(), 0);
  }
}

void MetricsUnixServer::Loop() {
  while (!stopping_.load(std::memory_order_acquire)) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    dataplane::UniqueFd fd(
        ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd.valid()) Serve(fd.get());
  }
}

void MetricsUnixServer::Serve(int fd) {
  const absl::Time deadline = absl::Now() + kMetricsConnectionTimeout;
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos) {
    if (request.size() > kMaxMetricsRequestBytes) {
      SendAll(fd, Response("431 Request Header Fields Too Large", "text/plain", "too large\n"),
              deadline);
      return;
    }
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, MillisUntil(deadline)) != 1) return;  // too slow: closed
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  const std::string line = request.substr(0, request.find("\r\n"));
  std::vector<std::string> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3 || !absl::StartsWith(parts[2], "HTTP/1.")) {
    SendAll(fd, Response("400 Bad Request", "text/plain", "expected GET /metrics HTTP/1.1\n"),
            deadline);
    return;
  }
  if (parts[0] != "GET") {
    SendAll(fd, Response("405 Method Not Allowed", "text/plain", "only GET\n"), deadline);
    return;
  }
  const std::string path = parts[1].substr(0, parts[1].find('?'));
  if (path != "/metrics") {
    SendAll(fd, Response("404 Not Found", "text/plain", "see /metrics\n"), deadline);
    return;
  }
  std::ostringstream body;
  prometheus::TextSerializer().Serialize(body, collectable_->Collect());
  SendAll(fd, Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body.str()), deadline);
}

}  // namespace shmlane::control
