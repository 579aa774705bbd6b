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
#include "control/peer_credentials.h"
#include "control/runtime_dir.h"
#include "control/status.h"

namespace shmlane::control {
namespace {

// Linux 6.16+: SO_PASSRIGHTS = 0 makes the kernel refuse SCM_RIGHTS sent to
// this socket (the sender gets EPERM). Debian 12's headers predate it.
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

void RefuseFds(int fd) {
  const int off = 0;
  // Older kernels say ENOPROTOOPT; FdCloser then keeps received fds off the loop.
  (void)::setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &off, sizeof(off));
}

namespace v1 = ::shmlane::v1;

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

std::string ResultLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

// Most lanes one ResumeLanes packet may carry: three fds each, within
// kMaxFdsPerPacket.
constexpr int kMaxResumeLanesPerPacket = 21;

// What a received fd is, from its /proc/self/fd link, before the daemon
// keeps it: a memfd and an eventfd never block on close, unlike a FUSE file
// or a lingering socket a hostile client could send instead.
bool FdLinkStartsWith(int fd, absl::string_view prefix) {
  char link[128] = {};
  const std::string path = absl::StrCat("/proc/self/fd/", fd);
  const ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
  return n > 0 &&
         absl::string_view(link, static_cast<size_t>(n)).substr(0, prefix.size()) == prefix;
}

// A close-on-exec copy of fds[index] when it is of the expected kind; an
// invalid fd otherwise (the lane is then refused with a clear message).
dataplane::UniqueFd TakeCopy(const std::vector<dataplane::UniqueFd>& fds, uint32_t index,
                             absl::string_view kind) {
  if (index >= fds.size() || !FdLinkStartsWith(fds[index].get(), kind))
    return dataplane::UniqueFd();
  return dataplane::UniqueFd(::fcntl(fds[index].get(), F_DUPFD_CLOEXEC, 0));
}

void AllowFds(int fd) {
  const int on = 1;
  // ENOPROTOOPT before Linux 6.16: fds pass anyway.
  (void)::setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &on, sizeof(on));
}

}  // namespace

AttachServer::AttachServer(AttachServerOptions options, Registry* registry, DaemonMetrics* metrics)
    : options_(std::move(options)),
      registry_(registry),
      metrics_(metrics),
      receive_buffer_(kMaxAttachMessageBytes, '\0') {}

AttachServer::~AttachServer() { Stop(); }

absl::Status AttachServer::Start() {
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) return Errno("socket(AF_UNIX, SOCK_SEQPACKET)");
  if (absl::Status s =
          BindUnixSocketAt(listen_fd_.get(), options_.dir_fd, options_.socket_name,
                           options_.socket_mode, options_.socket_gid, options_.socket_path);
      !s.ok()) {
    return s;
  }
  RefuseFds(listen_fd_.get());
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
  resume_deadline_ = registry_->resume_deadline();
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
  absl::Time next = std::min(next_backpressure_check_, resume_deadline_);
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
    if (absl::Now() >= resume_deadline_) {
      registry_->RetireUnclaimed(absl::Now());
      resume_deadline_ = registry_->resume_deadline();
    }
    if (absl::Now() >= next_backpressure_check_) {
      registry_->CheckBackpressure();
      next_backpressure_check_ = absl::Now() + options_.backpressure_check_interval;
    }
  }
  // Shutdown: stop accepting, say Goodbye (while every fd is still open),
  // then close everything.
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listen_fd_.get(), nullptr);
  listen_fd_.Reset();
  ::unlinkat(options_.dir_fd, options_.socket_name.c_str(), 0);
  if (options_.end_attachments_on_stop) {
    registry_->GoodbyeAll("shmlaned is shutting down");
    DrainOutbound();
  }
  // Whatever is still queued is dropped and those sockets are shut down.
  registry_->SetOutboundWaker(nullptr);
  connections_.clear();
  handshake_deadlines_.clear();
  per_uid_.clear();
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

ssize_t AttachServer::Receive(int fd, bool* had_fds, std::vector<dataplane::UniqueFd>* keep,
                              bool* truncated) {
  std::string& buffer = receive_buffer_;
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  // MSG_TRUNC: the result is the packet's real size even when it did not fit.
  const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
  if (n < 0) return n;
  *had_fds = (msg.msg_flags & MSG_CTRUNC) != 0;
  if (truncated != nullptr) *truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < count; ++k) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
      // Never close() a client's fd here: it may block (SO_LINGER, FUSE).
      if (keep != nullptr) {
        keep->emplace_back(received);
      } else {
        closer_.Close(received);
      }
      *had_fds = true;
    }
  }
  return n;
}

void AttachServer::DiscardInput(int fd) {
  for (int packets = 0; packets < 16; ++packets) {
    bool had_fds = false;
    const ssize_t n = Receive(fd, &had_fds);
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
    RefuseFds(fd.get());
    absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(fd.get());
    if (!peer.ok()) {
      v1::AttachMessage reply;
      reply.mutable_attach_reply()->set_code(static_cast<int32_t>(peer.status().code()));
      reply.mutable_attach_reply()->set_message(std::string(peer.status().message()));
      (void)SendAttachMessage(fd.get(), reply, {});
      metrics_->CountAttach(ResultLabel(peer.status().code()));
      continue;  // closed by UniqueFd
    }
    if (!AdmitLocked(peer->uid)) {
      metrics_->CountAttach("overload");
      v1::AttachMessage reply;
      reply.mutable_attach_reply()->set_code(
          static_cast<int32_t>(absl::StatusCode::kResourceExhausted));
      reply.mutable_attach_reply()->set_message(absl::StrCat(
          "shmlaned holds as many attach connections of uid ", peer->uid,
          " as it allows (--max-connections-per-uid, --max-handshakes-per-uid) or is full "
          "(--max-connections); close some and retry"));
      (void)SendAttachMessage(fd.get(), reply, {});
      continue;
    }
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
    UidCount& count = per_uid_[conn.peer.uid];
    ++count.open;
    ++count.handshaking;
    connections_.emplace(raw, std::move(conn));
  }
}

bool AttachServer::AdmitLocked(uint32_t uid) {
  const UidCount mine = per_uid_.count(uid) ? per_uid_[uid] : UidCount{};
  // Root and the daemon's own uid could stop the daemon anyway: the per-uid
  // shares protect users from each other.
  const bool trusted = uid == 0 || uid == ::geteuid();
  if (!trusted && (mine.open >= options_.max_connections_per_uid ||
                   mine.handshaking >= options_.max_handshakes_per_uid)) {
    return false;
  }
  if (connections_.size() < options_.max_connections) return true;
  // Full: a uid below its fair share displaces the oldest handshaking
  // connection of the uid that holds the most (attached ones stay).
  const size_t uids = per_uid_.size() + (per_uid_.count(uid) ? 0 : 1);
  const size_t fair = options_.max_connections / std::max<size_t>(uids, 1);
  if (mine.open >= fair) return false;
  uint32_t biggest = uid;
  size_t most = 0;
  for (const auto& [u, c] : per_uid_) {
    if (c.handshaking > 0 && c.open > most) {
      biggest = u;
      most = c.open;
    }
  }
  if (biggest == uid || most <= fair) return false;
  for (const auto& [deadline, fd] : handshake_deadlines_) {
    auto it = connections_.find(fd);
    if (it != connections_.end() && it->second.peer.uid == biggest) {
      metrics_->CountAttach("displaced");
      Forget(it);
      return true;
    }
  }
  return false;
}

void AttachServer::Forget(std::map<int, Connection>::iterator it) {
  Connection& conn = it->second;
  auto count = per_uid_.find(conn.peer.uid);
  if (count != per_uid_.end()) {
    count->second.open -= std::min<size_t>(count->second.open, 1);
    if (conn.attachment_id == 0) {
      count->second.handshaking -= std::min<size_t>(count->second.handshaking, 1);
    }
    if (count->second.open == 0) per_uid_.erase(count);
  }
  if (conn.attachment_id == 0) handshake_deadlines_.erase({conn.deadline, it->first});
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, it->first, nullptr);
  connections_.erase(it);
}

void AttachServer::OnReadable(int fd) {
  // Bounded work per wake-up so one chatty client cannot starve the others.
  for (int packets = 0; packets < 16; ++packets) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    Connection& conn = it->second;
    std::string& buffer = receive_buffer_;
    bool had_fds = false;
    bool truncated = false;
    const bool resuming = conn.resume != nullptr;
    std::vector<dataplane::UniqueFd> fds;
    const ssize_t n = Receive(fd, &had_fds, resuming ? &fds : nullptr, &truncated);
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
    if (resuming && truncated) {
      for (dataplane::UniqueFd& f : fds) closer_.Close(f.Release());
      RejectResume(fd, absl::InvalidArgumentError(absl::StrCat(
                           "a ResumeLanes packet may carry at most ", kMaxFdsPerPacket, " fds")));
      return;
    }
    if (had_fds && !resuming) {
      Reject(fd, absl::InvalidArgumentError("clients must not send file descriptors"));
      return;
    }
    v1::AttachMessage message;
    if (!message.ParseFromArray(buffer.data(), static_cast<int>(n))) {
      for (dataplane::UniqueFd& f : fds) closer_.Close(f.Release());
      Reject(fd, absl::InvalidArgumentError(
                     "attach packet is not a serialized shmlane.v1.AttachMessage; "
                     "is the client speaking the attach protocol?"));
      return;
    }
    if (resuming) {
      if (!OnResumeLanes(fd, conn, message, std::move(fds))) return;
      continue;
    }
    if (conn.attachment_id == 0 && message.body_case() == v1::AttachMessage::kResume) {
      if (!OnResume(fd, conn, message.resume())) return;
      continue;
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
      if (auto count = per_uid_.find(conn.peer.uid); count != per_uid_.end()) {
        count->second.handshaking -= std::min<size_t>(count->second.handshaking, 1);
      }
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

bool AttachServer::OnResume(int fd, Connection& conn, const v1::Resume& resume) {
  if (absl::Status s = registry_->CheckResume(conn.peer, resume); !s.ok()) {
    RejectResume(fd, s);
    return false;
  }
  conn.resume = std::make_unique<v1::Resume>(resume);
  if (resume.lanes() == 0) return OnResumeLanes(fd, conn, v1::AttachMessage(), {});
  // Only now, for this connection, may fds come in: the lanes.
  AllowFds(fd);
  v1::AttachMessage ready;
  ready.mutable_resume_reply()->set_ready(true);
  if (!SendAttachMessage(fd, ready, {}).ok()) {
    Close(fd, Registry::DetachKind::kDied);
    return false;
  }
  return true;
}

bool AttachServer::OnResumeLanes(int fd, Connection& conn, const v1::AttachMessage& message,
                                 std::vector<dataplane::UniqueFd> fds) {
  const uint32_t expected = conn.resume->lanes();
  if (expected > 0) {
    const auto& lanes = message.resume_lanes().lanes();
    if (message.body_case() != v1::AttachMessage::kResumeLanes || lanes.empty() ||
        lanes.size() > kMaxResumeLanesPerPacket ||
        conn.resumed.size() + static_cast<size_t>(lanes.size()) > expected) {
      for (dataplane::UniqueFd& f : fds) closer_.Close(f.Release());
      RejectResume(fd, absl::InvalidArgumentError(absl::StrCat(
                           "after ResumeReply.ready send the ", expected,
                           " announced lanes in ResumeLanes packets of 1 to ",
                           kMaxResumeLanesPerPacket, " lanes each, and nothing else")));
      return false;
    }
    for (const v1::ResumedLane& lane : lanes) {
      ResumedLaneFds in;
      in.lane = lane;
      in.segment = TakeCopy(fds, lane.segment_fd_index(), "/memfd:");
      in.producer_bell = TakeCopy(fds, lane.producer_doorbell_fd_index(), "anon_inode:[eventfd]");
      in.consumer_bell = TakeCopy(fds, lane.consumer_doorbell_fd_index(), "anon_inode:[eventfd]");
      conn.resumed.push_back(std::move(in));
    }
    for (dataplane::UniqueFd& f : fds) closer_.Close(f.Release());
    if (conn.resumed.size() < expected) return true;
  }
  absl::StatusOr<uint64_t> id =
      registry_->FinishResume(fd, conn.peer, *conn.resume, std::move(conn.resumed));
  conn.resumed.clear();
  conn.resume.reset();
  metrics_->ObserveAttachHandshake(id.ok() ? "resumed" : ResultLabel(id.status().code()),
                                   absl::Now() - (conn.deadline - options_.handshake_timeout));
  if (!id.ok()) {
    RejectResume(fd, id.status());
    return false;
  }
  RefuseFds(fd);
  handshake_deadlines_.erase({conn.deadline, fd});
  conn.attachment_id = *id;
  if (auto count = per_uid_.find(conn.peer.uid); count != per_uid_.end()) {
    count->second.handshaking -= std::min<size_t>(count->second.handshaking, 1);
  }
  return true;
}

void AttachServer::RejectResume(int fd, const absl::Status& status) {
  metrics_->CountAttach(absl::StrCat("resume_", ResultLabel(status.code())));
  v1::AttachMessage reply;
  reply.mutable_resume_reply()->set_code(static_cast<int32_t>(status.code()));
  reply.mutable_resume_reply()->set_message(std::string(status.message()));
  (void)SendAttachMessage(fd, reply, {});
  Close(fd, Registry::DetachKind::kProtocolError);
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
  }
  Forget(it);
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
    if (it != connections_.end()) Forget(it);
  }
}

}  // namespace shmlane::control
