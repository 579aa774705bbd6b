// Lanes: single-producer single-consumer rings of variable-length frames in
// one sealed memfd, with eventfd doorbells that are rung only when the other
// side sleeps. This is the whole data path: no lock, no system call while the
// pipeline is busy, no read-modify-write atomic shared between cores.
//
//   auto seg = CreateLaneSegment({.ring_bytes = 1 << 20});       // creator
//   auto producer = Producer::Attach(std::move(seg_for_producer), bells);
//   producer->TryWrite(bytes);                                    // kOk, kFull, ...
//   auto consumer = Consumer::Attach(std::move(seg_for_consumer), bells);
//   consumer->Read(buffer, &n, absl::Now() + absl::Seconds(1));
//
// Blocking calls (Write, Read, WaitReadable) end by their deadline whatever
// the peer does: a deadline is converted once to CLOCK_MONOTONIC
// (dataplane/deadline.h), a wake-up is only a hint to look at the ring again,
// and the deadline is checked after every one (docs/architecture.md,
// "Waiting").
//
// Shared memory is untrusted: the consumer never trusts the producer's tail or
// a frame header, the producer never trusts the consumer's head. Any
// inconsistency marks the lane broken (kBroken, then status() is DataLoss).
//
// Thread safety: a Producer is used by one thread at a time, so is a
// Consumer; they may live in different processes. Observe() and
// SupervisorClose() may run anywhere at any time.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/deadline.h"
#include "dataplane/doorbell.h"
#include "dataplane/internal/check.h"
#include "dataplane/internal/shm_access.h"
#include "dataplane/lane_layout.h"
#include "dataplane/segment.h"
#include "dataplane/wait_strategy.h"

namespace shmlane::dataplane {

inline constexpr uint64_t kMinRingBytes = 4096;
inline constexpr uint64_t kMaxRingBytes = uint64_t{1} << 30;

// What a lane's creator chooses. The frame limit is bounded by half the ring
// (so a padding record plus one frame always fit an empty ring).
struct LaneOptions {
  uint64_t ring_bytes = 1 << 20;        // power of two in [kMinRingBytes, kMaxRingBytes]
  uint32_t max_frame_bytes = 64 << 10;  // <= MaxFrameBytesFor(ring_bytes)
  BackpressurePolicy policy = BackpressurePolicy::kBlock;
  uint32_t sample_every = 64;  // one frame in N carries a send timestamp; 0 = off
  uint64_t lane_id = 0;        // for observers
};

// Largest payload a ring of `ring_bytes` can carry.
constexpr uint64_t MaxFrameBytesFor(uint64_t ring_bytes) { return ring_bytes / 2 - 16; }

// Checks options; InvalidArgument says which field is wrong and why.
absl::Status ValidateLaneOptions(const LaneOptions& options);

// Creates, initializes and seals a lane segment (header page + ring).
absl::StatusOr<Segment> CreateLaneSegment(const LaneOptions& options);

// How a blocking call waits (WaitOptions, WaitPreference) is in
// dataplane/wait_strategy.h: by default (kBalanced) a call spins only when
// spinning is likely to pay and no CPU quota is under pressure, then
// announces itself in the waiter flag and parks on its eventfd.

enum class [[nodiscard]] WriteResult{
    kOk,        // published (or reserved, for Reserve)
    kFull,      // not enough space now (and, for Write, policy kFailFast)
    kTooLarge,  // larger than the lane's max_frame_bytes
    kClosed,    // the consumer or supervisor closed the lane
    kBroken,    // the lane is corrupt; status() says why
    kTimeout,   // Write: deadline passed while blocked on a full ring
    kDropped,   // Write: ring full under kDrop; the frame was dropped and counted
};

enum class [[nodiscard]] ReadResult{
    kOk,        // a frame was read
    kEmpty,     // nothing to read now
    kClosed,    // the producer closed and every committed frame was read
    kBroken,    // the lane is corrupt; status() says why
    kTimeout,   // Read: deadline passed with nothing to read
    kTooSmall,  // TryRead/Read: the buffer is smaller than the next frame (kept)
};

const char* ToString(WriteResult r);
const char* ToString(ReadResult r);

// The fds a side needs besides the segment: its own doorbell (it parks on it)
// and the peer's (it rings it when it sees the peer parked). Both must be
// valid (Attach refuses a default-constructed Doorbell). A consumer's own
// doorbell should be one that only this lane's producer holds (see LaneSet).
struct LaneBells {
  std::shared_ptr<const Doorbell> own;
  std::shared_ptr<const Doorbell> peer;
};

namespace internal {
struct LaneGeometry {
  std::byte* base = nullptr;  // start of the mapping
  LaneBlocks* blocks = nullptr;
  std::byte* ring = nullptr;
  uint64_t ring_bytes = 0;
  uint64_t mask = 0;
  uint32_t max_frame_bytes = 0;
  uint32_t sample_every = 0;
  BackpressurePolicy policy = BackpressurePolicy::kBlock;
};
// Validates the header against the mapping's real size; DataLoss if not a lane.
absl::StatusOr<LaneGeometry> ReadGeometry(const Segment& segment);

constexpr uint64_t AlignUp(uint64_t n) {
  return (n + kRecordAlign - 1) & ~uint64_t{kRecordAlign - 1};
}
// Bytes a record of `payload` bytes occupies in the ring.
constexpr uint64_t RecordBytes(uint64_t payload, bool stamped) {
  return sizeof(FrameHeader) + (stamped ? 8 : 0) + AlignUp(payload);
}
// CLOCK_MONOTONIC in nanoseconds (the send timestamp of sampled frames).
uint64_t MonotonicNs();

// Frame headers are read and written as one 8-byte word with relaxed atomic
// accesses: the peer may rewrite a header at any time, and a plain copy of
// memory another process writes is a data race. Records are 8-aligned.
static_assert(std::endian::native == std::endian::little, "FrameHeader word layout");
inline FrameHeader LoadHeader(const std::byte* at) {
  const uint64_t w = Load(*reinterpret_cast<const uint64_t*>(at), std::memory_order_relaxed);
  return FrameHeader{static_cast<uint32_t>(w), static_cast<uint32_t>(w >> 32)};
}
inline void StoreHeader(std::byte* at, FrameHeader h) {
  Store(*reinterpret_cast<uint64_t*>(at), uint64_t{h.length} | (uint64_t{h.flags} << 32),
        std::memory_order_relaxed);
}

// A wake-up a consumer owes a parked producer whose frame already fits but
// below the low watermark (lane.cc, RingProducer). It is paid when the
// consumer goes idle, or when any endpoint of the same thread parks.
struct WakeDebt;

// memcpy for payloads: sizes up to 64 bytes are copied inline with two
// overlapping fixed-size moves (no call, no dispatch), larger ones by libc.
inline void CopyPayload(std::byte* dst, const std::byte* src, size_t n) {
  if (n >= 16 && n <= 64) {
    if (n >= 32) {
      std::memcpy(dst, src, 32);
      std::memcpy(dst + n - 32, src + n - 32, 32);
    } else {
      std::memcpy(dst, src, 16);
      std::memcpy(dst + n - 16, src + n - 16, 16);
    }
  } else if (n >= 8 && n < 16) {
    std::memcpy(dst, src, 8);
    std::memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n != 0) {
    std::memcpy(dst, src, n);
  }
}
}  // namespace internal

// A reserved, not yet committed region for zero-copy writes.
struct Reservation {
  WriteResult result;
  std::span<std::byte> data;  // exactly the requested size when result == kOk
};

enum class PublishMode { kNow, kDefer };

class Producer {
 public:
  static absl::StatusOr<Producer> Attach(Segment segment, LaneBells bells,
                                         WaitOptions wait = WaitOptions());

  Producer(Producer&&) noexcept = default;
  Producer& operator=(Producer&&) noexcept = default;
  ~Producer();

  // Copies one frame and publishes it. Never blocks. Returns kClosed once a
  // publish has seen that the consumer or the supervisor closed the lane.
  WriteResult TryWrite(std::span<const std::byte> frame);

  // Copies one frame and publishes it, applying the lane's backpressure
  // policy when the ring is full: kBlock waits until `deadline` (kTimeout),
  // kFailFast returns kFull, kDrop returns kDropped after counting the drop.
  WriteResult Write(std::span<const std::byte> frame, absl::Time deadline = absl::InfiniteFuture());
  WriteResult Write(std::span<const std::byte> frame, Deadline deadline);

  // Copies as many leading frames as fit and publishes them with one release
  // store. Returns how many were written; *result says why it stopped early.
  size_t TryWriteBatch(std::span<const std::span<const std::byte>> frames, WriteResult* result);

  // Zero-copy: reserves `n` contiguous bytes. Only one reservation is open at
  // a time; it must be committed before the next Reserve or TryWrite.
  Reservation Reserve(size_t n);
  // Commits the open reservation with `used` <= reserved bytes. With kDefer
  // the frame becomes visible at the next Publish() or kNow commit, or as
  // soon as the producer finds the ring full (Reserve, TryWrite, Write): the
  // consumer could never free space it cannot see, so a full ring publishes.
  void Commit(size_t used, PublishMode mode = PublishMode::kNow);
  // Makes every committed frame visible to the consumer (one release store).
  void Publish();
  // Frames committed with kDefer that Publish() has not made visible yet:
  // the producer is inside a batch.
  bool has_unpublished() const { return tail_ != published_tail_; }

  // Marks the producer side closed; the consumer drains, then sees kClosed.
  void Close();
  // Lets go of the lane without closing it (a durable channel's server that
  // exits, for its reply lanes): publishes what was committed, drops an open
  // reservation, and sets no flag; the next producer attached to the segment
  // continues from the published tail. The destructor then does nothing more.
  void Leave();

  // True once the consumer or the supervisor closed the lane.
  bool PeerClosed() const;
  // OK, or DataLoss describing the corruption that broke the lane.
  absl::Status status() const;
  // OK, or the first doorbell failure (a ring that could not be written, a
  // wait that could not block); also counted in ProducerCounters::wakeup_errors.
  const absl::Status& doorbell_status() const { return doorbell_status_; }
  const Segment& segment() const { return segment_; }
  uint32_t max_frame_bytes() const { return geo_.max_frame_bytes; }
  BackpressurePolicy policy() const { return geo_.policy; }
  // How this producer waits on a full ring.
  const WaitOptions& wait_options() const { return waiter_.options(); }

 private:
  Producer(Segment segment, internal::LaneGeometry geo, LaneBells bells, WaitOptions wait);
  // Space check; refreshes the cached head at most once. Returns kOk with
  // *offset set, or kFull/kBroken.
  WriteResult Claim(uint64_t record_bytes, uint64_t* position);
  // Loads the consumer's head once, validates it, caches it. False: broken.
  bool RefreshHead();
  // Free bytes a record needs at the current tail (padding to the end first
  // when it does not fit before it).
  uint64_t NeededFor(uint64_t record_bytes) const;
  // kOk when `record_bytes` fit now (by a freshly validated head), else kFull or kBroken.
  WriteResult CheckSpace(uint64_t record_bytes);
  Reservation ReserveSlow(size_t n);
  void StampAndCount(uint64_t offset);
  WriteResult WaitForSpace(uint64_t record_bytes, Deadline deadline);
  void RingConsumer(uint64_t waiting);
  void CountSpin(int64_t spun_ns, bool won);
  void DoorbellError(absl::Status s);
  bool Fail(uint32_t code, std::string message);

  Segment segment_;
  internal::LaneGeometry geo_;
  LaneBells bells_;
  Waiter waiter_;
  uint64_t tail_ = 0;            // local write position (ahead of the published one)
  uint64_t published_tail_ = 0;  // last value stored to shm
  uint64_t cached_head_ = 0;     // last validated head read from shm
  uint64_t reserved_bytes_ = 0;  // payload size of the open reservation
  bool reservation_open_ = false;
  bool reservation_stamped_ = false;
  bool broken_ = false;
  bool closed_ = false;
  bool peer_closed_ = false;   // the consumer or supervisor closed the lane
  uint32_t until_sample_ = 0;  // frames left before the next timestamped one
  uint64_t park_episode_ = 0;  // our last park episode (resumed from shm at Attach)
  uint64_t last_rung_ = 0;     // consumer waiter word we last rang for
  uint64_t rung_tail_ = 0;     // our published tail when we last rang the consumer
  // Local copies of our counters: stored to shm, read back only at Attach
  // (a lane taken over continues its totals).
  uint64_t frames_ = 0;
  uint64_t bytes_ = 0;
  uint64_t backpressure_events_ = 0;
  uint64_t full_waits_ = 0;
  uint64_t dropped_frames_ = 0;
  uint64_t wakeups_sent_ = 0;
  uint64_t wakeups_received_ = 0;
  uint64_t spin_ns_ = 0;
  uint64_t spin_waits_ = 0;
  uint64_t spin_wins_ = 0;
  uint32_t wakeup_errors_ = 0;
  std::string broken_message_;
  absl::Status doorbell_status_;
};

// A frame returned by Peek(); data points into shared memory and is valid
// until Release(). The producer cannot legally touch it, but a hostile one
// could: treat its contents as untrusted bytes.
struct PeekResult {
  ReadResult result;
  std::span<const std::byte> data;
};

class Consumer {
 public:
  static absl::StatusOr<Consumer> Attach(Segment segment, LaneBells bells,
                                         WaitOptions wait = WaitOptions());

  Consumer(Consumer&&) noexcept = default;
  Consumer& operator=(Consumer&&) noexcept = default;
  ~Consumer();

  // Zero-copy: the next frame, without consuming it. Never blocks.
  PeekResult Peek();
  // Consumes the frame returned by the last Peek() and frees its space.
  void Release();

  // Copies the next frame into `out`; *length receives its size (also on
  // kTooSmall, where the frame stays). Never blocks.
  ReadResult TryRead(std::span<std::byte> out, size_t* length);
  // As TryRead, but waits (spin, then park) until a frame comes, the lane
  // closes, or `deadline` passes (kTimeout).
  ReadResult Read(std::span<std::byte> out, size_t* length,
                  absl::Time deadline = absl::InfiniteFuture());
  ReadResult Read(std::span<std::byte> out, size_t* length, Deadline deadline);

  // Calls fn for up to `max_frames` frames in order, then frees their space
  // with one release store. Returns the count; *result (if given) is kOk when
  // it stopped at max_frames, else why it stopped (kEmpty, kClosed, kBroken).
  // `fn` is any callable taking std::span<const std::byte>; one that returns
  // bool keeps the frame it returns false for (not consumed: it stays
  // peeked, Release() frees it) and stops the batch (*result kOk).
  template <typename Fn>
  size_t Drain(Fn&& fn, size_t max_frames, ReadResult* result = nullptr);

  // Blocks until a frame is readable, the lane closes, or the deadline
  // passes: kOk, kClosed, kBroken or kTimeout. Spins first, then parks.
  ReadResult WaitReadable(absl::Time deadline);
  ReadResult WaitReadable(Deadline deadline);

  // Marks the consumer side closed; a producer blocked on a full ring wakes.
  void Close();
  // Lets go of the lane without closing it (a durable channel's consumer
  // that exits): publishes what was released, leaves the frame of the last
  // Peek() unconsumed, and sets no flag; the next consumer attached to the
  // segment continues from there. The destructor then does nothing more.
  void Leave();

  // The lane position (bytes written before it) of the next frame, i.e. of
  // the one the last Peek() returned, or of the one `Drain`'s fn is given.
  // Positions grow with every frame and survive a change of consumer, so
  // (lane, position) names a frame for deduplication.
  uint64_t position() const { return head_; }

  absl::Status status() const;
  // OK, or the first doorbell failure; also counted in
  // ConsumerCounters::wakeup_errors.
  const absl::Status& doorbell_status() const { return doorbell_status_; }
  const Segment& segment() const { return segment_; }
  uint32_t max_frame_bytes() const { return geo_.max_frame_bytes; }
  // How this consumer waits for frames.
  const WaitOptions& wait_options() const { return waiter_.options(); }
  // The doorbell this consumer parks on (LaneBells::own).
  const std::shared_ptr<const Doorbell>& own_bell() const { return bells_.own; }

 private:
  friend class LaneSet;
  Consumer(Segment segment, internal::LaneGeometry geo, LaneBells bells, WaitOptions wait);
  // Loads, validates and caches the producer's tail. kOk if data is there.
  ReadResult Refresh();
  ReadResult PeekAt(PeekResult* out);  // the general (slow) path of Peek
  void Advance();
  void PublishHead();
  void RingProducer(uint64_t waiting);
  void RingProducerNow(uint64_t waiting, uint64_t tail);
  // Pays a wake-up this consumer owes (it went idle).
  void PayDebt();
  void RecordLatency(const std::byte* stamp);
  void CountPark();
  // Counts spin time, a spin episode and a won spin (LaneSet attributes each
  // of its spins to one lane, lane_layout.h).
  void CountSpin(int64_t spun_ns, bool episode, bool won);
  bool ProducerClosed() const;
  // Waiter protocol for parking (used by Read and LaneSet): announce, then
  // re-check. Returns kOk/kClosed/kBroken if there is no need to sleep.
  ReadResult PrepareToPark();
  void FinishPark(bool rung);
  void DoorbellError(absl::Status s);
  bool Fail(uint32_t code, std::string message);

  Segment segment_;
  internal::LaneGeometry geo_;
  LaneBells bells_;
  Waiter waiter_;
  uint64_t head_ = 0;            // local read position
  uint64_t published_head_ = 0;  // last value stored to shm
  uint64_t cached_tail_ = 0;     // last validated tail read from shm
  uint64_t peeked_bytes_ = 0;    // record size of the frame returned by Peek, 0 if none
  uint64_t peeked_payload_ = 0;  // its payload size
  bool broken_ = false;
  bool closed_ = false;
  uint64_t park_episode_ = 0;  // our last park episode (resumed from shm at Attach)
  uint64_t last_rung_ = 0;     // producer waiter word we last rang for
  uint64_t rang_at_tail_ = 0;  // the producer's tail when we last rang it
  uint64_t rang_at_head_ = 0;  // our head then
  std::shared_ptr<internal::WakeDebt> debt_;
  // Local copies of our counters: stored to shm, read back only at Attach
  // (a lane taken over continues its totals).
  uint64_t frames_ = 0;
  uint64_t bytes_ = 0;
  uint64_t empty_waits_ = 0;
  uint64_t wakeups_sent_ = 0;
  uint64_t wakeups_received_ = 0;
  uint64_t latency_count_ = 0;
  uint64_t latency_sum_ns_ = 0;
  uint64_t latency_buckets_[kLatencyBuckets] = {};
  uint64_t spin_ns_ = 0;
  uint64_t spin_waits_ = 0;
  uint64_t spin_wins_ = 0;
  uint32_t wakeup_errors_ = 0;
  std::string broken_message_;
  absl::Status doorbell_status_;
};

// Rings every parked producer that consumers used by this thread owe a
// wake-up (their frame fits, the ring is below its low watermark). Every park
// of this library calls it first; an application that blocks this thread
// elsewhere (a mutex, a socket) while it holds consumers calls it before.
void FlushDeferredWakeups();

// Supervisor side (the daemon, or a test playing it): marks the lane closed
// for `reason` (kClosed* bits, OR-ed in atomically: concurrent closes keep
// every reason) and rings both doorbells so that a parked side returns
// kClosed at once (measured: well under a millisecond).
void SupervisorClose(const Segment& segment, uint32_t reason, const Doorbell* producer_bell,
                     const Doorbell* consumer_bell);

// A consistent-enough snapshot of a lane's counters, for observers that map
// the segment read-only. Fields are read with relaxed loads; sizes are from
// the validated header.
struct LaneSnapshot {
  uint64_t lane_id = 0;
  uint64_t ring_bytes = 0;
  uint32_t max_frame_bytes = 0;
  uint64_t occupancy_bytes = 0;  // tail - head, clamped to [0, ring_bytes]
  ProducerCounters producer{};
  ConsumerCounters consumer{};
  uint32_t producer_closed = 0;
  uint32_t consumer_closed = 0;
  uint32_t supervisor_closed_by = 0;
  uint32_t producer_waiting = 0;
  uint32_t consumer_waiting = 0;
};
absl::StatusOr<LaneSnapshot> Observe(const Segment& segment);

// Estimates the q-quantile (0 < q <= 1) in nanoseconds of a latency histogram
// in the ConsumerCounters format, interpolating linearly inside the log2
// bucket that holds it (so the answer is within a factor of two). Returns 0
// for an empty histogram.
double LatencyQuantileNs(std::span<const uint64_t, kLatencyBuckets> buckets, double q);

// ---------------------------------------------------------------------------
// Inline fast paths. Each handles the common case (room before the ring's
// end, a plain frame, nobody parked) in a few instructions and leaves
// everything else (wrap, full, sampling, corruption, wake-ups) to lane.cc.
// ---------------------------------------------------------------------------

inline Reservation Producer::Reserve(size_t n) {
  SHMLANE_CHECK(!reservation_open_);
  const bool stamped = until_sample_ == 1;
  const uint64_t record = internal::RecordBytes(n, stamped);
  const uint64_t offset = tail_ & geo_.mask;
  if (n <= geo_.max_frame_bytes && !broken_ && !peer_closed_ &&
      record <= geo_.ring_bytes - offset && tail_ + record - cached_head_ <= geo_.ring_bytes)
      [[likely]] {
    reservation_open_ = true;
    reservation_stamped_ = stamped;
    reserved_bytes_ = n;
    return {WriteResult::kOk,
            std::span<std::byte>(geo_.ring + offset + sizeof(FrameHeader) + (stamped ? 8 : 0), n)};
  }
  return ReserveSlow(n);
}

inline void Producer::Commit(size_t used, PublishMode mode) {
  SHMLANE_CHECK(reservation_open_ && used <= reserved_bytes_);
  reservation_open_ = false;
  const uint64_t offset = tail_ & geo_.mask;
  FrameHeader header{static_cast<uint32_t>(used), 0};
  if (reservation_stamped_) [[unlikely]] {
    StampAndCount(offset);
    header.flags = kFrameFlagTimestamp;
  } else if (until_sample_ > 1) {
    --until_sample_;
  }
  internal::StoreHeader(geo_.ring + offset, header);
  tail_ += internal::RecordBytes(used, reservation_stamped_);
  ++frames_;
  bytes_ += used;
  if (mode == PublishMode::kNow) Publish();
}

inline void Producer::Publish() {
  if (tail_ == published_tail_ || broken_) return;
  // Release: the records (and padding) below tail_ are visible before it.
  internal::Store(geo_.blocks->producer_index.tail, tail_, internal::kIndexStore);
  published_tail_ = tail_;
  ProducerCounters& c = geo_.blocks->producer_counters;
  internal::Store(c.frames, frames_, std::memory_order_relaxed);
  internal::Store(c.bytes, bytes_, std::memory_order_relaxed);
  // Wake-up protocol (lane.cc): the fence orders the tail store before the
  // load of the consumer's waiting flag.
  internal::StoreLoadFence();
  const uint64_t waiting =
      internal::Load(geo_.blocks->consumer_control.waiting, internal::kFlagOrder);
  if (WaiterParked(waiting) && waiting != last_rung_) [[unlikely]]
    RingConsumer(waiting);
  // Two loads of lines that are almost never written (so they stay in our
  // cache): a producer learns that its consumer is gone at its next publish,
  // not only when the ring fills.
  if (internal::Load(geo_.blocks->consumer_control.closed, std::memory_order_relaxed) != 0 ||
      internal::Load(geo_.blocks->supervisor.closed_by, std::memory_order_relaxed) != 0)
      [[unlikely]] {
    peer_closed_ = PeerClosed();
  }
}

inline WriteResult Producer::TryWrite(std::span<const std::byte> frame) {
  Reservation r = Reserve(frame.size());
  if (r.result != WriteResult::kOk) [[unlikely]]
    return r.result;
  internal::CopyPayload(r.data.data(), frame.data(), frame.size());
  Commit(frame.size(), PublishMode::kNow);
  return WriteResult::kOk;
}

inline PeekResult Consumer::Peek() {
  if (head_ == cached_tail_ && !broken_) {
    // One acquire load of the producer's line per batch of frames. A tail
    // that is unchanged or fails the cheap checks goes to the slow path,
    // which re-reads and either reports empty/closed or marks the lane broken.
    const uint64_t tail = internal::Load(geo_.blocks->producer_index.tail, internal::kIndexLoad);
    if (tail > head_ && tail - head_ <= geo_.ring_bytes && tail % kRecordAlign == 0) {
      cached_tail_ = tail;
    }
  }
  if (head_ != cached_tail_ && !broken_) [[likely]] {
    const uint64_t offset = head_ & geo_.mask;
    const FrameHeader h = internal::LoadHeader(geo_.ring + offset);  // one load; checked before use
    const uint64_t record = internal::RecordBytes(h.length, false);
    if (h.flags == 0 && h.length <= geo_.max_frame_bytes && record <= cached_tail_ - head_ &&
        record <= geo_.ring_bytes - offset) [[likely]] {
      peeked_bytes_ = record;
      peeked_payload_ = h.length;
      return {ReadResult::kOk,
              std::span<const std::byte>(geo_.ring + offset + sizeof(FrameHeader), h.length)};
    }
  }
  PeekResult out{ReadResult::kEmpty, {}};
  out.result = PeekAt(&out);
  return out;
}

inline void Consumer::Advance() {
  head_ += peeked_bytes_;
  ++frames_;
  bytes_ += peeked_payload_;
  peeked_bytes_ = 0;
}

inline void Consumer::PublishHead() {
  if (head_ == published_head_) return;
  // Release: our reads of the freed records happen before the producer may
  // overwrite them.
  internal::Store(geo_.blocks->consumer_index.head, head_, internal::kIndexStore);
  published_head_ = head_;
  ConsumerCounters& c = geo_.blocks->consumer_counters;
  internal::Store(c.frames, frames_, std::memory_order_relaxed);
  internal::Store(c.bytes, bytes_, std::memory_order_relaxed);
  // Wake-up protocol: pairs with the fence in Producer::WaitForSpace.
  internal::StoreLoadFence();
  const uint64_t waiting =
      internal::Load(geo_.blocks->producer_control.waiting, internal::kFlagOrder);
  if (WaiterParked(waiting) && waiting != last_rung_) [[unlikely]]
    RingProducer(waiting);
}

inline void Consumer::Release() {
  if (peeked_bytes_ == 0) return;
  Advance();
  PublishHead();
}

inline ReadResult Consumer::TryRead(std::span<std::byte> out, size_t* length) {
  PeekResult p = Peek();
  if (p.result != ReadResult::kOk) return p.result;
  *length = p.data.size();
  if (p.data.size() > out.size()) [[unlikely]]
    return ReadResult::kTooSmall;
  internal::CopyPayload(out.data(), p.data.data(), p.data.size());
  Release();
  return ReadResult::kOk;
}

template <typename Fn>
size_t Consumer::Drain(Fn&& fn, size_t max_frames, ReadResult* result) {
  size_t n = 0;
  ReadResult last = ReadResult::kOk;
  while (n < max_frames) {
    PeekResult p = Peek();
    last = p.result;
    if (last != ReadResult::kOk) break;
    if constexpr (std::is_same_v<std::invoke_result_t<Fn, std::span<const std::byte>>, bool>) {
      if (!fn(p.data)) break;  // kept: stays peeked
    } else {
      fn(p.data);
    }
    Advance();
    ++n;
  }
  PublishHead();  // one release store for the whole batch
  if (result != nullptr) *result = last;
  return n;
}

}  // namespace shmlane::dataplane
