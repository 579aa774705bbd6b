// The byte layout of a lane segment: the shared-memory contract between a
// producer, a consumer and an observer (the daemon), possibly compiled from
// different versions of this file. docs/shm_layout.md has the same table.
//
//   offset  size  block                 written by
//   0       128   LaneHeader            creator (before the fd is shared)
//   128     128   ProducerIndex         producer: tail
//   256     128   ProducerControl       producer: waiting, closed, need_bytes
//   384     128   ProducerCounters      producer: counters
//   512     128   ConsumerIndex         consumer: head
//   640     128   ConsumerControl       consumer: waiting, closed
//   768     384   ConsumerCounters      consumer: counters, latency histogram
//   1152    128   SupervisorControl     supervisor (daemon): closed_by
//   4096    R     data area (ring)      producer writes records, consumer reads
//
// Each field has exactly one writer. Blocks are 128 bytes apart so that the
// adjacent-line prefetcher does not couple a hot index with a neighbour.
// Every value read from a block the reader does not own is untrusted: it is
// loaded once, validated, and only then used (lane.cc).
//
// Records in the data area are 8-byte aligned: an 8-byte FrameHeader, an
// optional 8-byte send timestamp (kFrameFlagTimestamp), then the payload
// padded to 8. A record never wraps: when one does not fit before the end of
// the ring, the producer fills the rest with a padding record
// (kFrameFlagPadding, length = bytes to the end) and starts at offset 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shmlane::dataplane {

inline constexpr uint64_t kLaneMagic = 0x314e414c4d485300ULL;  // "\0SHMLAN1", little-endian
// Major changes break compatibility (readers reject them); minor ones only
// append fields in reserved space.
// 2: 64-bit waiter words that carry the park episode (1.x had 32-bit flags),
// need_bytes, wakeup_errors.
// 2.1: spin_ns, spin_waits, spin_wins in both counter blocks (what waiting
// costs: dataplane/wait_strategy.h); zero from 2.0 writers.
inline constexpr uint16_t kLayoutMajor = 2;
inline constexpr uint16_t kLayoutMinor = 1;
inline constexpr uint32_t kLaneHeaderBytes = 4096;  // data area starts here
inline constexpr uint32_t kRecordAlign = 8;
inline constexpr uint32_t kLatencyBuckets = 32;

// Backpressure policy of a lane, chosen by the lane's creator.
enum class BackpressurePolicy : uint32_t {
  kBlock = 1,     // Write() waits for space until its deadline.
  kFailFast = 2,  // Write() returns kFull at once.
  kDrop = 3,      // Write() drops the frame and counts it.
};

// Frame header flags.
inline constexpr uint32_t kFrameFlagPadding = 1u << 0;    // skip to end of ring
inline constexpr uint32_t kFrameFlagTimestamp = 1u << 1;  // 8-byte send time follows
inline constexpr uint32_t kFrameFlagsKnown = kFrameFlagPadding | kFrameFlagTimestamp;

// Precedes every record. Written by the producer before it publishes the tail
// that covers it; read by the consumer after an acquire load of that tail.
struct FrameHeader {
  uint32_t length;  // payload bytes; for padding, the whole padding record's bytes
  uint32_t flags;   // kFrameFlag*
};
static_assert(sizeof(FrameHeader) == 8);
static_assert(std::is_standard_layout_v<FrameHeader>);

// Immutable after creation. The creator fills every field, then stores
// `version` last with release order; a reader that sees the right magic and
// version may trust nothing else here without checking it against the
// segment's real size (MapLane in lane.cc).
struct alignas(128) LaneHeader {
  uint64_t magic;            // kLaneMagic
  uint32_t version;          // (kLayoutMajor << 16) | kLayoutMinor, written last
  uint32_t header_bytes;     // offset of the data area (kLaneHeaderBytes)
  uint64_t ring_bytes;       // size of the data area, a power of two
  uint32_t max_frame_bytes;  // largest payload a producer may write
  uint32_t policy;           // BackpressurePolicy
  uint32_t sample_every;     // one frame in N carries a send timestamp; 0 = off
  uint32_t reserved0;
  uint64_t created_unix_ns;  // creation time, for observers
  uint64_t lane_id;          // creator-assigned id, for observers
  uint8_t reserved[128 - 56];
};
static_assert(sizeof(LaneHeader) == 128);
static_assert(offsetof(LaneHeader, magic) == 0);
static_assert(offsetof(LaneHeader, version) == 8);
static_assert(offsetof(LaneHeader, header_bytes) == 12);
static_assert(offsetof(LaneHeader, ring_bytes) == 16);
static_assert(offsetof(LaneHeader, max_frame_bytes) == 24);
static_assert(offsetof(LaneHeader, policy) == 28);
static_assert(offsetof(LaneHeader, sample_every) == 32);
static_assert(offsetof(LaneHeader, created_unix_ns) == 40);
static_assert(offsetof(LaneHeader, lane_id) == 48);

// The producer's published position. `tail` counts bytes ever written (it is
// never masked): release-stored after the records it covers are written.
struct alignas(128) ProducerIndex {
  uint64_t tail;
  uint8_t reserved[120];
};
static_assert(sizeof(ProducerIndex) == 128);
static_assert(offsetof(ProducerIndex, tail) == 0);

// A waiter word (ProducerControl::waiting, ConsumerControl::waiting) is
// (episode << 1) | parked: bit 0 is set while its owner is parked (or about
// to park) and `episode` counts the owner's parks over the life of the lane.
// A new endpoint resumes the count from the word its predecessor left, so a
// re-attached side never repeats an episode its peer already rang for, and
// 2^63 episodes never wrap. The owner stores it with release order before
// its StoreLoad fence (lane.cc, "Wake-up protocol"); the peer only reads it.
constexpr bool WaiterParked(uint64_t word) { return (word & 1) != 0; }

// Rarely written producer state, read by the consumer after it frees space
// and when it finds the ring empty.
struct alignas(128) ProducerControl {
  uint64_t waiting;     // waiter word: the producer parked on a full ring
  uint32_t closed;      // 1 once the producer closed cleanly (release)
  uint32_t need_bytes;  // while parked: free bytes its frame needs (relaxed, before `waiting`)
  uint8_t reserved[112];
};
static_assert(sizeof(ProducerControl) == 128);
static_assert(offsetof(ProducerControl, waiting) == 0);
static_assert(offsetof(ProducerControl, closed) == 8);
static_assert(offsetof(ProducerControl, need_bytes) == 12);

// Why an endpoint found its lane corrupt: the value of ProducerCounters::broken
// (written by the producer) and ConsumerCounters::broken (by the consumer);
// zero while the lane is sound. Observers (the daemon's exporter) read them.
enum LaneBrokenCode : uint32_t {
  kBadTail = 1,         // the producer's tail moved backwards, too far, or off the grid
  kBadHead = 2,         // the consumer's head did
  kBadFrameLength = 3,  // a frame claims more than max_frame_bytes or than was published
  kBadFrameFlags = 4,   // unknown flag bits in a frame header
  kBadPadding = 5,      // a padding record that does not end the ring
};

// Producer counters: plain single-writer values, relaxed stores; observers
// read them with relaxed loads and may see a slightly stale set.
struct alignas(128) ProducerCounters {
  uint64_t frames;               // frames published
  uint64_t bytes;                // payload bytes published
  uint64_t backpressure_events;  // writes that found the ring full
  uint64_t full_waits;           // times the producer parked on a full ring
  uint64_t dropped_frames;       // frames dropped under kDrop
  uint64_t wakeups_sent;         // eventfd writes to the consumer's doorbell
  uint64_t wakeups_received;     // returns from parking that found a ring
  uint32_t broken;               // non-zero: reason the producer found the lane corrupt
  uint32_t wakeup_errors;        // doorbell writes or waits that failed (not EAGAIN)
  // Waiting on a full ring (2.1): time spent spinning, spins, and spins that
  // found room before parking. Parks are full_waits.
  uint64_t spin_ns;
  uint64_t spin_waits;
  uint64_t spin_wins;
  uint8_t reserved[128 - 88];
};
static_assert(sizeof(ProducerCounters) == 128);
static_assert(offsetof(ProducerCounters, frames) == 0);
static_assert(offsetof(ProducerCounters, bytes) == 8);
static_assert(offsetof(ProducerCounters, backpressure_events) == 16);
static_assert(offsetof(ProducerCounters, full_waits) == 24);
static_assert(offsetof(ProducerCounters, dropped_frames) == 32);
static_assert(offsetof(ProducerCounters, wakeups_sent) == 40);
static_assert(offsetof(ProducerCounters, wakeups_received) == 48);
static_assert(offsetof(ProducerCounters, broken) == 56);
static_assert(offsetof(ProducerCounters, wakeup_errors) == 60);
static_assert(offsetof(ProducerCounters, spin_ns) == 64);
static_assert(offsetof(ProducerCounters, spin_waits) == 72);
static_assert(offsetof(ProducerCounters, spin_wins) == 80);

// The consumer's published position: bytes ever consumed, release-stored
// after the consumer is done with the records below it.
struct alignas(128) ConsumerIndex {
  uint64_t head;
  uint8_t reserved[120];
};
static_assert(sizeof(ConsumerIndex) == 128);
static_assert(offsetof(ConsumerIndex, head) == 0);

// Rarely written consumer state, read by the producer after each publish.
struct alignas(128) ConsumerControl {
  uint64_t waiting;  // waiter word: the consumer parked on an empty ring
  uint32_t closed;   // 1 once the consumer closed cleanly (release)
  uint32_t reserved0;
  uint8_t reserved[112];
};
static_assert(sizeof(ConsumerControl) == 128);
static_assert(offsetof(ConsumerControl, waiting) == 0);
static_assert(offsetof(ConsumerControl, closed) == 8);

// Consumer counters and the sampled latency histogram. Bucket i counts
// delays d (send timestamp to the consumer seeing the frame) with
// 2^(i+7) <= d < 2^(i+8) ns; bucket 0 also takes everything below 256 ns and
// the last bucket everything above. LatencyBucketUpperNs() gives the bounds.
struct alignas(128) ConsumerCounters {
  uint64_t frames;            // frames consumed
  uint64_t bytes;             // payload bytes consumed
  uint64_t empty_waits;       // times the consumer parked on an empty ring
  uint64_t wakeups_sent;      // eventfd writes to the producer's doorbell
  uint64_t wakeups_received;  // returns from parking that found a ring
  uint64_t latency_count;     // sampled frames
  uint64_t latency_sum_ns;    // sum of sampled delays
  uint32_t broken;            // non-zero: reason the consumer found the lane corrupt
  uint32_t wakeup_errors;     // doorbell writes or waits that failed (not EAGAIN)
  uint64_t latency_buckets[kLatencyBuckets];
  // Waiting on an empty ring (2.1): time spent spinning, spins, and spins
  // that found a frame before parking. Parks are empty_waits. A LaneSet
  // counts each of its spins once, on the lane whose frame ended it (a spin
  // that found nothing goes to its lanes in turn), so sums over a channel's
  // lanes are right.
  uint64_t spin_ns;
  uint64_t spin_waits;
  uint64_t spin_wins;
  uint8_t reserved[384 - 64 - 8 * kLatencyBuckets - 24];
};
static_assert(sizeof(ConsumerCounters) == 384);
static_assert(offsetof(ConsumerCounters, frames) == 0);
static_assert(offsetof(ConsumerCounters, bytes) == 8);
static_assert(offsetof(ConsumerCounters, empty_waits) == 16);
static_assert(offsetof(ConsumerCounters, wakeups_sent) == 24);
static_assert(offsetof(ConsumerCounters, wakeups_received) == 32);
static_assert(offsetof(ConsumerCounters, latency_count) == 40);
static_assert(offsetof(ConsumerCounters, latency_sum_ns) == 48);
static_assert(offsetof(ConsumerCounters, broken) == 56);
static_assert(offsetof(ConsumerCounters, wakeup_errors) == 60);
static_assert(offsetof(ConsumerCounters, latency_buckets) == 64);
static_assert(offsetof(ConsumerCounters, spin_ns) == 320);
static_assert(offsetof(ConsumerCounters, spin_waits) == 328);
static_assert(offsetof(ConsumerCounters, spin_wins) == 336);

// Written only by the supervisor (the daemon, or a test playing it) when a
// side dies or the lane is deleted; release-stored, then both doorbells rung.
inline constexpr uint32_t kClosedProducerGone = 1u << 0;
inline constexpr uint32_t kClosedConsumerGone = 1u << 1;
// Closed for both sides (each side reads it): the channel was deleted, the
// daemon stopped with --on-stop=close, or it ended a live holder's attachment.
inline constexpr uint32_t kClosedDeleted = 1u << 2;
struct alignas(128) SupervisorControl {
  uint32_t closed_by;  // kClosed* bits
  uint8_t reserved[124];
};
static_assert(sizeof(SupervisorControl) == 128);
static_assert(offsetof(SupervisorControl, closed_by) == 0);

// The whole header page.
struct LaneBlocks {
  LaneHeader header;
  ProducerIndex producer_index;
  ProducerControl producer_control;
  ProducerCounters producer_counters;
  ConsumerIndex consumer_index;
  ConsumerControl consumer_control;
  ConsumerCounters consumer_counters;
  SupervisorControl supervisor;
};
static_assert(std::is_standard_layout_v<LaneBlocks>);
static_assert(alignof(LaneBlocks) == 128);
static_assert(offsetof(LaneBlocks, header) == 0);
static_assert(offsetof(LaneBlocks, producer_index) == 128);
static_assert(offsetof(LaneBlocks, producer_control) == 256);
static_assert(offsetof(LaneBlocks, producer_counters) == 384);
static_assert(offsetof(LaneBlocks, consumer_index) == 512);
static_assert(offsetof(LaneBlocks, consumer_control) == 640);
static_assert(offsetof(LaneBlocks, consumer_counters) == 768);
static_assert(offsetof(LaneBlocks, supervisor) == 1152);
static_assert(sizeof(LaneBlocks) == 1280);
static_assert(sizeof(LaneBlocks) <= kLaneHeaderBytes);

// Upper bound (exclusive) of latency bucket i in nanoseconds; the last
// bucket has none (returns UINT64_MAX).
constexpr uint64_t LatencyBucketUpperNs(uint32_t i) {
  return i + 1 >= kLatencyBuckets ? UINT64_MAX : (uint64_t{1} << (i + 8));
}

// Bucket index for a delay in nanoseconds.
constexpr uint32_t LatencyBucketFor(uint64_t ns) {
  if (ns < 256) return 0;
  const uint32_t log2 = 63u - static_cast<uint32_t>(__builtin_clzll(ns));  // ns >= 256: log2 >= 8
  const uint32_t i = log2 - 7;
  return i >= kLatencyBuckets ? kLatencyBuckets - 1 : i;
}
static_assert(LatencyBucketFor(0) == 0 && LatencyBucketFor(255) == 0);
static_assert(LatencyBucketFor(256) == 1 && LatencyBucketFor(511) == 1);
static_assert(LatencyBucketFor(UINT64_MAX) == kLatencyBuckets - 1);

}  // namespace shmlane::dataplane
