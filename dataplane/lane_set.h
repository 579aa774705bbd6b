// LaneSet: one consumer of many lanes that waits for all of them at once.
//
// Doorbells. Each lane's consumer parks on its own doorbell (the `own` bell
// it was attached with), and the set waits on every distinct one at once:
//
//  * Per-lane doorbells (recommended): each lane's consumer doorbell is held
//    only by the consumer and that lane's producer. The set registers the
//    lane's doorbell in one epoll set at Add() and removes it at Remove(), so
//    a park is one ppoll() on {epoll fd (or, with one lane, its bell),
//    shared doorbell, also fds} whatever
//    the number of lanes. No producer can read, drain or flood a doorbell
//    another producer rings: the worst one producer can do is wake the
//    consumer for nothing (a wasted pass; deadlines still hold).
//  * A shared doorbell (the `doorbell` given to the constructor; lanes whose
//    consumer's own bell is that one): every producer holds the same eventfd,
//    so one producer can read it and swallow the rings meant for the others'
//    frames, which then wait until the caller's deadline. Kept for callers
//    not yet handing out per-lane doorbells; do not use it with untrusted
//    producers.
//
// Either way a wake-up is only a hint: after every one the set re-checks its
// rings and honours the deadline, so a flood cannot stretch a wait.
//
// Drain() visits lanes round-robin and takes at most `per_lane_batch` frames
// from each before moving on, so a busy lane cannot starve the others. Lanes
// whose producer closed are reported once through the callback's lane id and
// removed.
//
// Callbacks may call Add() and Remove() (including for the lane being
// delivered): removals take effect at once for delivery (no frame of a
// removed lane is delivered after Remove returns) and the lane is closed
// when the pass ends; additions join at the next pass.
//
// Thread safety: one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/deadline.h"
#include "dataplane/lane.h"
#include "dataplane/unique_fd.h"
#include "dataplane/wait_strategy.h"

namespace shmlane::dataplane {

class LaneSet {
 public:
  // `doorbell` is the shared consumer doorbell of lanes attached with it as
  // their own bell (legacy); may be null when every lane brings its own.
  explicit LaneSet(std::shared_ptr<const Doorbell> doorbell, size_t per_lane_batch = 64,
                   WaitOptions wait = WaitOptions());
  // A set whose lanes all bring their own doorbell.
  explicit LaneSet(size_t per_lane_batch = 64, WaitOptions wait = WaitOptions());
  LaneSet(LaneSet&&) noexcept = default;
  LaneSet& operator=(LaneSet&&) noexcept = default;

  // Adds a lane under a caller-chosen id (unique within the set). The set
  // waits on `consumer.own_bell()`: the shared doorbell if it is that one
  // (same object or same fd), otherwise a per-lane doorbell, registered in
  // the set's epoll set now. Fails (and does not add) only when the kernel
  // refuses the registration (ENOMEM, ENOSPC: fs.epoll.max_user_watches).
  absl::Status AddLane(uint64_t id, Consumer consumer);
  // AddLane for callers that cannot handle a failure: the lane is added
  // anyway and served whenever the set wakes for another reason (or at the
  // deadline); the failure shows in wait_status().
  void Add(uint64_t id, Consumer consumer);
  // Removes (and closes) a lane; false if the id is unknown.
  bool Remove(uint64_t id);
  // Lets go of every lane without closing it (Consumer::Leave: a durable
  // channel's consumer that exits) and empties the set.
  void LeaveAll();

  // Peek-style delivery. Called from inside on_frame: the frame being
  // delivered is not consumed (it stays the next frame of its lane) and the
  // pass ends after it; ReleaseKept() consumes it. A later pass delivers it
  // again if it was not released.
  void Keep();
  // Consumes the frame kept by Keep(); false if none is kept or its lane
  // was removed since.
  bool ReleaseKept();
  // Inside on_frame: the lane position of the frame being delivered
  // (Consumer::position); 0 outside a callback.
  bool delivering() const { return delivering_ != nullptr; }
  uint64_t delivering_position() const {
    return delivering_ != nullptr ? delivering_->position() : 0;
  }
  size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }
  const std::shared_ptr<const Doorbell>& doorbell() const { return doorbell_; }
  // How the set waits (wait_strategy.h).
  const WaitOptions& wait_options() const { return waiter_.options(); }
  // OK, or the first failure to register a doorbell or to park (the set then
  // returns at once instead of sleeping; its lanes still work).
  const absl::Status& wait_status() const { return wait_status_; }

  using FrameFn = absl::FunctionRef<void(uint64_t lane_id, std::span<const std::byte>)>;
  // Called once per lane that ended: kClosed (drained and closed) or kBroken.
  using EndFn = absl::FunctionRef<void(uint64_t lane_id, ReadResult why, const absl::Status&)>;

  // One fair pass over all lanes; returns the frames delivered. Lanes that
  // end are removed after `on_end` is called.
  size_t Poll(FrameFn on_frame, EndFn on_end);

  // Polls; when nothing is ready, spins, then parks on every doorbell until a
  // frame arrives or `deadline` passes (re-checking all lanes after each
  // wake-up). Returns frames delivered: 0 on timeout, when the set is empty,
  // or when `also_fd` or `also_fd2` (if >= 0) became readable (the caller checks it and
  // calls Wait again).
  // Two extra fds rather than one epoll set of them: a park on plain fds
  // costs less than one through a nested epoll fd.
  size_t Wait(FrameFn on_frame, EndFn on_end, absl::Time deadline, int also_fd = -1,
              int also_fd2 = -1);
  size_t Wait(FrameFn on_frame, EndFn on_end, Deadline deadline, int also_fd = -1,
              int also_fd2 = -1);

 private:
  struct Entry {
    uint64_t id;
    Consumer consumer;
    int bell_fd;           // registered in epoll_fd_, or -1 (shared doorbell / failed)
    bool removed = false;  // removed during a pass; erased when it ends
  };
  // Registers `fd` (reference counted: lanes may share a bell). -1 on failure.
  absl::Status Register(int fd);
  void Unregister(int fd);
  bool IsShared(const Consumer& c) const;
  void EraseRemoved();
  // One park on every doorbell; drains what rang. kRung/kOtherFd/kTimeout.
  absl::StatusOr<WakeReason> Park(Deadline deadline, int also_fd, int also_fd2);
  // The epoll_pwait2 park (Park's fast path) and the caller's fds in the
  // epoll set (registered once, replaced when they change).
  absl::StatusOr<WakeReason> ParkEpoll(Deadline deadline);
  void SyncExtraFds(int also_fd, int also_fd2);

  std::shared_ptr<const Doorbell> doorbell_;
  size_t per_lane_batch_;
  Waiter waiter_;
  std::vector<Entry> lanes_;
  std::vector<Entry> pending_;  // added during a pass
  size_t live_ = 0;             // lanes not removed, pending included
  size_t next_ = 0;             // round-robin start for the next pass
  size_t spin_turn_ = 0;        // lane that carries the next unrewarded spin's counters
  bool in_pass_ = false;
  bool has_removed_ = false;
  const Consumer* delivering_ = nullptr;  // the lane whose frame on_frame has now
  bool keep_requested_ = false;           // Keep() during this on_frame
  bool has_kept_ = false;                 // a frame of lane kept_id_ is kept
  uint64_t kept_id_ = 0;
  UniqueFd epoll_fd_;                        // created at the first per-lane doorbell
  std::unordered_map<int, int> registered_;  // doorbell fd -> lanes using it
  absl::Status wait_status_;
  int extra_fds_[2] = {-1, -1};  // caller fds registered in epoll_fd_ (tagged, not bells)
  bool no_pwait2_ = false;       // the kernel has no epoll_pwait2: ppoll instead
};

}  // namespace shmlane::dataplane
