#include "control/attach_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/attach_wire.h"
#include "control/status.h"

namespace shmlane::control {
namespace {

// Receives one packet without blocking into `buffer`; with MSG_TRUNC the
// result is the packet's real size even when it did not fit. Clients never
// send fds, so any that came along are closed; *had_fds says whether there
// were some (or whether they were cut off). -1 with errno on failure.
ssize_t ReceiveClosingFds(int fd, std::string& buffer, bool* had_fds) {
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
  if (n < 0) return n;
  *had_fds = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < count; ++k) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
      ::close(received);
      *had_fds = true;
    }
  }
  return n;
}

namespace v1 = ::shmlane::v1;

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Reads SO_PEERCRED and SO_PEERGROUPS: the identity the kernel recorded when
// the client connected (it cannot be forged by the client).
absl::StatusOr<PeerCredentials> ReadPeer(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Errno("SO_PEERCRED");
  }
  PeerCredentials peer;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  peer.pid = cred.pid;
  std::vector<gid_t> groups(64);
  auto glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) != 0 && errno == ERANGE &&
      glen <= 65536 * sizeof(gid_t)) {
    groups.resize(glen / sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) != 0) glen = 0;
  }
  groups.resize(glen / sizeof(gid_t));
  peer.groups.assign(groups.begin(), groups.end());
  return peer;
}

std::string ResultLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace

AttachServer::AttachServer(AttachServerOptions options, Registry* registry, DaemonMetrics* metrics)
    : options_(std::move(options)),
      registry_(registry),
      metrics_(metrics),
      receive_buffer_(kMaxAttachMessageBytes, '\0') {}

AttachServer::~AttachServer() { Stop(); }

absl::Status AttachServer::Start() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options_.socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("attach socket path ", options_.socket_path,
                                                   " is longer than ", sizeof(addr.sun_path) - 1,
                                                   " bytes; use a shorter --runtime-dir"));
  }
  std::memcpy(addr.sun_path, options_.socket_path.c_str(), options_.socket_path.size() + 1);
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) return Errno("socket(AF_UNIX, SOCK_SEQPACKET)");
  if (::bind(listen_fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno(absl::StrCat("bind ", options_.socket_path));
  }
  if (options_.socket_gid >= 0 && ::chown(options_.socket_path.c_str(), static_cast<uid_t>(-1),
                                          static_cast<gid_t>(options_.socket_gid)) != 0) {
    return Errno(absl::StrCat("chown ", options_.socket_path));
  }
  if (::chmod(options_.socket_path.c_str(), options_.socket_mode) != 0) {
    return Errno(absl::StrCat("chmod ", options_.socket_path));
  }
  if (::listen(listen_fd_.get(), 4096) != 0) return Errno("listen");
  epoll_fd_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_.valid()) return Errno("epoll_create1");
  wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_.valid()) return Errno("eventfd");
  spare_fd_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  for (int fd : {listen_fd_.get(), wake_fd_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return Errno("epoll_ctl");
  }
  next_backpressure_check_ = absl::Now() + options_.backpressure_check_interval;
  registry_->SetOutboundWaker(this);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void AttachServer::Stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  thread_.join();
}

void AttachServer::WatchWritable(int socket_fd, bool watch) {
  epoll_event ev{};
  // While stopping nothing is read any more (DrainOutbound), and an unread
  // EPOLLIN would make every epoll_wait return at once.
  ev.events = (stopping_.load(std::memory_order_acquire) ? 0u : uint32_t{EPOLLIN | EPOLLRDHUP}) |
              (watch ? uint32_t{EPOLLOUT} : 0u);
  ev.data.fd = socket_fd;
  // ENOENT only during shutdown, after DrainOutbound dropped a dead peer.
  (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, socket_fd, &ev);
}

void AttachServer::WakeAt(absl::Time when) {
  const int64_t ns = absl::ToUnixNanos(when);
  int64_t due = outbound_due_ns_.load(std::memory_order_acquire);
  while (ns < due) {
    if (outbound_due_ns_.compare_exchange_weak(due, ns, std::memory_order_acq_rel)) {
      // The loop may be asleep with a later timeout (or called from another
      // thread): make it recompute.
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
      return;
    }
  }
}

void AttachServer::ServiceOutboundIfDue() {
  const int64_t due = outbound_due_ns_.load(std::memory_order_acquire);
  if (due == INT64_MAX || absl::FromUnixNanos(due) > absl::Now()) return;
  // Cleared before the call, so a WakeAt made during it is kept.
  outbound_due_ns_.store(INT64_MAX, std::memory_order_release);
  registry_->ServiceOutbound();
}

int AttachServer::NextTimeoutMs() const {
  absl::Time next = next_backpressure_check_;
  if (!handshake_deadlines_.empty()) next = std::min(next, handshake_deadlines_.begin()->first);
  const int64_t due = outbound_due_ns_.load(std::memory_order_acquire);
  if (due != INT64_MAX) next = std::min(next, absl::FromUnixNanos(due));
  const absl::Duration left = next - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  // Round up so that the deadline has passed when epoll_wait returns.
  return static_cast<int>(
      absl::ToInt64Milliseconds(left + absl::Milliseconds(1) - absl::Nanoseconds(1)));
}

void AttachServer::Loop() {
  constexpr int kMaxEvents = 128;
  epoll_event events[kMaxEvents];
  while (!stopping_.load(std::memory_order_acquire)) {
    const int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, NextTimeoutMs());
    if (n < 0 && errno != EINTR) {
      std::fprintf(stderr, "shmlaned: epoll_wait: %s\n", std::strerror(errno));
      break;
    }
    // Connections first, then new ones: reaping hang-ups before accepting
    // frees fds, so a burst of dead connections cannot starve live ones.
    bool accept = false;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      const uint32_t what = events[i].events;
      if (fd == wake_fd_.get()) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = ::read(fd, &count, sizeof(count));  // EAGAIN is fine
        continue;
      }
      if (fd == listen_fd_.get()) {
        accept = true;
        continue;
      }
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;
      // Flush before reading: a read may end the attachment and close the fd.
      if ((what & EPOLLOUT) != 0 && it->second.attachment_id != 0) {
        registry_->FlushOutbound(it->second.attachment_id);
      }
      if ((what & ~uint32_t{EPOLLOUT}) != 0) OnReadable(fd);
    }
    if (accept) AcceptAll();
    ExpireHandshakes();
    ServiceOutboundIfDue();
    if (absl::Now() >= next_backpressure_check_) {
      registry_->CheckBackpressure();
      next_backpressure_check_ = absl::Now() + options_.backpressure_check_interval;
    }
  }
  // Shutdown: stop accepting, say Goodbye (while every fd is still open),
  // then close everything.
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listen_fd_.get(), nullptr);
  listen_fd_.Reset();
  ::unlink(options_.socket_path.c_str());
  registry_->GoodbyeAll("shmlaned is shutting down");
  DrainOutbound();
  // Whatever is still queued is dropped and those sockets are shut down.
  registry_->SetOutboundWaker(nullptr);
  connections_.clear();
  handshake_deadlines_.clear();
}

void AttachServer::DrainOutbound() {
  const absl::Time deadline = absl::Now() + kShutdownFlushTimeout;
  constexpr int kMaxEvents = 128;
  epoll_event events[kMaxEvents];
  while (registry_->HasOutbound() && absl::Now() < deadline) {
    // Only the deadline and the registry's retries matter now: handshake and
    // backpressure timers are no longer served and may lie in the past.
    absl::Time wake = deadline;
    const int64_t due = outbound_due_ns_.load(std::memory_order_acquire);
    if (due != INT64_MAX) wake = std::min(wake, absl::FromUnixNanos(due));
    const int timeout_ms = static_cast<int>(
        std::max<int64_t>(0, absl::ToInt64Milliseconds(wake - absl::Now() + absl::Milliseconds(1) -
                                                       absl::Nanoseconds(1))));
    const int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, timeout_ms);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      const uint32_t what = events[i].events;
      if (fd == wake_fd_.get()) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = ::read(fd, &count, sizeof(count));
        continue;
      }
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;
      const uint64_t id = it->second.attachment_id;
      if ((what & EPOLLOUT) != 0 && id != 0) registry_->FlushOutbound(id);
      if ((what & EPOLLIN) != 0) DiscardInput(fd);
      if ((what & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0) {
        // Gone, or shut down by the registry once its Goodbye was through:
        // a last flush attempt drops a dead peer's queue (EPIPE), and the fd
        // leaves the set so that its hang-up does not spin the wait.
        if (id != 0) registry_->FlushOutbound(id);
        ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
      }
    }
    ServiceOutboundIfDue();
  }
}

void AttachServer::DiscardInput(int fd) {
  for (int packets = 0; packets < 16; ++packets) {
    bool had_fds = false;
    const ssize_t n = ReceiveClosingFds(fd, receive_buffer_, &had_fds);
    if (n < 0) return;
    if (n == 0) {
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
      return;
    }
  }
}

void AttachServer::AcceptAll() {
  // Bounded per wake-up (the listening socket is level-triggered: the rest
  // come at the next turn, after the loop has reaped hang-ups).
  for (int accepted = 0; accepted < 64; ++accepted) {
    dataplane::UniqueFd fd(
        ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd_.valid()) {
        // Out of fds: free the spare, take the connection and drop it at
        // once, so that the client sees a hang-up instead of hanging in the
        // backlog, then re-arm the spare.
        spare_fd_.Reset();
        dataplane::UniqueFd shed(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        shed.Reset();
        spare_fd_.Reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        metrics_->CountAttach("overload");
        continue;
      }
      return;  // EAGAIN, or an error that the next turn retries
    }
    if (connections_.size() >= options_.max_connections) {
      metrics_->CountAttach("overload");
      continue;  // closed by UniqueFd
    }
    absl::StatusOr<PeerCredentials> peer = ReadPeer(fd.get());
    if (!peer.ok()) continue;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd.get();
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) continue;
    const int raw = fd.get();
    Connection conn;
    conn.fd = std::move(fd);
    conn.peer = *std::move(peer);
    conn.deadline = absl::Now() + options_.handshake_timeout;
    handshake_deadlines_.emplace(conn.deadline, raw);
    connections_.emplace(raw, std::move(conn));
  }
}

void AttachServer::OnReadable(int fd) {
  // Bounded work per wake-up so one chatty client cannot starve the others.
  for (int packets = 0; packets < 16; ++packets) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    Connection& conn = it->second;
    std::string& buffer = receive_buffer_;
    bool had_fds = false;
    const ssize_t n = ReceiveClosingFds(fd, buffer, &had_fds);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      Close(fd, Registry::DetachKind::kDied);
      return;
    }
    if (n == 0) {
      Close(fd, Registry::DetachKind::kDied);
      return;
    }
    if (static_cast<size_t>(n) > kMaxAttachMessageBytes) {
      Reject(fd, absl::InvalidArgumentError(absl::StrCat("attach packet of ", n,
                                                         " bytes exceeds the limit of ",
                                                         kMaxAttachMessageBytes, " bytes")));
      return;
    }
    if (had_fds) {
      Reject(fd, absl::InvalidArgumentError("clients must not send file descriptors"));
      return;
    }
    v1::AttachMessage message;
    if (!message.ParseFromArray(buffer.data(), static_cast<int>(n))) {
      Reject(fd, absl::InvalidArgumentError(
                     "attach packet is not a serialized shmlane.v1.AttachMessage; "
                     "is the client speaking the attach protocol?"));
      return;
    }
    if (conn.attachment_id == 0) {
      if (message.body_case() != v1::AttachMessage::kAttachRequest) {
        Reject(fd, absl::InvalidArgumentError("the first attach message must be an AttachRequest"));
        return;
      }
      absl::StatusOr<uint64_t> id = registry_->Attach(fd, conn.peer, message.attach_request());
      metrics_->ObserveAttachHandshake(id.ok() ? "ok" : ResultLabel(id.status().code()),
                                       absl::Now() - (conn.deadline - options_.handshake_timeout));
      if (!id.ok()) {
        Reject(fd, id.status());
        return;
      }
      handshake_deadlines_.erase({conn.deadline, fd});
      conn.attachment_id = *id;
      continue;
    }
    if (message.body_case() == v1::AttachMessage::kDetach) {
      Close(fd, Registry::DetachKind::kClean);
    } else {
      Close(fd, Registry::DetachKind::kProtocolError);
    }
    return;
  }
}

void AttachServer::Reject(int fd, const absl::Status& status) {
  metrics_->CountAttach(ResultLabel(status.code()));
  v1::AttachMessage reply;
  reply.mutable_attach_reply()->set_code(static_cast<int32_t>(status.code()));
  reply.mutable_attach_reply()->set_message(std::string(status.message()));
  // Best effort: a client that is gone or not reading just misses it.
  (void)SendAttachMessage(fd, reply, {});
  Close(fd, Registry::DetachKind::kProtocolError);
}

void AttachServer::Close(int fd, Registry::DetachKind kind) {
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  if (it->second.attachment_id != 0) {
    // Detach before the fd closes: the registry may send on it until then.
    registry_->Detach(it->second.attachment_id, kind);
  } else {
    handshake_deadlines_.erase({it->second.deadline, fd});
  }
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  connections_.erase(it);
}

void AttachServer::ExpireHandshakes() {
  const absl::Time now = absl::Now();
  while (!handshake_deadlines_.empty() && handshake_deadlines_.begin()->first <= now) {
    const int fd = handshake_deadlines_.begin()->second;
    handshake_deadlines_.erase(handshake_deadlines_.begin());
    metrics_->CountAttach("timeout");
    v1::AttachMessage reply;
    reply.mutable_attach_reply()->set_code(
        static_cast<int32_t>(absl::StatusCode::kDeadlineExceeded));
    reply.mutable_attach_reply()->set_message(
        "no AttachRequest within the handshake timeout; connection closed");
    (void)SendAttachMessage(fd, reply, {});
    auto it = connections_.find(fd);
    if (it != connections_.end()) {
      ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
      connections_.erase(it);
    }
  }
}

}  // namespace shmlane::control
