// Broadcast rings: options, creation, the supervisor's slot and close calls,
// observers, and the shared geometry checks (writer: broadcast_writer.cc,
// reader: broadcast_reader.cc).
#include "dataplane/broadcast.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "dataplane/internal/broadcast_ring.h"
#include "dataplane/internal/check.h"
#include "dataplane/internal/shm_access.h"

namespace shmlane::dataplane {
namespace {
using internal::kAlign;
using internal::kFlagOrder;
using internal::kHeaderBytes;
using internal::kIndexLoad;
using internal::kIndexStore;
using internal::kParkStore;
using internal::Load;
using internal::LoadFrameHeader;
using internal::Record;
using internal::Store;
using internal::StoreFrameHeader;
using internal::StoreLoadFence;
using Geometry = BroadcastWriter::Geometry;
}  // namespace

namespace internal {

absl::StatusOr<BroadcastGeometry> ReadBroadcastGeometry(const Segment& segment) {
  if (!segment.valid() || segment.size() < kBroadcastFixedHeaderBytes) {
    return absl::DataLossError(absl::StrCat("segment of ", segment.size(),
                                            " bytes is too small to hold a broadcast header"));
  }
  auto* blocks = reinterpret_cast<BroadcastBlocks*>(segment.data());
  const BroadcastHeader& h = blocks->header;
  const uint32_t version = Load(h.version, std::memory_order_acquire);
  if (Load(h.magic, std::memory_order_relaxed) != kBroadcastMagic) {
    return absl::DataLossError("segment is not a shmlane broadcast ring (bad magic)");
  }
  if ((version >> 16) != kBroadcastLayoutMajor) {
    return absl::DataLossError(absl::StrCat("broadcast layout version ", version >> 16, ".",
                                            version & 0xffff,
                                            " is not supported (this build speaks ",
                                            kBroadcastLayoutMajor, ".x): upgrade the older side"));
  }
  BroadcastGeometry g;
  g.blocks = blocks;
  const uint32_t header_bytes = Load(h.header_bytes, std::memory_order_relaxed);
  g.ring_bytes = Load(h.ring_bytes, std::memory_order_relaxed);
  g.max_frame_bytes = Load(h.max_frame_bytes, std::memory_order_relaxed);
  g.max_readers = Load(h.max_readers, std::memory_order_relaxed);
  g.history_frames = Load(h.history_frames, std::memory_order_relaxed);
  g.sample_every = Load(h.sample_every, std::memory_order_relaxed);
  g.detach_lag_bytes = Load(h.detach_lag_bytes, std::memory_order_relaxed);
  const uint32_t policy = Load(h.policy, std::memory_order_relaxed);
  if (g.max_readers < 1 || g.max_readers > kMaxBroadcastReaders ||
      header_bytes != BroadcastHeaderBytes(g.max_readers)) {
    return absl::DataLossError(absl::StrCat("broadcast max_readers ", g.max_readers,
                                            " / header_bytes ", header_bytes, " are inconsistent"));
  }
  if (g.ring_bytes < kMinRingBytes || g.ring_bytes > kMaxRingBytes ||
      (g.ring_bytes & (g.ring_bytes - 1)) != 0 || segment.size() < header_bytes ||
      g.ring_bytes != segment.size() - header_bytes) {
    return absl::DataLossError(absl::StrCat("broadcast ring_bytes ", g.ring_bytes,
                                            " does not match a segment of ", segment.size(),
                                            " bytes"));
  }
  if (g.max_frame_bytes > MaxBroadcastFrameBytesFor(g.ring_bytes)) {
    return absl::DataLossError(
        absl::StrCat("broadcast max_frame_bytes ", g.max_frame_bytes, " is too large"));
  }
  if (policy < 1 || policy > 3) {
    return absl::DataLossError(absl::StrCat("broadcast policy ", policy, " is unknown"));
  }
  if (g.detach_lag_bytes == 0 || g.detach_lag_bytes > g.ring_bytes) {
    return absl::DataLossError(
        absl::StrCat("broadcast detach_lag_bytes ", g.detach_lag_bytes, " is out of range"));
  }
  g.policy = static_cast<SlowReaderPolicy>(policy);
  g.slots = reinterpret_cast<SlotControl*>(segment.data() + kBroadcastFixedHeaderBytes);
  g.ring = segment.data() + header_bytes;
  g.mask = g.ring_bytes - 1;
  return g;
}

absl::StatusOr<ReaderPage*> CheckReaderPage(const Segment& page, uint32_t slot) {
  if (!page.valid() || page.size() < sizeof(ReaderPage)) {
    return absl::DataLossError("reader cursor page is too small");
  }
  auto* p = reinterpret_cast<ReaderPage*>(page.data());
  const uint32_t version = Load(p->header.version, std::memory_order_acquire);
  if (Load(p->header.magic, std::memory_order_relaxed) != kReaderPageMagic ||
      (version >> 16) != kBroadcastLayoutMajor) {
    return absl::DataLossError("segment is not a broadcast reader cursor page (magic/version)");
  }
  const uint32_t page_slot = Load(p->header.slot, std::memory_order_relaxed);
  if (page_slot != slot) {
    return absl::InvalidArgumentError(
        absl::StrCat("cursor page belongs to slot ", page_slot, ", not slot ", slot));
  }
  return p;
}

}  // namespace internal

const char* ToString(BroadcastReadResult r) {
  switch (r) {
    case BroadcastReadResult::kOk:
      return "ok";
    case BroadcastReadResult::kEmpty:
      return "empty";
    case BroadcastReadResult::kClosed:
      return "closed";
    case BroadcastReadResult::kBroken:
      return "broken";
    case BroadcastReadResult::kTimeout:
      return "timeout";
    case BroadcastReadResult::kTooSmall:
      return "buffer too small";
    case BroadcastReadResult::kDetached:
      return "detached";
  }
  return "unknown";
}

absl::Status ValidateBroadcastOptions(const BroadcastOptions& o) {
  if (o.ring_bytes < kMinRingBytes || o.ring_bytes > kMaxRingBytes ||
      (o.ring_bytes & (o.ring_bytes - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ring_bytes ", o.ring_bytes,
                                                   " must be a power of two between ",
                                                   kMinRingBytes, " and ", kMaxRingBytes));
  }
  if (o.max_frame_bytes > MaxBroadcastFrameBytesFor(o.ring_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_frame_bytes ", o.max_frame_bytes, " exceeds ", MaxBroadcastFrameBytesFor(o.ring_bytes),
        ", the limit for a ring of ", o.ring_bytes, " bytes: use a bigger ring or smaller frames"));
  }
  if (o.max_readers < 1 || o.max_readers > kMaxBroadcastReaders) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_readers ", o.max_readers, " must be in [1, ", kMaxBroadcastReaders, "]"));
  }
  if (o.detach_lag_bytes > o.ring_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("detach_lag_bytes ", o.detach_lag_bytes,
                                                   " exceeds ring_bytes ", o.ring_bytes));
  }
  switch (o.policy) {
    case SlowReaderPolicy::kBlock:
    case SlowReaderPolicy::kDropOldest:
    case SlowReaderPolicy::kDisconnect:
      break;
    default:
      return absl::InvalidArgumentError("unknown slow-reader policy");
  }
  return absl::OkStatus();
}

absl::StatusOr<Segment> CreateBroadcastRing(const BroadcastOptions& o) {
  if (absl::Status s = ValidateBroadcastOptions(o); !s.ok()) return s;
  const uint64_t header_bytes = BroadcastHeaderBytes(o.max_readers);
  absl::StatusOr<Segment> seg =
      Segment::Create(absl::StrCat("bcast-", o.channel_id), header_bytes + o.ring_bytes);
  if (!seg.ok()) return seg.status();
  // Owner read-only: a reader of another uid holding a read-only fd cannot
  // reopen it read-write through /proc/self/fd (root can; it can do anything).
  if (::fchmod(seg->fd(), 0400) != 0) return internal::ErrnoError("fchmod of broadcast memfd");
  auto* b = reinterpret_cast<BroadcastBlocks*>(seg->data());
  BroadcastHeader& h = b->header;
  h.magic = kBroadcastMagic;
  h.header_bytes = static_cast<uint32_t>(header_bytes);
  h.ring_bytes = o.ring_bytes;
  h.max_frame_bytes = o.max_frame_bytes;
  h.policy = static_cast<uint32_t>(o.policy);
  h.max_readers = o.max_readers;
  h.history_frames = o.history_frames;
  h.sample_every = o.sample_every;
  h.detach_lag_bytes = o.detach_lag_bytes == 0 ? o.ring_bytes : o.detach_lag_bytes;
  h.created_unix_ns = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  h.channel_id = o.channel_id;
  Store(h.version, (uint32_t{kBroadcastLayoutMajor} << 16) | kBroadcastLayoutMinor,
        std::memory_order_release);
  return seg;
}

absl::StatusOr<Segment> CreateReaderPage(const Segment& ring, uint32_t slot) {
  absl::StatusOr<Geometry> g = internal::ReadBroadcastGeometry(ring);
  if (!g.ok()) return g.status();
  if (slot >= g->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", g->max_readers, ")"));
  }
  const uint64_t channel = Load(g->blocks->header.channel_id, std::memory_order_relaxed);
  absl::StatusOr<Segment> seg =
      Segment::Create(absl::StrCat("bcast-", channel, "-reader-", slot), kReaderPageBytes);
  if (!seg.ok()) return seg.status();
  auto* p = reinterpret_cast<ReaderPage*>(seg->data());
  p->header.magic = kReaderPageMagic;
  p->header.slot = slot;
  p->header.channel_id = channel;
  Store(p->header.version, (uint32_t{kBroadcastLayoutMajor} << 16) | kBroadcastLayoutMinor,
        std::memory_order_release);
  return seg;
}

absl::StatusOr<UniqueFd> ReopenReadOnly(const Segment& segment) {
  if (!segment.valid()) return absl::InvalidArgumentError("segment is not valid");
  const std::string path = absl::StrCat("/proc/self/fd/", segment.fd());
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return internal::ErrnoError(absl::StrCat("reopening ", path, " read-only"));
  return fd;
}

// ------------------------------ supervisor --------------------------------

absl::StatusOr<uint64_t> ActivateReaderSlot(const Segment& ring, uint32_t slot) {
  absl::StatusOr<Geometry> g = internal::ReadBroadcastGeometry(ring);
  if (!g.ok()) return g.status();
  if (ring.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("activating a slot needs the ring mapped read-write");
  }
  if (slot >= g->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", g->max_readers, ")"));
  }
  SlotControl& s = g->slots[slot];
  const uint64_t old = Load(s.state, std::memory_order_acquire);
  if (SlotActive(old)) {
    return absl::FailedPreconditionError(absl::StrCat("reader slot ", slot, " is already active"));
  }
  const uint64_t epoch = SlotEpoch(old) + 1;
  Store(s.state, (epoch << 1) | 1, std::memory_order_release);
  std::atomic_ref<uint64_t>(g->blocks->supervisor.slots_generation)
      .fetch_add(1, std::memory_order_release);
  return epoch;
}

absl::Status ReleaseReaderSlot(const Segment& ring, uint32_t slot, const Doorbell* writer_bell,
                               const Doorbell* reader_bell) {
  absl::StatusOr<Geometry> g = internal::ReadBroadcastGeometry(ring);
  if (!g.ok()) return g.status();
  if (ring.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("releasing a slot needs the ring mapped read-write");
  }
  if (slot >= g->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", g->max_readers, ")"));
  }
  SlotControl& s = g->slots[slot];
  const uint64_t old = Load(s.state, std::memory_order_acquire);
  Store(s.state, old & ~uint64_t{1}, std::memory_order_release);
  std::atomic_ref<uint64_t>(g->blocks->supervisor.slots_generation)
      .fetch_add(1, std::memory_order_release);
  StoreLoadFence();
  if (writer_bell != nullptr && writer_bell->valid()) writer_bell->Ring();
  if (reader_bell != nullptr && reader_bell->valid()) reader_bell->Ring();
  return absl::OkStatus();
}

void SupervisorCloseBroadcast(const Segment& ring, uint32_t reason, const Doorbell* writer_bell,
                              std::span<const Doorbell* const> reader_bells) {
  if (ring.valid() && ring.access() == Access::kReadWrite &&
      ring.size() >= kBroadcastFixedHeaderBytes) {
    auto* b = reinterpret_cast<BroadcastBlocks*>(ring.data());
    std::atomic_ref<uint32_t>(b->supervisor.closed_by).fetch_or(reason, std::memory_order_release);
  }
  StoreLoadFence();
  if (writer_bell != nullptr && writer_bell->valid()) writer_bell->Ring();
  for (const Doorbell* bell : reader_bells) {
    if (bell != nullptr && bell->valid()) bell->Ring();
  }
}

// ------------------------------- observers --------------------------------

absl::StatusOr<BroadcastSnapshot> ObserveBroadcast(const Segment& ring) {
  absl::StatusOr<Geometry> g = internal::ReadBroadcastGeometry(ring);
  if (!g.ok()) return g.status();
  auto r = [](const auto& field) { return Load(field, std::memory_order_relaxed); };
  const BroadcastBlocks& b = *g->blocks;
  BroadcastSnapshot s;
  s.channel_id = r(b.header.channel_id);
  s.ring_bytes = g->ring_bytes;
  s.max_frame_bytes = g->max_frame_bytes;
  s.policy = g->policy;
  s.publish = r(b.writer_index.publish);
  s.oldest = r(b.writer_index.oldest);
  const WriterCounters& c = b.writer_counters;
  s.writer.frames = r(c.frames);
  s.writer.bytes = r(c.bytes);
  s.writer.backpressure_events = r(c.backpressure_events);
  s.writer.full_waits = r(c.full_waits);
  s.writer.readers_detached = r(c.readers_detached);
  s.writer.wakeups_sent = r(c.wakeups_sent);
  s.writer.wakeups_received = r(c.wakeups_received);
  s.writer.broken = r(c.broken);
  s.writer.wakeup_errors = r(c.wakeup_errors);
  s.writer_closed = r(b.writer_control.closed);
  s.writer_waiting = WaiterParked(r(b.writer_control.waiting)) ? 1 : 0;
  s.supervisor_closed_by = r(b.supervisor.closed_by);
  for (uint32_t i = 0; i < g->max_readers; ++i) {
    const uint64_t state = r(g->slots[i].state);
    const bool detached =
        SlotEpoch(state) != 0 && r(g->slots[i].detached_epoch) == SlotEpoch(state);
    if (!SlotActive(state)) continue;
    s.slots.push_back({i, true, detached, SlotEpoch(state)});
  }
  return s;
}

absl::StatusOr<ReaderPageSnapshot> ObserveReaderPage(const Segment& page, const Segment* ring) {
  if (!page.valid() || page.size() < sizeof(ReaderPage)) {
    return absl::DataLossError("reader cursor page is too small");
  }
  const auto* p = reinterpret_cast<const ReaderPage*>(page.data());
  if (Load(p->header.magic, std::memory_order_relaxed) != kReaderPageMagic) {
    return absl::DataLossError("segment is not a broadcast reader cursor page");
  }
  auto r = [](const auto& field) { return Load(field, std::memory_order_relaxed); };
  ReaderPageSnapshot s;
  s.slot = r(p->header.slot);
  s.cursor = r(p->index.cursor);
  s.waiting = WaiterParked(r(p->control.waiting)) ? 1 : 0;
  const ReaderCounters& c = p->counters;
  s.counters.frames = r(c.frames);
  s.counters.bytes = r(c.bytes);
  s.counters.lapped_frames = r(c.lapped_frames);
  s.counters.laps = r(c.laps);
  s.counters.empty_waits = r(c.empty_waits);
  s.counters.wakeups_sent = r(c.wakeups_sent);
  s.counters.wakeups_received = r(c.wakeups_received);
  s.counters.latency_count = r(c.latency_count);
  s.counters.latency_sum_ns = r(c.latency_sum_ns);
  s.counters.broken = r(c.broken);
  s.counters.wakeup_errors = r(c.wakeup_errors);
  for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
    s.counters.latency_buckets[i] = r(c.latency_buckets[i]);
  }
  if (ring != nullptr) {
    absl::StatusOr<Geometry> g = internal::ReadBroadcastGeometry(*ring);
    if (!g.ok()) return g.status();
    const uint64_t publish = r(g->blocks->writer_index.publish);
    s.lag_bytes = publish >= s.cursor ? std::min(publish - s.cursor, g->ring_bytes) : 0;
  }
  return s;
}

}  // namespace shmlane::dataplane
