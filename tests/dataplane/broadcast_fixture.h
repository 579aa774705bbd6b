// Test helpers for broadcast rings: a ring and its reader slots as the
// daemon would create them (creator mappings, doorbells, activation), the
// writer's and readers' mappings (readers get a read-only reopened fd), and
// frames whose sequence number and checksum a reader can verify.
//
// Thread safety: a fixture is set up from one thread; writers and readers it
// makes follow the rules of dataplane/broadcast.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "dataplane/broadcast.h"
#include "dataplane/doorbell.h"
#include "dataplane/internal/check.h"
#include "dataplane/segment.h"

namespace shmlane::dataplane::testing {

struct BroadcastFixture {
  struct Slot {
    Segment page;  // creator's mapping
    std::shared_ptr<const Doorbell> reader_bell;
    std::shared_ptr<const Doorbell> writer_bell;
    uint64_t epoch = 0;
  };
  BroadcastOptions options;
  Segment ring;  // creator's (supervisor's) read-write mapping
  std::shared_ptr<const Doorbell> writer_own;
  std::vector<Slot> slots;

  static BroadcastFixture Make(BroadcastOptions o) {
    BroadcastFixture f;
    f.options = o;
    absl::StatusOr<Segment> r = CreateBroadcastRing(o);
    SHMLANE_CHECK(r.ok());
    f.ring = std::move(*r);
    f.writer_own = std::make_shared<const Doorbell>(*Doorbell::Create());
    f.slots.resize(o.max_readers);
    return f;
  }

  // Creates the slot's page and bells and activates it (the daemon's part).
  void Activate(uint32_t slot) {
    Slot& s = slots[slot];
    absl::StatusOr<Segment> p = CreateReaderPage(ring, slot);
    SHMLANE_CHECK(p.ok());
    s.page = std::move(*p);
    s.reader_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
    s.writer_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
    absl::StatusOr<uint64_t> e = ActivateReaderSlot(ring, slot);
    SHMLANE_CHECK(e.ok());
    s.epoch = *e;
  }

  void Release(uint32_t slot) {
    SHMLANE_CHECK(
        ReleaseReaderSlot(ring, slot, writer_own.get(), slots[slot].reader_bell.get()).ok());
  }

  Segment WriterRing() const {
    absl::StatusOr<Segment> s = Segment::Map(*ring.DupFd(), Access::kReadWrite);
    SHMLANE_CHECK(s.ok());
    return std::move(*s);
  }
  Segment ReaderRing() const {
    absl::StatusOr<UniqueFd> fd = ReopenReadOnly(ring);
    SHMLANE_CHECK(fd.ok());
    absl::StatusOr<Segment> s = Segment::Map(std::move(*fd), Access::kReadOnly);
    SHMLANE_CHECK(s.ok());
    return std::move(*s);
  }
  Segment PageFor(uint32_t slot, Access access) const {
    absl::StatusOr<Segment> s = Segment::Map(*slots[slot].page.DupFd(), access);
    SHMLANE_CHECK(s.ok());
    return std::move(*s);
  }

  // A writer linked to every activated slot.
  BroadcastWriter MakeWriter(WaitOptions w = {}) const {
    absl::StatusOr<BroadcastWriter> bw = BroadcastWriter::Attach(WriterRing(), {writer_own}, w);
    SHMLANE_CHECK(bw.ok());
    for (uint32_t i = 0; i < slots.size(); ++i) {
      if (slots[i].page.valid()) Link(*bw, i);
    }
    return std::move(*bw);
  }
  void Link(BroadcastWriter& w, uint32_t slot) const {
    SHMLANE_CHECK(w.AddReader(slot, PageFor(slot, Access::kReadOnly), slots[slot].reader_bell,
                              slots[slot].writer_bell)
                      .ok());
  }
  absl::StatusOr<BroadcastReader> TryMakeReader(uint32_t slot, ReaderStart start = {},
                                                WaitOptions w = {}) const {
    return BroadcastReader::Attach(ReaderRing(), PageFor(slot, Access::kReadWrite), slot,
                                   {slots[slot].reader_bell, slots[slot].writer_bell}, start, w);
  }
  BroadcastReader MakeReader(uint32_t slot, ReaderStart start = {}, WaitOptions w = {}) const {
    absl::StatusOr<BroadcastReader> r = TryMakeReader(slot, start, w);
    SHMLANE_CHECK(r.ok());
    return std::move(*r);
  }
  BroadcastBlocks* blocks() const { return reinterpret_cast<BroadcastBlocks*>(ring.data()); }
  ReaderPage* page(uint32_t slot) const {
    return reinterpret_cast<ReaderPage*>(slots[slot].page.data());
  }
};

// Frame format: [seq u64][checksum u32][len-12 bytes of f(seq, i)].
inline uint32_t FrameChecksum(const std::byte* p, size_t n) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(p[i])) * 16777619u;
  return h;
}
inline size_t FillBroadcastFrame(std::byte* buf, uint64_t seq, size_t len) {
  if (len < 12) len = 12;
  std::memcpy(buf, &seq, 8);
  for (size_t i = 12; i < len; ++i) buf[i] = std::byte(static_cast<uint8_t>(seq * 131 + i * 7));
  const uint32_t sum = FrameChecksum(buf + 12, len - 12);
  std::memcpy(buf + 8, &sum, 4);
  return len;
}
// True if the frame is intact; *seq receives its sequence number.
inline bool CheckBroadcastFrame(std::span<const std::byte> f, uint64_t* seq) {
  if (f.size() < 12) return false;
  std::memcpy(seq, f.data(), 8);
  uint32_t sum = 0;
  std::memcpy(&sum, f.data() + 8, 4);
  return sum == FrameChecksum(f.data() + 12, f.size() - 12);
}
// Deterministic size of frame `seq` in [12, max].
inline size_t FrameSizeFor(uint64_t seq, size_t max) {
  uint64_t x = seq * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  return 12 + static_cast<size_t>(x % (max - 11));
}

}  // namespace shmlane::dataplane::testing
