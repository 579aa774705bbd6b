#include "dataplane/lane.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/internal/check.h"
#include "dataplane/internal/shm_access.h"
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

const char* ToString(WriteResult r) {
  switch (r) {
    case WriteResult::kOk:
      return "ok";
    case WriteResult::kFull:
      return "full";
    case WriteResult::kTooLarge:
      return "too large";
    case WriteResult::kClosed:
      return "closed";
    case WriteResult::kBroken:
      return "broken";
    case WriteResult::kTimeout:
      return "timeout";
    case WriteResult::kDropped:
      return "dropped";
  }
  return "unknown";
}

const char* ToString(ReadResult r) {
  switch (r) {
    case ReadResult::kOk:
      return "ok";
    case ReadResult::kEmpty:
      return "empty";
    case ReadResult::kClosed:
      return "closed";
    case ReadResult::kBroken:
      return "broken";
    case ReadResult::kTimeout:
      return "timeout";
    case ReadResult::kTooSmall:
      return "buffer too small";
  }
  return "unknown";
}

absl::Status ValidateLaneOptions(const LaneOptions& o) {
  if (o.ring_bytes < kMinRingBytes || o.ring_bytes > kMaxRingBytes ||
      (o.ring_bytes & (o.ring_bytes - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ring_bytes ", o.ring_bytes,
                                                   " must be a power of two between ",
                                                   kMinRingBytes, " and ", kMaxRingBytes));
  }
  if (o.max_frame_bytes > MaxFrameBytesFor(o.ring_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_frame_bytes ", o.max_frame_bytes, " exceeds ",
                     MaxFrameBytesFor(o.ring_bytes), ", the limit for a ring of ", o.ring_bytes,
                     " bytes (half the ring minus 16): use a bigger ring or smaller frames"));
  }
  switch (o.policy) {
    case BackpressurePolicy::kBlock:
    case BackpressurePolicy::kFailFast:
    case BackpressurePolicy::kDrop:
      break;
    default:
      return absl::InvalidArgumentError("unknown backpressure policy");
  }
  return absl::OkStatus();
}

absl::StatusOr<Segment> CreateLaneSegment(const LaneOptions& options) {
  if (absl::Status s = ValidateLaneOptions(options); !s.ok()) return s;
  absl::StatusOr<Segment> seg = Segment::Create(absl::StrCat("lane-", options.lane_id),
                                                kLaneHeaderBytes + options.ring_bytes);
  if (!seg.ok()) return seg.status();
  // A fresh memfd is zero-filled: indices, flags and counters start at 0.
  auto* blocks = reinterpret_cast<LaneBlocks*>(seg->data());
  LaneHeader& h = blocks->header;
  h.magic = kLaneMagic;
  h.header_bytes = kLaneHeaderBytes;
  h.ring_bytes = options.ring_bytes;
  h.max_frame_bytes = options.max_frame_bytes;
  h.policy = static_cast<uint32_t>(options.policy);
  h.sample_every = options.sample_every;
  h.created_unix_ns = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  h.lane_id = options.lane_id;
  // Version last, with release: a reader that sees it sees everything above.
  Store(h.version, (uint32_t{kLayoutMajor} << 16) | kLayoutMinor, std::memory_order_release);
  return seg;
}

namespace internal {

uint64_t MonotonicNs() { return static_cast<uint64_t>(Deadline::NowNs()); }

absl::StatusOr<LaneGeometry> ReadGeometry(const Segment& segment) {
  if (!segment.valid() || segment.size() < kLaneHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("segment of ", segment.size(), " bytes is too small to hold a lane header"));
  }
  auto* blocks = reinterpret_cast<LaneBlocks*>(segment.data());
  const LaneHeader& h = blocks->header;
  const uint32_t version = Load(h.version, std::memory_order_acquire);
  const uint64_t magic = Load(h.magic, std::memory_order_relaxed);
  if (magic != kLaneMagic) {
    return absl::DataLossError("segment is not a shmlane lane (bad magic)");
  }
  if ((version >> 16) != kLayoutMajor) {
    return absl::DataLossError(absl::StrCat(
        "lane layout version ", version >> 16, ".", version & 0xffff,
        " is not supported (this build ", "speaks ", kLayoutMajor, ".x): upgrade the older side"));
  }
  LaneGeometry g;
  g.base = segment.data();
  g.blocks = blocks;
  const uint32_t header_bytes = Load(h.header_bytes, std::memory_order_relaxed);
  g.ring_bytes = Load(h.ring_bytes, std::memory_order_relaxed);
  g.max_frame_bytes = Load(h.max_frame_bytes, std::memory_order_relaxed);
  g.sample_every = Load(h.sample_every, std::memory_order_relaxed);
  const uint32_t policy = Load(h.policy, std::memory_order_relaxed);
  if (header_bytes != kLaneHeaderBytes) {
    return absl::DataLossError(
        absl::StrCat("lane header_bytes ", header_bytes, " != ", kLaneHeaderBytes));
  }
  if (g.ring_bytes < kMinRingBytes || g.ring_bytes > kMaxRingBytes ||
      (g.ring_bytes & (g.ring_bytes - 1)) != 0 ||
      g.ring_bytes != segment.size() - kLaneHeaderBytes) {
    return absl::DataLossError(absl::StrCat("lane ring_bytes ", g.ring_bytes,
                                            " does not match a segment of ", segment.size(),
                                            " bytes"));
  }
  if (g.max_frame_bytes > MaxFrameBytesFor(g.ring_bytes)) {
    return absl::DataLossError(
        absl::StrCat("lane max_frame_bytes ", g.max_frame_bytes, " is too large for its ring"));
  }
  if (policy < 1 || policy > 3) {
    return absl::DataLossError(absl::StrCat("lane backpressure policy ", policy, " is unknown"));
  }
  g.policy = static_cast<BackpressurePolicy>(policy);
  g.ring = segment.data() + kLaneHeaderBytes;
  g.mask = g.ring_bytes - 1;
  return g;
}

}  // namespace internal

// ---------------------------------------------------------------------------
// Wake-up protocol (both directions are the same Dekker pattern):
//
//   publisher                          sleeper
//   store index (release)              store waiting = episode|1 (release)
//   fence(seq_cst)                     fence(seq_cst)
//   load waiting                       load index (acquire)
//   if parked and not yet rung: Ring() if nothing new: block on its eventfd
//
// The two seq_cst fences order each side's store before its load, so at least
// one side sees the other's store: either the sleeper sees the new index and
// does not sleep, or the publisher sees the word and rings. The publisher
// rings at most once per park episode (the episode in the word changes each
// time the sleeper parks, and never repeats: it is resumed across endpoints
// and 63 bits wide), and never while the sleeper is awake, so a busy
// pipeline makes no system call. The fence is one per publish, which is why
// batching pays.
//
// A ring is only a hint. The sleeper re-checks its ring after every wake-up
// and ends at its deadline however often it is rung, and a publisher does
// not trust the sleeper's word either: a peer that keeps announcing new
// episodes without consuming what it was rung for gets no further rings
// (RingConsumer), so it cannot make every publish a system call.
// ---------------------------------------------------------------------------

// ------------------------------- Producer ---------------------------------

absl::StatusOr<Producer> Producer::Attach(Segment segment, LaneBells bells, WaitOptions wait) {
  if (segment.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("a producer needs a read-write mapping");
  }
  if (bells.own == nullptr || bells.peer == nullptr || !bells.own->valid() ||
      !bells.peer->valid()) {
    return absl::InvalidArgumentError(
        "a producer needs its own and the consumer's doorbell, both valid eventfds");
  }
  absl::StatusOr<internal::LaneGeometry> geo = internal::ReadGeometry(segment);
  if (!geo.ok()) return geo.status();
  Producer p(std::move(segment), *geo, std::move(bells), wait);
  // Resume from the shared indices (zero on a fresh lane); they are
  // untrusted, so check them against each other before use.
  const uint64_t tail = Load(p.geo_.blocks->producer_index.tail, std::memory_order_relaxed);
  const uint64_t head = Load(p.geo_.blocks->consumer_index.head, std::memory_order_acquire);
  if (head > tail || tail - head > p.geo_.ring_bytes || (tail % kRecordAlign) != 0) {
    return absl::DataLossError(
        absl::StrCat("lane indices are inconsistent (head ", head, ", tail ", tail, ")"));
  }
  p.tail_ = p.published_tail_ = tail;
  p.cached_head_ = head;
  // A lane taken over from an earlier producer (a durable channel's server
  // side) continues its counters; they are statistics only.
  const ProducerCounters& was = p.geo_.blocks->producer_counters;
  p.frames_ = Load(was.frames, std::memory_order_relaxed);
  p.bytes_ = Load(was.bytes, std::memory_order_relaxed);
  p.backpressure_events_ = Load(was.backpressure_events, std::memory_order_relaxed);
  p.full_waits_ = Load(was.full_waits, std::memory_order_relaxed);
  p.dropped_frames_ = Load(was.dropped_frames, std::memory_order_relaxed);
  p.wakeups_sent_ = Load(was.wakeups_sent, std::memory_order_relaxed);
  p.wakeups_received_ = Load(was.wakeups_received, std::memory_order_relaxed);
  p.spin_ns_ = Load(was.spin_ns, std::memory_order_relaxed);
  p.spin_waits_ = Load(was.spin_waits, std::memory_order_relaxed);
  p.spin_wins_ = Load(was.spin_wins, std::memory_order_relaxed);
  p.wakeup_errors_ = Load(was.wakeup_errors, std::memory_order_relaxed);
  // Continue our side's park episodes where the previous endpoint stopped,
  // and say that we are not parked (a predecessor may have died parked).
  ProducerControl& me = p.geo_.blocks->producer_control;
  p.park_episode_ = Load(me.waiting, std::memory_order_relaxed) >> 1;
  Store(me.waiting, p.park_episode_ << 1, std::memory_order_relaxed);
  return p;
}

Producer::Producer(Segment segment, internal::LaneGeometry geo, LaneBells bells, WaitOptions wait)
    : segment_(std::move(segment)),
      geo_(geo),
      bells_(std::move(bells)),
      // A full ring is being drained: balanced may learn to spin up to the
      // whole budget here (wait_strategy.h, Waiter).
      waiter_(wait, absl::ToInt64Nanoseconds(wait.spin)),
      until_sample_(geo.sample_every) {}

Producer::~Producer() {
  if (segment_.valid() && !closed_) Close();
}

bool Producer::Fail(uint32_t code, std::string message) {
  if (!broken_) {
    broken_ = true;
    broken_message_ = std::move(message);
    Store(geo_.blocks->producer_counters.broken, code, std::memory_order_relaxed);
  }
  return false;
}

void Producer::DoorbellError(absl::Status s) {
  if (doorbell_status_.ok()) doorbell_status_ = std::move(s);
  Store(geo_.blocks->producer_counters.wakeup_errors, ++wakeup_errors_, std::memory_order_relaxed);
}

absl::Status Producer::status() const {
  if (broken_) return absl::DataLossError(absl::StrCat("lane broken: ", broken_message_));
  return absl::OkStatus();
}

bool Producer::PeerClosed() const {
  if (!segment_.valid()) return true;
  return Load(geo_.blocks->consumer_control.closed, std::memory_order_acquire) != 0 ||
         (Load(geo_.blocks->supervisor.closed_by, std::memory_order_acquire) &
          (kClosedConsumerGone | kClosedDeleted)) != 0;
}

bool Producer::RefreshHead() {
  // One load, validated, then used: a head that moved backwards, past what we
  // published, or off the record grid breaks the lane.
  const uint64_t head = Load(geo_.blocks->consumer_index.head, kIndexLoad);
  if (head < cached_head_ || head > published_tail_ || (head % kRecordAlign) != 0) {
    return Fail(kBadHead, absl::StrCat("consumer head ", head, " is outside [", cached_head_, ", ",
                                       published_tail_, "] or misaligned"));
  }
  cached_head_ = head;
  return true;
}

uint64_t Producer::NeededFor(uint64_t record_bytes) const {
  const uint64_t to_end = geo_.ring_bytes - (tail_ & geo_.mask);
  return record_bytes <= to_end ? record_bytes : to_end + record_bytes;
}

WriteResult Producer::CheckSpace(uint64_t record_bytes) {
  if (broken_) return WriteResult::kBroken;
  if (!RefreshHead()) return WriteResult::kBroken;
  return tail_ + NeededFor(record_bytes) - cached_head_ <= geo_.ring_bytes ? WriteResult::kOk
                                                                           : WriteResult::kFull;
}

WriteResult Producer::Claim(uint64_t record_bytes, uint64_t* position) {
  const uint64_t offset = tail_ & geo_.mask;
  const uint64_t to_end = geo_.ring_bytes - offset;
  const uint64_t needed = NeededFor(record_bytes);
  if (tail_ + needed - cached_head_ > geo_.ring_bytes) {
    // One shared-line read per "looks full", not per frame.
    if (!RefreshHead()) return WriteResult::kBroken;
    if (tail_ + needed - cached_head_ > geo_.ring_bytes) return WriteResult::kFull;
  }
  if (needed != record_bytes) {
    // The record does not fit before the end: pad to the end and wrap.
    internal::StoreHeader(geo_.ring + offset,
                          FrameHeader{static_cast<uint32_t>(to_end), kFrameFlagPadding});
    tail_ += to_end;
  }
  *position = tail_;
  return WriteResult::kOk;
}

Reservation Producer::ReserveSlow(size_t n) {
  if (broken_) return {WriteResult::kBroken, {}};
  if (peer_closed_) return {WriteResult::kClosed, {}};
  if (n > geo_.max_frame_bytes) return {WriteResult::kTooLarge, {}};
  const bool stamped = until_sample_ == 1;
  uint64_t pos = 0;
  WriteResult r = Claim(RecordBytes(n, stamped), &pos);
  if (r == WriteResult::kFull) {
    Store(geo_.blocks->producer_counters.backpressure_events, ++backpressure_events_,
          std::memory_order_relaxed);
    // Deferred commits the consumer cannot see can never be freed: a full
    // ring publishes them, so that whoever waits for space next (this
    // caller, or Write) is not waiting for itself.
    Publish();
    if (PeerClosed()) r = WriteResult::kClosed;
  }
  if (r != WriteResult::kOk) return {r, {}};
  reservation_open_ = true;
  reservation_stamped_ = stamped;
  reserved_bytes_ = n;
  std::byte* payload = geo_.ring + (pos & geo_.mask) + sizeof(FrameHeader) + (stamped ? 8 : 0);
  return {WriteResult::kOk, std::span<std::byte>(payload, n)};
}

void Producer::StampAndCount(uint64_t offset) {
  Store(*reinterpret_cast<uint64_t*>(geo_.ring + offset + sizeof(FrameHeader)), MonotonicNs(),
        std::memory_order_relaxed);
  until_sample_ = geo_.sample_every;
}

void Producer::RingConsumer(uint64_t waiting) {
  // Acquire: a consumer that announced this episode published its head
  // before it (release), so the head read below is at least that one.
  waiting = Load(geo_.blocks->consumer_control.waiting, std::memory_order_acquire);
  if (!WaiterParked(waiting) || waiting == last_rung_) return;
  // An honest consumer parks again only after it read what the previous
  // ring was for (its re-check after announcing sees that tail). One that
  // has not is flipping its word: it gets no ring, so it cannot make every
  // publish a system call.
  const uint64_t head = Load(geo_.blocks->consumer_index.head, std::memory_order_relaxed);
  if (last_rung_ != 0 && head < rung_tail_) return;
  last_rung_ = waiting;
  rung_tail_ = published_tail_;
  if (absl::Status s = bells_.peer->Notify(); !s.ok()) DoorbellError(std::move(s));
  Store(geo_.blocks->producer_counters.wakeups_sent, ++wakeups_sent_, std::memory_order_relaxed);
}

size_t Producer::TryWriteBatch(std::span<const std::span<const std::byte>> frames,
                               WriteResult* result) {
  size_t written = 0;
  WriteResult last = WriteResult::kOk;
  for (std::span<const std::byte> frame : frames) {
    Reservation r = Reserve(frame.size());
    if (r.result != WriteResult::kOk) {
      last = r.result;
      break;
    }
    if (!frame.empty()) std::memcpy(r.data.data(), frame.data(), frame.size());
    Commit(frame.size(), PublishMode::kDefer);
    ++written;
  }
  Publish();
  if (result != nullptr) *result = last;
  return written;
}

WriteResult Producer::Write(std::span<const std::byte> frame, absl::Time deadline) {
  return Write(frame, Deadline::FromTime(deadline));
}

WriteResult Producer::Write(std::span<const std::byte> frame, Deadline deadline) {
  for (;;) {
    const WriteResult r = TryWrite(frame);
    if (r != WriteResult::kFull) return r;
    switch (geo_.policy) {
      case BackpressurePolicy::kFailFast:
        return WriteResult::kFull;
      case BackpressurePolicy::kDrop:
        Store(geo_.blocks->producer_counters.dropped_frames, ++dropped_frames_,
              std::memory_order_relaxed);
        return WriteResult::kDropped;
      case BackpressurePolicy::kBlock:
        break;
    }
    // kOk means a validated head left room, so the next TryWrite succeeds:
    // this loop turns at most twice.
    const bool stamped = until_sample_ == 1;
    const WriteResult w = WaitForSpace(RecordBytes(frame.size(), stamped), deadline);
    if (w != WriteResult::kOk) return w;
  }
}

WriteResult Producer::WaitForSpace(uint64_t record_bytes, Deadline deadline) {
  Publish();  // never wait for a consumer that cannot see our deferred commits
  WriteResult space = WriteResult::kFull;
  const LaneBlocks& b = *geo_.blocks;
  // The spin also watches the close words (lines almost never written, so
  // they stay cached): a consumer that closes ends the spin, not the budget.
  // The waiter decides whether to spin at all (wait_strategy.h): a producer
  // blocked on a full ring follows the same strategy as a consumer.
  const int64_t budget = waiter_.SpinBudgetNs(Deadline::NowNs());
  const SpinOutcome spun = Spin(
      budget, deadline,
      [&] {
        space = CheckSpace(record_bytes);
        return space != WriteResult::kFull ||
               Load(b.consumer_control.closed, std::memory_order_relaxed) != 0 ||
               Load(b.supervisor.closed_by, std::memory_order_relaxed) != 0;
      },
      /*probes_per_check=*/64, waiter_.stop_on_long_yield());
  waiter_.Learn(budget, spun);
  if (budget > 0) CountSpin(spun.spun_ns, spun.ready);
  if (spun.ready) {
    if (space != WriteResult::kFull) return space;
    if (PeerClosed()) return WriteResult::kClosed;
  }
  if (space == WriteResult::kBroken) return space;
  ProducerControl& me = geo_.blocks->producer_control;
  const uint64_t need = std::min<uint64_t>(NeededFor(record_bytes), geo_.ring_bytes);
  for (;;) {
    FlushDeferredWakeups();  // we are about to sleep: pay what our consumers owe
    if (++park_episode_ >= (uint64_t{1} << 63)) park_episode_ = 1;
    Store(me.need_bytes, static_cast<uint32_t>(need), std::memory_order_relaxed);
    Store(me.waiting, (park_episode_ << 1) | 1, kParkStore);
    StoreLoadFence();  // pairs with Consumer::PublishHead
    auto unpark = [&] { Store(me.waiting, park_episode_ << 1, std::memory_order_relaxed); };
    space = CheckSpace(record_bytes);
    if (space != WriteResult::kFull) {
      unpark();
      return space;
    }
    if (PeerClosed()) {
      unpark();
      return WriteResult::kClosed;
    }
    if (deadline.Expired()) {
      unpark();
      return WriteResult::kTimeout;
    }
    Store(geo_.blocks->producer_counters.full_waits, ++full_waits_, std::memory_order_relaxed);
    absl::StatusOr<WakeReason> woke = bells_.own->Await(deadline);
    unpark();
    if (!woke.ok()) DoorbellError(woke.status());
    if (woke.ok() && *woke == WakeReason::kRung) {
      Store(geo_.blocks->producer_counters.wakeups_received, ++wakeups_received_,
            std::memory_order_relaxed);
    }
    // Whatever woke us (a ring, a flood, nothing), look at the ring, then
    // at the clock: a wake-up never extends the wait.
    space = CheckSpace(record_bytes);
    if (space != WriteResult::kFull) return space;
    if (PeerClosed()) return WriteResult::kClosed;
    if (!woke.ok() || deadline.Expired()) return WriteResult::kTimeout;
  }
}

void Producer::CountSpin(int64_t spun_ns, bool won) {
  ProducerCounters& c = geo_.blocks->producer_counters;
  spin_ns_ += static_cast<uint64_t>(std::max<int64_t>(spun_ns, 0));
  Store(c.spin_ns, spin_ns_, std::memory_order_relaxed);
  Store(c.spin_waits, ++spin_waits_, std::memory_order_relaxed);
  if (won) Store(c.spin_wins, ++spin_wins_, std::memory_order_relaxed);
}

void Producer::Leave() {
  if (closed_ || !segment_.valid()) return;
  reservation_open_ = false;  // never published: the next producer overwrites it
  Publish();
  closed_ = true;
}

void Producer::Close() {
  if (closed_ || !segment_.valid()) return;
  if (reservation_open_) Commit(0, PublishMode::kDefer);  // an empty frame; never a torn one
  Publish();
  closed_ = true;
  // Release: the consumer that sees `closed` also sees the final tail.
  Store(geo_.blocks->producer_control.closed, 1u, std::memory_order_release);
  StoreLoadFence();
  if (absl::Status s = bells_.peer->Notify(); !s.ok()) DoorbellError(std::move(s));
}

// ------------------------------ Supervisor --------------------------------

void SupervisorClose(const Segment& segment, uint32_t reason, const Doorbell* producer_bell,
                     const Doorbell* consumer_bell) {
  if (segment.valid() && segment.access() == Access::kReadWrite &&
      segment.size() >= kLaneHeaderBytes) {
    auto* blocks = reinterpret_cast<LaneBlocks*>(segment.data());
    // One atomic OR: two supervisor threads closing for different reasons
    // keep both (a load-then-store would lose one). Release: a side that sees
    // the bit sees what the supervisor did before.
    std::atomic_ref<uint32_t>(blocks->supervisor.closed_by)
        .fetch_or(reason, std::memory_order_release);
  }
  StoreLoadFence();
  if (producer_bell != nullptr && producer_bell->valid()) producer_bell->Ring();
  if (consumer_bell != nullptr && consumer_bell->valid()) consumer_bell->Ring();
}

absl::StatusOr<LaneSnapshot> Observe(const Segment& segment) {
  absl::StatusOr<internal::LaneGeometry> geo = internal::ReadGeometry(segment);
  if (!geo.ok()) return geo.status();
  const LaneBlocks& b = *geo->blocks;
  LaneSnapshot s;
  s.lane_id = Load(b.header.lane_id, std::memory_order_relaxed);
  s.ring_bytes = geo->ring_bytes;
  s.max_frame_bytes = geo->max_frame_bytes;
  const uint64_t head = Load(b.consumer_index.head, std::memory_order_relaxed);
  const uint64_t tail = Load(b.producer_index.tail, std::memory_order_relaxed);
  s.occupancy_bytes = tail >= head ? std::min(tail - head, geo->ring_bytes) : 0;
  // Field by field with relaxed loads of each field's own type: the writers
  // are live.
  auto r = [](const auto& field) { return Load(field, std::memory_order_relaxed); };
  const ProducerCounters& pc = b.producer_counters;
  s.producer.frames = r(pc.frames);
  s.producer.bytes = r(pc.bytes);
  s.producer.backpressure_events = r(pc.backpressure_events);
  s.producer.full_waits = r(pc.full_waits);
  s.producer.dropped_frames = r(pc.dropped_frames);
  s.producer.wakeups_sent = r(pc.wakeups_sent);
  s.producer.wakeups_received = r(pc.wakeups_received);
  s.producer.broken = r(pc.broken);
  s.producer.wakeup_errors = r(pc.wakeup_errors);
  s.producer.spin_ns = r(pc.spin_ns);
  s.producer.spin_waits = r(pc.spin_waits);
  s.producer.spin_wins = r(pc.spin_wins);
  const ConsumerCounters& cc = b.consumer_counters;
  s.consumer.frames = r(cc.frames);
  s.consumer.bytes = r(cc.bytes);
  s.consumer.empty_waits = r(cc.empty_waits);
  s.consumer.wakeups_sent = r(cc.wakeups_sent);
  s.consumer.wakeups_received = r(cc.wakeups_received);
  s.consumer.latency_count = r(cc.latency_count);
  s.consumer.latency_sum_ns = r(cc.latency_sum_ns);
  s.consumer.broken = r(cc.broken);
  s.consumer.wakeup_errors = r(cc.wakeup_errors);
  s.consumer.spin_ns = r(cc.spin_ns);
  s.consumer.spin_waits = r(cc.spin_waits);
  s.consumer.spin_wins = r(cc.spin_wins);
  for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
    s.consumer.latency_buckets[i] = r(cc.latency_buckets[i]);
  }
  s.producer_closed = r(b.producer_control.closed);
  s.consumer_closed = r(b.consumer_control.closed);
  s.producer_waiting = WaiterParked(r(b.producer_control.waiting)) ? 1 : 0;
  s.consumer_waiting = WaiterParked(r(b.consumer_control.waiting)) ? 1 : 0;
  s.supervisor_closed_by = r(b.supervisor.closed_by);
  return s;
}

double LatencyQuantileNs(std::span<const uint64_t, kLatencyBuckets> buckets, double q) {
  uint64_t total = 0;
  for (uint64_t b : buckets) total += b;
  if (total == 0) return 0;
  const double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(total);
  double seen = 0;
  for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
    const auto count = static_cast<double>(buckets[i]);
    if (count > 0 && seen + count >= rank) {
      const double lower = i == 0 ? 0.0 : static_cast<double>(LatencyBucketUpperNs(i - 1));
      // The open last bucket: report its lower bound rather than invent one.
      if (i + 1 == kLatencyBuckets) return lower;
      const auto upper = static_cast<double>(LatencyBucketUpperNs(i));
      return lower + (upper - lower) * ((rank - seen) / count);
    }
    seen += count;
  }
  return static_cast<double>(LatencyBucketUpperNs(kLatencyBuckets - 2));
}

}  // namespace shmlane::dataplane
