#include "dataplane/lane_set.h"

#include <algorithm>
#include <utility>

#include "dataplane/internal/spin.h"

namespace shmlane::dataplane {

LaneSet::LaneSet(std::shared_ptr<const Doorbell> doorbell, size_t per_lane_batch, WaitOptions wait)
    : doorbell_(std::move(doorbell)),
      per_lane_batch_(std::max<size_t>(per_lane_batch, 1)),
      wait_(wait) {}

void LaneSet::Add(uint64_t id, Consumer consumer) {
  lanes_.push_back(Entry{id, std::move(consumer)});
}

bool LaneSet::Remove(uint64_t id) {
  auto it = std::find_if(lanes_.begin(), lanes_.end(), [id](const Entry& e) { return e.id == id; });
  if (it == lanes_.end()) return false;
  it->consumer.Close();
  lanes_.erase(it);
  if (next_ >= lanes_.size()) next_ = 0;
  return true;
}

size_t LaneSet::Poll(FrameFn on_frame, EndFn on_end) {
  size_t delivered = 0;
  const size_t n = lanes_.size();
  if (n == 0) return 0;
  // Visit every lane once, starting where the last pass stopped, taking at
  // most per_lane_batch_ frames from each: a busy lane cannot starve others.
  std::vector<size_t> ended;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (next_ + k) % n;
    Entry& e = lanes_[i];
    ReadResult r = ReadResult::kOk;
    delivered += e.consumer.Drain([&](std::span<const std::byte> frame) { on_frame(e.id, frame); },
                                  per_lane_batch_, &r);
    if (r == ReadResult::kClosed || r == ReadResult::kBroken) {
      on_end(e.id, r, e.consumer.status());
      ended.push_back(i);
    }
  }
  next_ = (next_ + 1) % n;
  if (!ended.empty()) {
    std::sort(ended.begin(), ended.end(), std::greater<>());
    for (size_t i : ended) {
      lanes_[i].consumer.Close();
      lanes_.erase(lanes_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (next_ >= lanes_.size()) next_ = 0;
  }
  return delivered;
}

size_t LaneSet::Wait(FrameFn on_frame, EndFn on_end, absl::Time deadline, int also_fd) {
  for (;;) {
    size_t n = Poll(on_frame, on_end);
    if (n > 0 || lanes_.empty()) return n;
    // Spin: a pass costs one tail load per lane.
    if (internal::SpinUntil(
            wait_.spin, deadline,
            [&] {
              n = Poll(on_frame, on_end);
              return n > 0 || lanes_.empty();
            },
            /*probes_per_check=*/4)) {
      return n;
    }
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
    bool rung = false;
    if (!ready) {
      for (Entry& e : lanes_) e.consumer.CountPark();
      rung = doorbell_->Wait(deadline, also_fd);
    }
    for (size_t i = 0; i < announced; ++i) lanes_[i].consumer.FinishPark(rung);
    if (ready) continue;
    if (!rung) return Poll(on_frame, on_end);  // deadline: one last look
    if (also_fd >= 0) {
      n = Poll(on_frame, on_end);
      if (n > 0) return n;
      // Rung with nothing to read: maybe also_fd woke us; let the caller look.
      return 0;
    }
  }
}

}  // namespace shmlane::dataplane
