// The byte layout of a broadcast ring (one writer, N readers) and of the
// per-reader cursor pages: the shared-memory contract between the writer, the
// readers and the supervisor (the daemon), possibly built from different
// versions of this file. docs/shm_layout.md ("Broadcast rings") has the
// same tables; broadcast_layout_test.cc pins every offset.
//
// Two kinds of memfd, so that no reader can write anything another party
// reads as truth:
//
//   ring segment (one per channel; writer and supervisor map it read-write,
//   readers map a read-only reopened fd PROT_READ):
//     offset  size  block              written by
//     0       128   BroadcastHeader    creator (before the fd is shared)
//     128     128   WriterIndex        writer: publish, oldest, last_frame
//     256     128   WriterControl      writer: waiting, closed, need_floor
//     384     128   WriterCounters     writer: counters
//     512     128   BroadcastSupervisor supervisor: closed_by, slots_generation
//     4096    128*M SlotControl[M]     supervisor: state; writer: detached_epoch
//     H       R     frame area         writer writes records, readers read them
//   where M = max_readers and H = header_bytes = 4096 + M*128 rounded up to 4096.
//
//   cursor page (one per reader slot; only that reader maps it read-write,
//   the writer and observers map it read-only):
//     0       128   ReaderPageHeader   creator (supervisor)
//     128     128   ReaderIndex        reader: cursor, joined_epoch
//     256     128   ReaderControl      reader: waiting, closed_epoch
//     384     384   ReaderCounters     reader: counters, latency histogram
//
// Everything a side reads from a block it does not own is untrusted: loaded
// once, validated, then used (broadcast.cc). In particular the writer never
// lets a reader's cursor move backwards or past the publish position, and a
// reader checks every frame header and, after using a frame, that the
// writer has not started to overwrite it (`oldest`, a seqlock-style check).
//
// Records in the frame area are 16-byte aligned: a 16-byte BroadcastFrameHeader
// (length, flags, sequence number), an optional 8-byte send timestamp, the
// payload, padding to 16. A record never wraps: the writer pads to the end of
// the ring (a padding record carries the sequence number of the frame after
// it) and continues at offset 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dataplane/lane_layout.h"

namespace shmlane::dataplane {

inline constexpr uint64_t kBroadcastMagic = 0x3143524240485300ULL;   // "\0SH@BRC1"
inline constexpr uint64_t kReaderPageMagic = 0x3155434240485300ULL;  // "\0SH@BCU1"
inline constexpr uint16_t kBroadcastLayoutMajor = 1;
inline constexpr uint16_t kBroadcastLayoutMinor = 0;
inline constexpr uint32_t kBroadcastFixedHeaderBytes = 4096;  // the slot table starts here
inline constexpr uint32_t kSlotBytes = 128;
inline constexpr uint32_t kMaxBroadcastReaders = 1024;
inline constexpr uint32_t kReaderPageBytes = 4096;
inline constexpr uint32_t kBroadcastRecordAlign = 16;  // every record starts 16-aligned

// Slow-reader policy of a broadcast ring, chosen by its creator.
enum class SlowReaderPolicy : uint32_t {
  kBlock = 1,       // the writer waits (with a deadline) for the slowest active reader
  kDropOldest = 2,  // the writer never waits; lapped readers skip to the oldest intact frame
  kDisconnect = 3,  // the writer never waits; a reader too far behind is detached
};

// Bytes of the ring segment before the frame area for `max_readers` slots.
constexpr uint64_t BroadcastHeaderBytes(uint32_t max_readers) {
  return kBroadcastFixedHeaderBytes +
         ((uint64_t{max_readers} * kSlotBytes + 4095) & ~uint64_t{4095});
}

// Precedes every record. Written by the writer before the publish that
// covers it; read by readers with two relaxed 64-bit loads, validated only
// after the overwrite check (a concurrent overwrite may tear it).
struct BroadcastFrameHeader {
  uint32_t length;  // payload bytes; for padding, the whole padding record's bytes
  uint32_t flags;   // kFrameFlagPadding / kFrameFlagTimestamp (lane_layout.h)
  uint64_t seq;     // frame sequence number (0, 1, ...); padding: the next frame's
};
static_assert(sizeof(BroadcastFrameHeader) == 16);
static_assert(offsetof(BroadcastFrameHeader, length) == 0);
static_assert(offsetof(BroadcastFrameHeader, flags) == 4);
static_assert(offsetof(BroadcastFrameHeader, seq) == 8);
static_assert(std::is_standard_layout_v<BroadcastFrameHeader>);

// Immutable after creation; `version` is stored last with release order.
struct alignas(128) BroadcastHeader {
  uint64_t magic;            // kBroadcastMagic
  uint32_t version;          // (major << 16) | minor, written last (release)
  uint32_t header_bytes;     // offset of the frame area: BroadcastHeaderBytes(max_readers)
  uint64_t ring_bytes;       // size of the frame area, a power of two
  uint32_t max_frame_bytes;  // largest payload the writer may publish
  uint32_t policy;           // SlowReaderPolicy
  uint32_t max_readers;      // slots in the slot table
  uint32_t history_frames;   // channel default for late joiners (readers may ask fewer)
  uint32_t sample_every;     // one frame in N carries a send timestamp; 0 = off
  uint32_t reserved0;
  uint64_t detach_lag_bytes;  // kDisconnect: a reader further behind is detached (<= ring)
  uint64_t created_unix_ns;   // for observers
  uint64_t channel_id;        // creator-assigned id, for observers
  uint8_t reserved[128 - 72];
};
static_assert(sizeof(BroadcastHeader) == 128);
static_assert(offsetof(BroadcastHeader, magic) == 0);
static_assert(offsetof(BroadcastHeader, version) == 8);
static_assert(offsetof(BroadcastHeader, header_bytes) == 12);
static_assert(offsetof(BroadcastHeader, ring_bytes) == 16);
static_assert(offsetof(BroadcastHeader, max_frame_bytes) == 24);
static_assert(offsetof(BroadcastHeader, policy) == 28);
static_assert(offsetof(BroadcastHeader, max_readers) == 32);
static_assert(offsetof(BroadcastHeader, history_frames) == 36);
static_assert(offsetof(BroadcastHeader, sample_every) == 40);
static_assert(offsetof(BroadcastHeader, detach_lag_bytes) == 48);
static_assert(offsetof(BroadcastHeader, created_unix_ns) == 56);
static_assert(offsetof(BroadcastHeader, channel_id) == 64);

// The writer's positions, in bytes ever written (never masked).
//   publish: end of the published records; release-stored after them.
//   oldest:  start of the oldest record that is still intact. The writer
//            stores it (then a release fence) BEFORE it overwrites anything
//            below it, so a reader that finds `oldest` <= the position of a
//            frame after reading it (acquire fence, then load) knows that
//            no byte of it was overwritten while it read.
//   last_frame: start of the last published frame's record; stored
//            (relaxed) before `publish`. A live-tail joiner checks that the
//            record there ends exactly at `publish` and takes its sequence
//            number + 1 as the next one, so even its first lap is counted.
// They share a line on purpose: readers load them per batch.
struct alignas(128) WriterIndex {
  uint64_t publish;
  uint64_t oldest;
  uint64_t last_frame;
  uint8_t reserved[104];
};
static_assert(sizeof(WriterIndex) == 128);
static_assert(offsetof(WriterIndex, publish) == 0);
static_assert(offsetof(WriterIndex, oldest) == 8);
static_assert(offsetof(WriterIndex, last_frame) == 16);

// Rarely written writer state.
struct alignas(128) WriterControl {
  uint64_t waiting;  // waiter word (lane_layout.h): parked on a full ring (kBlock)
  uint32_t closed;   // 1 once the writer closed cleanly (release, after the final publish)
  uint32_t reserved0;
  uint64_t need_floor;  // while parked: the position every active reader must reach
                        // (relaxed, before `waiting`); a reader whose release crosses it rings
  uint8_t reserved[104];
};
static_assert(sizeof(WriterControl) == 128);
static_assert(offsetof(WriterControl, waiting) == 0);
static_assert(offsetof(WriterControl, closed) == 8);
static_assert(offsetof(WriterControl, need_floor) == 16);

// Writer counters: single writer, relaxed stores.
struct alignas(128) WriterCounters {
  uint64_t frames;               // frames published (= the next frame's sequence number)
  uint64_t bytes;                // payload bytes published
  uint64_t backpressure_events;  // writes that found the ring full (kBlock)
  uint64_t full_waits;           // times the writer parked on a full ring
  uint64_t readers_detached;     // readers detached for lag (kDisconnect)
  uint64_t wakeups_sent;         // eventfd writes to readers' doorbells
  uint64_t wakeups_received;     // returns from parking that found a ring
  uint32_t broken;               // non-zero: why the writer found its ring corrupt
  uint32_t wakeup_errors;        // doorbell writes or waits that failed (not EAGAIN)
  uint8_t reserved[128 - 64];
};
static_assert(sizeof(WriterCounters) == 128);
static_assert(offsetof(WriterCounters, frames) == 0);
static_assert(offsetof(WriterCounters, bytes) == 8);
static_assert(offsetof(WriterCounters, backpressure_events) == 16);
static_assert(offsetof(WriterCounters, full_waits) == 24);
static_assert(offsetof(WriterCounters, readers_detached) == 32);
static_assert(offsetof(WriterCounters, wakeups_sent) == 40);
static_assert(offsetof(WriterCounters, wakeups_received) == 48);
static_assert(offsetof(WriterCounters, broken) == 56);
static_assert(offsetof(WriterCounters, wakeup_errors) == 60);

// Written only by the supervisor. closed_by takes kClosedProducerGone
// (the writer died) and kClosedDeleted (lane_layout.h); atomic OR, release.
// slots_generation is bumped (release) after every slot activation or
// release, so the writer notices one with a load of this line per publish.
struct alignas(128) BroadcastSupervisor {
  uint32_t closed_by;
  uint32_t reserved0;
  uint64_t slots_generation;
  uint8_t reserved[112];
};
static_assert(sizeof(BroadcastSupervisor) == 128);
static_assert(offsetof(BroadcastSupervisor, closed_by) == 0);
static_assert(offsetof(BroadcastSupervisor, slots_generation) == 8);

// The fixed part of the header page.
struct BroadcastBlocks {
  BroadcastHeader header;
  WriterIndex writer_index;
  WriterControl writer_control;
  WriterCounters writer_counters;
  BroadcastSupervisor supervisor;
};
static_assert(std::is_standard_layout_v<BroadcastBlocks>);
static_assert(alignof(BroadcastBlocks) == 128);
static_assert(offsetof(BroadcastBlocks, header) == 0);
static_assert(offsetof(BroadcastBlocks, writer_index) == 128);
static_assert(offsetof(BroadcastBlocks, writer_control) == 256);
static_assert(offsetof(BroadcastBlocks, writer_counters) == 384);
static_assert(offsetof(BroadcastBlocks, supervisor) == 512);
static_assert(sizeof(BroadcastBlocks) == 640);
static_assert(sizeof(BroadcastBlocks) <= kBroadcastFixedHeaderBytes);

// One reader slot in the ring segment (readers can only read it).
//   state:          supervisor; (epoch << 1) | active. Activation bumps the
//                   epoch and sets bit 0; release clears bit 0. Release order.
//   detached_epoch: writer; the epoch it detached for lag (kDisconnect).
//                   The slot is detached while it equals the state's epoch.
struct alignas(128) SlotControl {
  uint64_t state;
  uint64_t detached_epoch;
  uint8_t reserved[112];
};
static_assert(sizeof(SlotControl) == kSlotBytes);
static_assert(offsetof(SlotControl, state) == 0);
static_assert(offsetof(SlotControl, detached_epoch) == 8);
constexpr bool SlotActive(uint64_t state) { return (state & 1) != 0; }
constexpr uint64_t SlotEpoch(uint64_t state) { return state >> 1; }

// ---- cursor page (one memfd per reader slot) ----

// Written by the creator before the page is shared; the writer checks it.
struct alignas(128) ReaderPageHeader {
  uint64_t magic;    // kReaderPageMagic
  uint32_t version;  // (kBroadcastLayoutMajor << 16) | minor, written last (release)
  uint32_t slot;     // the slot this page belongs to
  uint64_t channel_id;
  uint8_t reserved[128 - 24];
};
static_assert(sizeof(ReaderPageHeader) == 128);
static_assert(offsetof(ReaderPageHeader, magic) == 0);
static_assert(offsetof(ReaderPageHeader, version) == 8);
static_assert(offsetof(ReaderPageHeader, slot) == 12);
static_assert(offsetof(ReaderPageHeader, channel_id) == 16);

// The reader's position, written only by the reader, read by the writer.
//   cursor:       bytes ever released; release-stored after the reader is done
//                 with every record below it.
//   joined_epoch: the slot epoch this cursor belongs to; stored (release)
//                 after the first cursor of an attachment. Until it matches
//                 the slot's epoch, a kBlock writer holds the ring at the
//                 oldest position it had when it saw the activation.
struct alignas(128) ReaderIndex {
  uint64_t cursor;
  uint64_t joined_epoch;
  uint8_t reserved[112];
};
static_assert(sizeof(ReaderIndex) == 128);
static_assert(offsetof(ReaderIndex, cursor) == 0);
static_assert(offsetof(ReaderIndex, joined_epoch) == 8);

// Rarely written reader state.
struct alignas(128) ReaderControl {
  uint64_t waiting;       // waiter word (lane_layout.h): parked on an empty ring
  uint64_t closed_epoch;  // the epoch the reader closed cleanly (release); the writer skips it
  uint8_t reserved[112];
};
static_assert(sizeof(ReaderControl) == 128);
static_assert(offsetof(ReaderControl, waiting) == 0);
static_assert(offsetof(ReaderControl, closed_epoch) == 8);

// Per-reader counters (relaxed stores by the reader) and its sampled
// latency histogram (buckets as in ConsumerCounters, lane_layout.h).
struct alignas(128) ReaderCounters {
  uint64_t frames;            // frames delivered intact
  uint64_t bytes;             // payload bytes delivered
  uint64_t lapped_frames;     // frames missed: overwritten before (or while) read
  uint64_t laps;              // times the reader was lapped (each may miss many frames)
  uint64_t empty_waits;       // times it parked on an empty ring
  uint64_t wakeups_sent;      // eventfd writes to the writer's doorbell
  uint64_t wakeups_received;  // returns from parking that found a ring
  uint64_t latency_count;     // sampled frames
  uint64_t latency_sum_ns;    // sum of sampled delays
  uint32_t broken;            // non-zero: why the reader found the ring corrupt
  uint32_t wakeup_errors;     // doorbell writes or waits that failed (not EAGAIN)
  uint64_t latency_buckets[kLatencyBuckets];
  uint8_t reserved[384 - 80 - 8 * kLatencyBuckets];
};
static_assert(sizeof(ReaderCounters) == 384);
static_assert(offsetof(ReaderCounters, frames) == 0);
static_assert(offsetof(ReaderCounters, bytes) == 8);
static_assert(offsetof(ReaderCounters, lapped_frames) == 16);
static_assert(offsetof(ReaderCounters, laps) == 24);
static_assert(offsetof(ReaderCounters, empty_waits) == 32);
static_assert(offsetof(ReaderCounters, wakeups_sent) == 40);
static_assert(offsetof(ReaderCounters, wakeups_received) == 48);
static_assert(offsetof(ReaderCounters, latency_count) == 56);
static_assert(offsetof(ReaderCounters, latency_sum_ns) == 64);
static_assert(offsetof(ReaderCounters, broken) == 72);
static_assert(offsetof(ReaderCounters, wakeup_errors) == 76);
static_assert(offsetof(ReaderCounters, latency_buckets) == 80);

struct ReaderPage {
  ReaderPageHeader header;
  ReaderIndex index;
  ReaderControl control;
  ReaderCounters counters;
};
static_assert(std::is_standard_layout_v<ReaderPage>);
static_assert(alignof(ReaderPage) == 128);
static_assert(offsetof(ReaderPage, header) == 0);
static_assert(offsetof(ReaderPage, index) == 128);
static_assert(offsetof(ReaderPage, control) == 256);
static_assert(offsetof(ReaderPage, counters) == 384);
static_assert(sizeof(ReaderPage) == 768);
static_assert(sizeof(ReaderPage) <= kReaderPageBytes);

}  // namespace shmlane::dataplane
