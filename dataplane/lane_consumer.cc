// The consumer's end of a lane (lane.h) and the deferred wake-ups it owes
// producers (FlushDeferredWakeups). The producer, the lane geometry and the
// wake-up protocol's description are in lane.cc.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/internal/check.h"
#include "dataplane/internal/shm_access.h"
#include "dataplane/lane.h"
#include "dataplane/wait_strategy.h"

namespace shmlane::dataplane {
namespace {

using internal::kFlagOrder;
using internal::kIndexLoad;
using internal::kIndexStore;
using internal::kParkStore;
using internal::Load;
using internal::Store;
using internal::StoreLoadFence;

using internal::MonotonicNs;
using internal::RecordBytes;

}  // namespace

namespace internal {

struct WakeDebt {
  std::shared_ptr<const Doorbell> bell;  // the producer's doorbell (kept open while owed)
  std::atomic<uint64_t> owed{0};         // producer waiter word we owe a ring for; 0: none
  std::atomic<bool> listed{false};       // on some thread's t_wake_debts
  std::atomic<uint64_t> rings{0};        // rings paid by FlushDeferredWakeups
};

namespace {
// Debts of consumers used by this thread. Weak: a consumer may die first.
thread_local std::vector<std::weak_ptr<WakeDebt>> t_wake_debts;

void Owe(const std::shared_ptr<WakeDebt>& debt, uint64_t waiting) {
  debt->owed.store(waiting, std::memory_order_relaxed);
  if (!debt->listed.exchange(true, std::memory_order_acq_rel)) t_wake_debts.push_back(debt);
}
}  // namespace

}  // namespace internal

void FlushDeferredWakeups() {
  if (internal::t_wake_debts.empty()) return;
  std::vector<std::weak_ptr<internal::WakeDebt>> debts;
  debts.swap(internal::t_wake_debts);
  for (const std::weak_ptr<internal::WakeDebt>& weak : debts) {
    std::shared_ptr<internal::WakeDebt> d = weak.lock();
    if (d == nullptr) continue;
    d->listed.store(false, std::memory_order_release);
    if (d->owed.exchange(0, std::memory_order_acq_rel) != 0) {
      // The producer may have woken since: a spurious ring only makes it look again.
      d->bell->Ring();
      d->rings.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// ------------------------------- Consumer ---------------------------------

absl::StatusOr<Consumer> Consumer::Attach(Segment segment, LaneBells bells, WaitOptions wait) {
  if (segment.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("a consumer needs a read-write mapping (it writes head)");
  }
  if (bells.own == nullptr || bells.peer == nullptr || !bells.own->valid() ||
      !bells.peer->valid()) {
    return absl::InvalidArgumentError(
        "a consumer needs its own and the producer's doorbell, both valid eventfds");
  }
  absl::StatusOr<internal::LaneGeometry> geo = internal::ReadGeometry(segment);
  if (!geo.ok()) return geo.status();
  Consumer c(std::move(segment), *geo, std::move(bells), wait);
  const uint64_t head = Load(c.geo_.blocks->consumer_index.head, std::memory_order_relaxed);
  if ((head % kRecordAlign) != 0) {
    return absl::DataLossError(absl::StrCat("lane head ", head, " is misaligned"));
  }
  c.head_ = c.published_head_ = c.cached_tail_ = head;
  // A lane taken over from an earlier consumer (durable channel) continues
  // its counters, so that exported totals do not go back. They are only
  // statistics: a hostile predecessor can skew them, not the ring.
  const ConsumerCounters& was = c.geo_.blocks->consumer_counters;
  c.frames_ = Load(was.frames, std::memory_order_relaxed);
  c.bytes_ = Load(was.bytes, std::memory_order_relaxed);
  c.empty_waits_ = Load(was.empty_waits, std::memory_order_relaxed);
  c.wakeups_sent_ = Load(was.wakeups_sent, std::memory_order_relaxed);
  c.wakeups_received_ = Load(was.wakeups_received, std::memory_order_relaxed);
  c.latency_count_ = Load(was.latency_count, std::memory_order_relaxed);
  c.latency_sum_ns_ = Load(was.latency_sum_ns, std::memory_order_relaxed);
  for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
    c.latency_buckets_[i] = Load(was.latency_buckets[i], std::memory_order_relaxed);
  }
  c.spin_ns_ = Load(was.spin_ns, std::memory_order_relaxed);
  c.spin_waits_ = Load(was.spin_waits, std::memory_order_relaxed);
  c.spin_wins_ = Load(was.spin_wins, std::memory_order_relaxed);
  c.wakeup_errors_ = Load(was.wakeup_errors, std::memory_order_relaxed);
  ConsumerControl& me = c.geo_.blocks->consumer_control;
  c.park_episode_ = Load(me.waiting, std::memory_order_relaxed) >> 1;
  Store(me.waiting, c.park_episode_ << 1, std::memory_order_relaxed);
  return c;
}

Consumer::Consumer(Segment segment, internal::LaneGeometry geo, LaneBells bells, WaitOptions wait)
    : segment_(std::move(segment)),
      geo_(geo),
      bells_(std::move(bells)),
      waiter_(wait),
      debt_(std::make_shared<internal::WakeDebt>()) {
  debt_->bell = bells_.peer;
}

Consumer::~Consumer() {
  if (segment_.valid() && !closed_) Close();
}

bool Consumer::Fail(uint32_t code, std::string message) {
  if (!broken_) {
    broken_ = true;
    broken_message_ = std::move(message);
    Store(geo_.blocks->consumer_counters.broken, code, std::memory_order_relaxed);
  }
  return false;
}

void Consumer::DoorbellError(absl::Status s) {
  if (doorbell_status_.ok()) doorbell_status_ = std::move(s);
  Store(geo_.blocks->consumer_counters.wakeup_errors, ++wakeup_errors_, std::memory_order_relaxed);
}

absl::Status Consumer::status() const {
  if (broken_) return absl::DataLossError(absl::StrCat("lane broken: ", broken_message_));
  return absl::OkStatus();
}

bool Consumer::ProducerClosed() const {
  return Load(geo_.blocks->producer_control.closed, std::memory_order_acquire) != 0 ||
         (Load(geo_.blocks->supervisor.closed_by, std::memory_order_acquire) &
          (kClosedProducerGone | kClosedDeleted)) != 0;
}

ReadResult Consumer::Refresh() {
  const uint64_t tail = Load(geo_.blocks->producer_index.tail, kIndexLoad);
  if (tail < cached_tail_ || tail - head_ > geo_.ring_bytes || (tail % kRecordAlign) != 0) {
    Fail(kBadTail, absl::StrCat("producer tail ", tail, " is behind ", cached_tail_,
                                ", more than a ring ahead of head ", head_, ", or misaligned"));
    return ReadResult::kBroken;
  }
  cached_tail_ = tail;
  return tail != head_ ? ReadResult::kOk : ReadResult::kEmpty;
}

ReadResult Consumer::PeekAt(PeekResult* out) {
  if (broken_) return ReadResult::kBroken;
  // At most two records: a padding record, then the frame at offset 0. The
  // bound makes a hostile producer unable to keep us looping.
  for (int step = 0; step < 2; ++step) {
    if (head_ == cached_tail_) {
      ReadResult r = Refresh();
      if (r == ReadResult::kEmpty && ProducerClosed()) {
        // Closed is stored after the final tail: look once more, then end.
        r = Refresh();
        if (r == ReadResult::kEmpty) return ReadResult::kClosed;
      }
      if (r == ReadResult::kEmpty) {
        PublishHead();  // a padding record skipped above frees space too
        PayDebt();      // caught up: we are idle, a producer that fits may go
      }
      if (r != ReadResult::kOk) return r;
    }
    const uint64_t offset = head_ & geo_.mask;
    const uint64_t available = cached_tail_ - head_;
    const uint64_t to_end = geo_.ring_bytes - offset;
    const FrameHeader h = internal::LoadHeader(geo_.ring + offset);  // used only after checks
    if ((h.flags & ~kFrameFlagsKnown) != 0) {
      Fail(kBadFrameFlags, absl::StrCat("frame at ", head_, " has unknown flags ", h.flags));
      return ReadResult::kBroken;
    }
    if ((h.flags & kFrameFlagPadding) != 0) {
      if (h.flags != kFrameFlagPadding || h.length != to_end || available < to_end) {
        Fail(kBadPadding, absl::StrCat("padding record at ", head_, " of ", h.length,
                                       " bytes does not end the ring (", to_end, " left, ",
                                       available, " published)"));
        return ReadResult::kBroken;
      }
      head_ += to_end;
      continue;
    }
    const bool stamped = (h.flags & kFrameFlagTimestamp) != 0;
    const uint64_t record = RecordBytes(h.length, stamped);
    if (h.length > geo_.max_frame_bytes || record > to_end || record > available) {
      Fail(kBadFrameLength, absl::StrCat("frame at ", head_, " claims ", h.length, " bytes (max ",
                                         geo_.max_frame_bytes, ", ", available, " published, ",
                                         to_end, " to the ring's end)"));
      return ReadResult::kBroken;
    }
    const std::byte* payload = geo_.ring + offset + sizeof(FrameHeader);
    if (stamped) {
      if (peeked_bytes_ == 0) RecordLatency(payload);
      payload += 8;
    }
    peeked_bytes_ = record;
    peeked_payload_ = h.length;
    out->data = std::span<const std::byte>(payload, h.length);
    return ReadResult::kOk;
  }
  // Two paddings in a row cannot happen in a well-formed lane.
  Fail(kBadPadding, absl::StrCat("padding record follows padding at ", head_));
  return ReadResult::kBroken;
}

void Consumer::RecordLatency(const std::byte* stamp) {
  const uint64_t sent = Load(*reinterpret_cast<const uint64_t*>(stamp), std::memory_order_relaxed);
  const uint64_t now = MonotonicNs();
  const uint64_t delay = now > sent ? now - sent : 0;  // a hostile stamp only skews a metric
  ConsumerCounters& c = geo_.blocks->consumer_counters;
  const uint32_t b = LatencyBucketFor(delay);
  Store(c.latency_buckets[b], ++latency_buckets_[b], std::memory_order_relaxed);
  Store(c.latency_count, ++latency_count_, std::memory_order_relaxed);
  latency_sum_ns_ += delay;
  Store(c.latency_sum_ns, latency_sum_ns_, std::memory_order_relaxed);
}

void Consumer::RingProducer(uint64_t waiting) {
  // Acquire: need_bytes and the tail were stored before the word (release).
  const ProducerControl& pc = geo_.blocks->producer_control;
  waiting = Load(pc.waiting, std::memory_order_acquire);
  if (!WaiterParked(waiting) || waiting == last_rung_) return;
  const uint64_t tail = Load(geo_.blocks->producer_index.tail, std::memory_order_relaxed);
  if (tail < head_ || tail - head_ > geo_.ring_bytes) {
    // A tail that fails the usual checks: the producer validates for itself.
    RingProducerNow(waiting, tail);
    return;
  }
  const uint64_t free = geo_.ring_bytes - (tail - head_);
  const uint64_t need = std::clamp<uint64_t>(Load(pc.need_bytes, std::memory_order_relaxed),
                                             kRecordAlign, geo_.ring_bytes);
  if (free < need) return;  // its frame does not fit yet; a later release looks again
  // Low watermark: ring at once only when half the ring is free, so a woken
  // producer writes a long batch per wake-up (with hundreds of producers the
  // wake-ups, not the copies, were the consumer's cost). Below it the frame
  // fits, so the ring is owed: paid when this consumer goes idle or its
  // thread parks anywhere (FlushDeferredWakeups), so a pipeline through the
  // same two processes cannot stall. A producer that re-parks without having
  // written since our last ring (a flipping word) also waits for the
  // watermark to move by half a ring before it gets another immediate ring.
  const bool progressed =
      last_rung_ == 0 || tail != rang_at_tail_ || head_ - rang_at_head_ >= geo_.ring_bytes / 2;
  if (free >= geo_.ring_bytes / 2 && progressed) {
    RingProducerNow(waiting, tail);
  } else if (debt_->owed.load(std::memory_order_relaxed) != waiting) {
    internal::Owe(debt_, waiting);
  }
}

void Consumer::RingProducerNow(uint64_t waiting, uint64_t tail) {
  debt_->owed.store(0, std::memory_order_relaxed);
  last_rung_ = waiting;
  rang_at_tail_ = tail;
  rang_at_head_ = head_;
  if (absl::Status s = bells_.peer->Notify(); !s.ok()) DoorbellError(std::move(s));
  Store(geo_.blocks->consumer_counters.wakeups_sent,
        ++wakeups_sent_ + debt_->rings.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

void Consumer::PayDebt() {
  if (debt_->owed.load(std::memory_order_relaxed) == 0) return;
  const uint64_t owed = debt_->owed.exchange(0, std::memory_order_acq_rel);
  if (owed == 0) return;
  const uint64_t waiting = Load(geo_.blocks->producer_control.waiting, std::memory_order_acquire);
  if (waiting != owed) return;  // the producer woke (or re-parked: PublishHead rings anew)
  RingProducerNow(waiting, Load(geo_.blocks->producer_index.tail, std::memory_order_relaxed));
}

ReadResult Consumer::Read(std::span<std::byte> out, size_t* length, absl::Time deadline) {
  return Read(out, length, Deadline::FromTime(deadline));
}

ReadResult Consumer::Read(std::span<std::byte> out, size_t* length, Deadline deadline) {
  for (;;) {
    const ReadResult r = TryRead(out, length);
    if (r != ReadResult::kEmpty) return r;
    const ReadResult w = WaitReadable(deadline);
    if (w != ReadResult::kOk) return w;
    // kOk: a validated frame is there; TryRead returns it (or kBroken). A
    // peer rewriting the ring between the two cannot keep us here past the
    // deadline.
    if (deadline.Expired()) {
      const ReadResult last = TryRead(out, length);
      return last == ReadResult::kEmpty ? ReadResult::kTimeout : last;
    }
  }
}

ReadResult Consumer::PrepareToPark() {
  if (broken_) return ReadResult::kBroken;
  if (++park_episode_ >= (uint64_t{1} << 63)) park_episode_ = 1;
  Store(geo_.blocks->consumer_control.waiting, (park_episode_ << 1) | 1, kParkStore);
  StoreLoadFence();  // pairs with Producer::Publish
  PeekResult p{ReadResult::kEmpty, {}};
  const ReadResult r = head_ != cached_tail_ ? ReadResult::kOk : PeekAt(&p);
  if (r != ReadResult::kEmpty) FinishPark(false);
  return r;
}

void Consumer::FinishPark(bool rung) {
  ConsumerCounters& c = geo_.blocks->consumer_counters;
  Store(geo_.blocks->consumer_control.waiting, park_episode_ << 1, std::memory_order_relaxed);
  if (rung) Store(c.wakeups_received, ++wakeups_received_, std::memory_order_relaxed);
}

void Consumer::CountPark() {
  Store(geo_.blocks->consumer_counters.empty_waits, ++empty_waits_, std::memory_order_relaxed);
}

void Consumer::CountSpin(int64_t spun_ns, bool episode, bool won) {
  ConsumerCounters& c = geo_.blocks->consumer_counters;
  spin_ns_ += static_cast<uint64_t>(std::max<int64_t>(spun_ns, 0));
  Store(c.spin_ns, spin_ns_, std::memory_order_relaxed);
  if (episode) Store(c.spin_waits, ++spin_waits_, std::memory_order_relaxed);
  if (won) Store(c.spin_wins, ++spin_wins_, std::memory_order_relaxed);
}

ReadResult Consumer::WaitReadable(absl::Time deadline) {
  return WaitReadable(Deadline::FromTime(deadline));
}

ReadResult Consumer::WaitReadable(Deadline deadline) {
  if (broken_) return ReadResult::kBroken;
  if (head_ != cached_tail_) return ReadResult::kOk;
  PayDebt();  // about to wait for data: we are idle
  // The spin also watches the close words, so a producer that closes (or a
  // supervisor close) ends it at once rather than after the whole budget.
  const LaneBlocks& b = *geo_.blocks;
  const int64_t budget = waiter_.SpinBudgetNs(Deadline::NowNs());
  const SpinOutcome spun = Spin(
      budget, deadline,
      [&] {
        return Load(b.producer_index.tail, std::memory_order_relaxed) != head_ ||
               Load(b.producer_control.closed, std::memory_order_relaxed) != 0 ||
               Load(b.supervisor.closed_by, std::memory_order_relaxed) != 0;
      },
      /*probes_per_check=*/64, waiter_.stop_on_long_yield());
  waiter_.Learn(budget, spun);
  if (budget > 0) CountSpin(spun.spun_ns, /*episode=*/true, spun.ready);
  // A quarter of the ring or more already there: the producer is saturating
  // (a hint for the next wait's budget, never used to index the ring).
  waiter_.NoteBacklog(Load(b.producer_index.tail, std::memory_order_relaxed) - head_ >=
                      geo_.ring_bytes / 4);
  if (spun.ready) {
    PeekResult p{ReadResult::kEmpty, {}};
    const ReadResult r = PeekAt(&p);  // validates the tail it saw
    if (r != ReadResult::kEmpty) return r;
  }
  for (;;) {
    FlushDeferredWakeups();
    const ReadResult r = PrepareToPark();
    if (r != ReadResult::kEmpty) return r;
    if (deadline.Expired()) {
      FinishPark(false);
      return ReadResult::kTimeout;
    }
    CountPark();
    absl::StatusOr<WakeReason> woke = bells_.own->Await(deadline);
    FinishPark(woke.ok() && *woke == WakeReason::kRung);
    if (!woke.ok()) DoorbellError(woke.status());
    // A wake-up is a hint: look at the ring, then at the clock.
    PeekResult p{ReadResult::kEmpty, {}};
    const ReadResult last = PeekAt(&p);
    // (A hint only, never used to index: a hostile tail just changes it.)
    waiter_.NoteBacklog(cached_tail_ - head_ >= geo_.ring_bytes / 4);
    if (last != ReadResult::kEmpty) return last;
    if (!woke.ok() || deadline.Expired()) return ReadResult::kTimeout;
  }
}

void Consumer::Leave() {
  if (closed_ || !segment_.valid()) return;
  peeked_bytes_ = 0;  // the next consumer reads it again
  PublishHead();
  PayDebt();
  closed_ = true;
}

void Consumer::Close() {
  if (closed_ || !segment_.valid()) return;
  PublishHead();
  closed_ = true;
  debt_->owed.store(0, std::memory_order_relaxed);  // the close rings anyway
  Store(geo_.blocks->consumer_control.closed, 1u, std::memory_order_release);
  StoreLoadFence();
  if (absl::Status s = bells_.peer->Notify(); !s.ok()) DoorbellError(std::move(s));
}

}  // namespace shmlane::dataplane
