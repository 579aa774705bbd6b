// LaneSet: one consumer of many lanes that waits on one doorbell.
//
// Every lane added to a set must have been created with the set's doorbell as
// its consumer doorbell (the producers ring it). Drain() visits lanes
// round-robin and takes at most `per_lane_batch` frames from each before
// moving on, so a busy lane cannot starve the others. Lanes whose producer
// closed are reported once through the callback's lane id and removed.
//
// Thread safety: one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/lane.h"

namespace shmlane::dataplane {

class LaneSet {
 public:
  // `doorbell` is the consumer doorbell every added lane shares.
  explicit LaneSet(std::shared_ptr<const Doorbell> doorbell, size_t per_lane_batch = 64,
                   WaitOptions wait = WaitOptions());

  // Adds a lane under a caller-chosen id (unique within the set).
  void Add(uint64_t id, Consumer consumer);
  // Removes (and closes) a lane; false if the id is unknown.
  bool Remove(uint64_t id);
  size_t size() const { return lanes_.size(); }
  bool empty() const { return lanes_.empty(); }
  const std::shared_ptr<const Doorbell>& doorbell() const { return doorbell_; }

  using FrameFn = absl::FunctionRef<void(uint64_t lane_id, std::span<const std::byte>)>;
  // Called once per lane that ended: kClosed (drained and closed) or kBroken.
  using EndFn = absl::FunctionRef<void(uint64_t lane_id, ReadResult why, const absl::Status&)>;

  // One fair pass over all lanes; returns the frames delivered. Lanes that
  // end are removed after `on_end` is called.
  size_t Poll(FrameFn on_frame, EndFn on_end);

  // Polls; when nothing is ready, spins, then parks on the doorbell until a
  // frame arrives or `deadline` passes. Returns frames delivered (0 on
  // timeout, when the set is empty, or when `also_fd` (if >= 0) became
  // readable: the caller checks it and calls Wait again).
  size_t Wait(FrameFn on_frame, EndFn on_end, absl::Time deadline, int also_fd = -1);

 private:
  struct Entry {
    uint64_t id;
    Consumer consumer;
  };
  std::shared_ptr<const Doorbell> doorbell_;
  size_t per_lane_batch_;
  WaitOptions wait_;
  std::vector<Entry> lanes_;
  size_t next_ = 0;  // round-robin start for the next pass
};

}  // namespace shmlane::dataplane
