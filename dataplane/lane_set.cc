#include "dataplane/lane_set.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "dataplane/wait_strategy.h"

namespace shmlane::dataplane {

LaneSet::LaneSet(std::shared_ptr<const Doorbell> doorbell, size_t per_lane_batch, WaitOptions wait)
    : doorbell_(std::move(doorbell)),
      per_lane_batch_(std::max<size_t>(per_lane_batch, 1)),
      waiter_(wait) {}

LaneSet::LaneSet(size_t per_lane_batch, WaitOptions wait)
    : LaneSet(nullptr, per_lane_batch, wait) {}

bool LaneSet::IsShared(const Consumer& c) const {
  const std::shared_ptr<const Doorbell>& own = c.own_bell();
  return doorbell_ != nullptr && (own == doorbell_ || own->fd() == doorbell_->fd());
}

absl::Status LaneSet::Register(int fd) {
  if (int& uses = registered_[fd]; uses > 0) {
    ++uses;
    return absl::OkStatus();
  }
  if (!epoll_fd_.valid()) {
    epoll_fd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd_.valid()) {
      registered_.erase(fd);
      return absl::ResourceExhaustedError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
    }
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: a bell rung while we were awake wakes the next park
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    registered_.erase(fd);
    return absl::ResourceExhaustedError(absl::StrCat("registering lane doorbell fd ", fd,
                                                     " with epoll: ", std::strerror(errno),
                                                     " (see fs.epoll.max_user_watches)"));
  }
  registered_[fd] = 1;
  return absl::OkStatus();
}

void LaneSet::Unregister(int fd) {
  if (fd < 0) return;
  auto it = registered_.find(fd);
  if (it == registered_.end()) return;
  if (--it->second > 0) return;
  registered_.erase(it);
  (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

absl::Status LaneSet::AddLane(uint64_t id, Consumer consumer) {
  int fd = -1;
  if (!IsShared(consumer)) {
    fd = consumer.own_bell()->fd();
    if (absl::Status s = Register(fd); !s.ok()) return s;
  }
  (in_pass_ ? pending_ : lanes_).push_back(Entry{id, std::move(consumer), fd});
  ++live_;
  return absl::OkStatus();
}

void LaneSet::Add(uint64_t id, Consumer consumer) {
  int fd = -1;
  if (!IsShared(consumer)) {
    fd = consumer.own_bell()->fd();
    if (absl::Status s = Register(fd); !s.ok()) {
      if (wait_status_.ok()) wait_status_ = s;
      fd = -1;
    }
  }
  (in_pass_ ? pending_ : lanes_).push_back(Entry{id, std::move(consumer), fd});
  ++live_;
}

bool LaneSet::Remove(uint64_t id) {
  auto match = [id](const Entry& e) { return e.id == id && !e.removed; };
  if (auto it = std::find_if(pending_.begin(), pending_.end(), match); it != pending_.end()) {
    it->consumer.Close();
    Unregister(it->bell_fd);
    pending_.erase(it);
    --live_;
    return true;
  }
  auto it = std::find_if(lanes_.begin(), lanes_.end(), match);
  if (it == lanes_.end()) return false;
  --live_;
  if (in_pass_) {
    // The pass may be inside this lane's Drain: close it when the pass ends.
    it->removed = true;
    has_removed_ = true;
    return true;
  }
  it->consumer.Close();
  Unregister(it->bell_fd);
  lanes_.erase(it);
  if (next_ >= lanes_.size()) next_ = 0;
  return true;
}

void LaneSet::Keep() {
  if (delivering_ != nullptr) keep_requested_ = true;
}

bool LaneSet::ReleaseKept() {
  if (!has_kept_) return false;
  has_kept_ = false;
  for (Entry& e : lanes_) {
    if (e.id != kept_id_ || e.removed) continue;
    // The kept frame is still the lane's next one (nothing read it since).
    if (e.consumer.Peek().result != ReadResult::kOk) return false;
    e.consumer.Release();
    return true;
  }
  return false;
}

void LaneSet::LeaveAll() {
  for (Entry& e : lanes_) {
    e.consumer.Leave();
    Unregister(e.bell_fd);
  }
  for (Entry& e : pending_) {
    e.consumer.Leave();
    Unregister(e.bell_fd);
  }
  lanes_.clear();
  pending_.clear();
  live_ = 0;
  next_ = 0;
  has_kept_ = false;
  has_removed_ = false;
}

void LaneSet::EraseRemoved() {
  if (has_removed_) {
    has_removed_ = false;
    for (auto it = lanes_.begin(); it != lanes_.end();) {
      if (!it->removed) {
        ++it;
        continue;
      }
      it->consumer.Close();
      Unregister(it->bell_fd);
      it = lanes_.erase(it);
    }
  }
  for (Entry& e : pending_) lanes_.push_back(std::move(e));
  pending_.clear();
  if (next_ >= lanes_.size()) next_ = 0;
}

size_t LaneSet::Poll(FrameFn on_frame, EndFn on_end) {
  size_t delivered = 0;
  const size_t n = lanes_.size();
  if (n == 0) return 0;
  // Visit every lane once, starting where the last pass stopped, taking at
  // most per_lane_batch_ frames from each: a busy lane cannot starve others.
  // Callbacks may Add/Remove: lanes_ does not change size during the pass.
  in_pass_ = true;
  for (size_t k = 0; k < n; ++k) {
    Entry& e = lanes_[(next_ + k) % n];
    if (e.removed) continue;
    ReadResult r = ReadResult::kOk;
    bool kept_now = false;
    delivering_ = &e.consumer;  // once per lane: no user code runs between its frames
    delivered += e.consumer.Drain(
        [&](std::span<const std::byte> frame) -> bool {
          if (e.removed) return true;
          on_frame(e.id, frame);
          if (!keep_requested_) [[likely]]
            return true;
          keep_requested_ = false;
          kept_now = true;
          return false;  // stays peeked in its lane
        },
        per_lane_batch_, &r);
    delivering_ = nullptr;
    if (kept_now) {
      has_kept_ = true;
      kept_id_ = e.id;
      ++delivered;
      break;  // the caller holds a frame: the pass ends with it
    }
    if (!e.removed && (r == ReadResult::kClosed || r == ReadResult::kBroken)) {
      on_end(e.id, r, e.consumer.status());
      if (!e.removed) {
        e.removed = true;
        has_removed_ = true;
        --live_;
      }
    }
  }
  in_pass_ = false;
  next_ = (next_ + 1) % n;
  EraseRemoved();
  return delivered;
}

void LaneSet::SyncExtraFds(int also_fd, int also_fd2) {
  const int want[2] = {also_fd, also_fd2};
  for (int i = 0; i < 2; ++i) {
    if (extra_fds_[i] == want[i]) continue;
    // Forget the old one (unless its number is now a lane's bell: a closed
    // fd leaves epoll by itself, and the number may have been reused).
    if (extra_fds_[i] >= 0 && !registered_.contains(extra_fds_[i]) &&
        extra_fds_[1 - i] != extra_fds_[i]) {
      (void)::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, extra_fds_[i], nullptr);
    }
    extra_fds_[i] = -1;
    if (want[i] < 0 || registered_.contains(want[i]) || want[i] == extra_fds_[1 - i]) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t{1} << 32) | static_cast<uint32_t>(want[i]);  // high word 1: not a bell
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, want[i], &ev) == 0 || errno == EEXIST) {
      extra_fds_[i] = want[i];
    }
  }
}

absl::StatusOr<WakeReason> LaneSet::ParkEpoll(Deadline deadline) {
  epoll_event evs[64];
  int n;
  for (;;) {
    timespec ts{};
    timespec* timeout = nullptr;
    if (!deadline.infinite()) {
      const int64_t left = deadline.ns() - Deadline::NowNs();
      if (left <= 0) return WakeReason::kTimeout;
      ts.tv_sec = left / 1'000'000'000;
      ts.tv_nsec = left % 1'000'000'000;
      timeout = &ts;
    }
    n = ::epoll_pwait2(epoll_fd_.get(), evs, 64, timeout, nullptr);
    if (n >= 0) break;
    if (errno == EINTR) continue;  // the deadline is absolute
    if (errno == ENOSYS) return absl::UnimplementedError("epoll_pwait2");
    return absl::InternalError(absl::StrCat("epoll_pwait2: ", std::strerror(errno)));
  }
  bool rung = false, other = false;
  for (int i = 0; i < n; ++i) {
    if ((evs[i].data.u64 >> 32) != 0) {
      other = true;
      continue;
    }
    // Drain the bell (level-triggered: one left set would wake the next
    // park at once). More than 64 ready bells: the next park returns at once.
    uint64_t v;
    (void)!::read(evs[i].data.fd, &v, sizeof(v));
    rung = true;
  }
  if (rung) return WakeReason::kRung;
  if (other) return WakeReason::kOtherFd;
  return WakeReason::kTimeout;
}

absl::StatusOr<WakeReason> LaneSet::Park(Deadline deadline, int also_fd, int also_fd2) {
  // Lanes with per-lane bells and no shared doorbell: one epoll_pwait2 on
  // the set's epoll fd, with the caller's fds registered in it once. A
  // blocking socket server pays one epoll_wait and one read per wake-up;
  // so does this park (a ppoll would register and remove a wait-queue
  // entry per fd per call, and waking through a nested epoll fd costs a
  // second level). Kernels before 5.11 (no epoll_pwait2) take the ppoll
  // path below.
  if (doorbell_ == nullptr && epoll_fd_.valid() && !registered_.empty() && !no_pwait2_) {
    SyncExtraFds(also_fd, also_fd2);
    absl::StatusOr<WakeReason> woke = ParkEpoll(deadline);
    if (woke.ok() || !absl::IsUnimplemented(woke.status())) return woke;
    no_pwait2_ = true;
  }
  int fds[4];
  size_t nfds = 0;
  int shared_at = -1, epoll_at = -1, also_at = -1, also2_at = -1;
  if (doorbell_ != nullptr && doorbell_->valid()) {
    shared_at = static_cast<int>(nfds);
    fds[nfds++] = doorbell_->fd();
  }
  // One per-lane bell (a consumer with one producer, a client's reply
  // lane): wait on it directly. A wake-up through the epoll set costs a
  // second wait-queue level and an epoll_wait to learn which bell rang.
  const int single_bell = registered_.size() == 1 ? registered_.begin()->first : -1;
  if (epoll_fd_.valid() && !registered_.empty()) {
    epoll_at = static_cast<int>(nfds);
    fds[nfds++] = single_bell >= 0 ? single_bell : epoll_fd_.get();
  }
  if (also_fd >= 0) {
    also_at = static_cast<int>(nfds);
    fds[nfds++] = also_fd;
  }
  if (also_fd2 >= 0) {
    also2_at = static_cast<int>(nfds);
    fds[nfds++] = also_fd2;
  }
  absl::StatusOr<uint32_t> ready =
      internal::PollReadable(std::span<const int>(fds, nfds), deadline);
  if (!ready.ok()) return ready.status();
  bool rung = false;
  if (shared_at >= 0 && (*ready & (1u << shared_at)) != 0) {
    doorbell_->Clear();
    rung = true;
  }
  if (epoll_at >= 0 && (*ready & (1u << epoll_at)) != 0 && single_bell >= 0) {
    uint64_t v;
    (void)!::read(single_bell, &v, sizeof(v));
    rung = true;
  } else if (epoll_at >= 0 && (*ready & (1u << epoll_at)) != 0) {
    // Drain every bell that rang (level-triggered: one left set would wake
    // the next park at once). Bounded: each round takes up to 64 bells.
    epoll_event evs[64];
    for (size_t round = 0; round <= registered_.size() / 64; ++round) {
      const int n = ::epoll_wait(epoll_fd_.get(), evs, 64, 0);
      if (n <= 0) break;
      for (int i = 0; i < n; ++i) {
        uint64_t v;
        (void)!::read(evs[i].data.fd, &v, sizeof(v));
      }
      rung = true;
      if (n < 64) break;
    }
  }
  if (rung) return WakeReason::kRung;
  if (also_at >= 0 && (*ready & (1u << also_at)) != 0) return WakeReason::kOtherFd;
  if (also2_at >= 0 && (*ready & (1u << also2_at)) != 0) return WakeReason::kOtherFd;
  return WakeReason::kTimeout;
}

size_t LaneSet::Wait(FrameFn on_frame, EndFn on_end, absl::Time deadline, int also_fd,
                     int also_fd2) {
  return Wait(on_frame, on_end, Deadline::FromTime(deadline), also_fd, also_fd2);
}

size_t LaneSet::Wait(FrameFn on_frame, EndFn on_end, Deadline deadline, int also_fd, int also_fd2) {
  size_t n = Poll(on_frame, on_end);
  if (n > 0 || lanes_.empty()) return n;
  // Spin (if the waiter says it pays, wait_strategy.h): a pass costs one
  // tail load per lane.
  const int64_t budget = waiter_.SpinBudgetNs(Deadline::NowNs());
  bool won = false;
  uint64_t won_lane = 0;
  auto noting = [&](uint64_t id, std::span<const std::byte> frame) {
    if (!won) {
      won = true;
      won_lane = id;
    }
    on_frame(id, frame);
  };
  const SpinOutcome spun = Spin(
      budget, deadline,
      [&] {
        n = Poll(noting, on_end);
        return n > 0 || lanes_.empty();
      },
      /*probes_per_check=*/4, waiter_.stop_on_long_yield());
  waiter_.Learn(budget, spun);
  waiter_.NoteBacklog(n >= 4);  // a pass that found a batch: the producers are busy
  if (budget > 0 && !lanes_.empty()) {
    // One lane carries the whole spin: the one whose frame ended it, else
    // the lanes in turn (touching every lane's counter line per spin would
    // cost more than the spin on a large set).
    Entry* carrier = nullptr;
    for (Entry& e : lanes_) {
      if (won && e.id == won_lane && !e.removed) carrier = &e;
    }
    if (carrier == nullptr) carrier = &lanes_[spin_turn_++ % lanes_.size()];
    carrier->consumer.CountSpin(spun.spun_ns, /*episode=*/true, won);
  }
  if (spun.ready) return n;
  for (;;) {
    FlushDeferredWakeups();  // about to sleep: pay what our consumers owe
    // Park: announce on every lane, re-check each (PrepareToPark does the
    // fence and the re-check), and sleep only if all are still empty.
    size_t announced = 0;
    bool ready = false;
    for (; announced < lanes_.size(); ++announced) {
      if (lanes_[announced].consumer.PrepareToPark() != ReadResult::kEmpty) {
        ready = true;
        break;
      }
    }
    absl::StatusOr<WakeReason> woke = WakeReason::kTimeout;
    if (!ready && !deadline.Expired()) {
      for (Entry& e : lanes_) e.consumer.CountPark();
      woke = Park(deadline, also_fd, also_fd2);
    }
    const bool rung = woke.ok() && *woke == WakeReason::kRung;
    for (size_t i = 0; i < announced; ++i) lanes_[i].consumer.FinishPark(rung);
    if (!woke.ok() && wait_status_.ok()) wait_status_ = woke.status();
    // Whatever woke us, look at every lane, then at the clock and also_fd:
    // a ring is a hint, and a flood cannot hold us past the deadline.
    n = Poll(on_frame, on_end);
    waiter_.NoteBacklog(n >= 4);
    if (n > 0 || lanes_.empty()) return n;
    if (!woke.ok() || deadline.Expired()) return 0;
    // A lane that looked ready ended in that pass (closed, broken): go round.
    if (ready) continue;
    if (*woke == WakeReason::kOtherFd || *woke == WakeReason::kTimeout) return 0;
  }
}

}  // namespace shmlane::dataplane
