#include "control/control_listener.h"

#include <grpcpp/server_posix.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/peer_credentials.h"
#include "control/runtime_dir.h"

namespace shmlane::control {
namespace {

constexpr uint64_t kListenId = 0;
constexpr uint64_t kWakeId = 1;
constexpr absl::Duration kSweepInterval = absl::Seconds(1);
constexpr absl::Duration kRefusalLogInterval = absl::Seconds(1);

}  // namespace

absl::Status ControlListener::Bind() {
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  wake_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epoll_fd_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!listen_fd_.valid() || !wake_fd_.valid() || !epoll_fd_.valid()) {
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
  for (const auto& [fd, id] :
       {std::pair<int, uint64_t>{listen_fd_.get(), kListenId}, {wake_fd_.get(), kWakeId}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl: ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

void ControlListener::Start(grpc::Server* server) {
  next_sweep_ = absl::Now() + kSweepInterval;
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

bool ControlListener::StillOpen(const Tracked& t) {
  struct stat st {};
  return ::fstat(t.fd, &st) == 0 && st.st_dev == t.dev && st.st_ino == t.ino;
}

void ControlListener::Forget(uint64_t id) {
  auto it = tracked_.find(id);
  if (it == tracked_.end()) return;
  // Only this thread adds to the epoll set, so if the number still names our
  // socket, the registration is ours; if not, the kernel already dropped it.
  if (StillOpen(it->second))
    (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
  auto count = per_uid_.find(it->second.uid);
  if (count != per_uid_.end() && --count->second == 0) per_uid_.erase(count);
  tracked_.erase(it);
}

void ControlListener::Sweep(bool all, uint32_t uid) {
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    const uint64_t id = it->first;
    const bool check = all || it->second.uid == uid;
    const bool gone = check && !StillOpen(it->second);
    ++it;
    if (gone) Forget(id);
  }
}

void ControlListener::Refuse(uint32_t uid, int32_t pid) {
  if (options_.metrics != nullptr) options_.metrics->CountControlConnectionRefused();
  const absl::Time now = absl::Now();
  if (now - last_refusal_log_ < kRefusalLogInterval) {
    ++refusals_unlogged_;
    return;
  }
  std::fprintf(stderr,
               "shmlaned: refused a control.sock connection from uid %u (pid %d): it holds %zu, "
               "--max-control-connections-per-uid (%llu more refused since the last message)\n",
               uid, pid, options_.max_connections_per_uid,
               static_cast<unsigned long long>(refusals_unlogged_));
  last_refusal_log_ = now;
  refusals_unlogged_ = 0;
}

void ControlListener::AcceptAll(grpc::Server* server) {
  for (int accepted = 0; accepted < 64; ++accepted) {
    // gRPC's endpoint expects a non-blocking socket.
    dataplane::UniqueFd fd(
        ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) return;  // EAGAIN, or EMFILE: gRPC connections close and the next turn retries
    absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(fd.get());
    if (!peer.ok()) continue;  // no identity, no call: closed
    const bool capped = peer->uid != 0 && peer->uid != options_.daemon_uid;
    if (capped) {
      auto count = per_uid_.find(peer->uid);
      if (count != per_uid_.end() && count->second >= options_.max_connections_per_uid) {
        Sweep(/*all=*/false, peer->uid);
        count = per_uid_.find(peer->uid);
      }
      if (count != per_uid_.end() && count->second >= options_.max_connections_per_uid) {
        Refuse(peer->uid, peer->pid);
        continue;  // closed at once
      }
      Tracked t;
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) continue;
      t.fd = fd.get();
      t.dev = st.st_dev;
      t.ino = st.st_ino;
      t.uid = peer->uid;
      const uint64_t id = next_id_++;
      epoll_event ev{};
      ev.events = EPOLLRDHUP;  // EPOLLHUP and EPOLLERR come anyway
      ev.data.u64 = id;
      // Without a watch it could not be counted down: fail closed.
      if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) continue;
      tracked_.emplace(id, t);
      ++per_uid_[peer->uid];
    }
    callers_->Set(fd.get(), *peer);
    // gRPC owns the fd from here and closes it when the connection ends;
    // its number is only reused by a later accept, which Set()s it again.
    grpc::AddInsecureChannelFromFd(server, fd.Release());
  }
}

void ControlListener::Loop(grpc::Server* server) {
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  while (!stopping_.load(std::memory_order_acquire)) {
    const int timeout_ms = static_cast<int>(
        absl::ToInt64Milliseconds(std::max(absl::ZeroDuration(), next_sweep_ - absl::Now())) + 1);
    const int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, timeout_ms);
    if (n < 0 && errno != EINTR) {
      std::fprintf(stderr, "shmlaned: control socket epoll_wait: %s\n", std::strerror(errno));
      return;
    }
    bool accept = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == kListenId) {
        accept = true;
      } else if (id == kWakeId) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_.get(), &count, sizeof(count));
      } else {
        Forget(id);  // hung up or shut down: the connection is ending
      }
    }
    // Hang-ups first, so a uid that just closed one may open another.
    if (accept) AcceptAll(server);
    if (absl::Now() >= next_sweep_) {
      Sweep(/*all=*/true, 0);
      next_sweep_ = absl::Now() + kSweepInterval;
    }
  }
}

}  // namespace shmlane::control
