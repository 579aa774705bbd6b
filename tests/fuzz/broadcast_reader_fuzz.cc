// Fuzz target: broadcast readers against a hostile writer. The input is a
// script that interleaves an honest writer's frames with arbitrary stores
// into the ring segment (header, writer blocks, slot table, frame area) and
// with the readers' calls. Whatever the bytes, a reader only returns
// results: no crash, no access outside its read-only mapping (ASan, and a
// check of every view), no endless loop (every wait has an expired
// deadline; libFuzzer's -timeout is the backstop), and a broken reader
// stays broken.
//
// Script: a sequence of records [op u8][arg...]:
//   0 off:u16 value:u64   store value at off in the header page + slot table
//   1 off:u16 value:u64   store value at off in the frame area (mod ring)
//   2 len:u16             honest writer TryWrite of len % 700 bytes
//   3 r:u8                reader r TryRead
//   4 r:u8                reader r Peek, then Release
//   5 r:u8 max:u8         reader r Drain of up to max frames
//   6 r:u8                reader r Read with an expired deadline
//   7 r:u8 k:u8           reader r re-attaches (history k frames; 0 = live tail)
//   8 r:u8                supervisor releases reader r's slot, then re-activates it
//   9                     supervisor close (writer gone)
//  10 n:u8                honest writer TryWriteBatch of n % 8 frames
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "dataplane/broadcast.h"

namespace sd = shmlane::dataplane;

namespace {

struct Input {
  const uint8_t* p;
  size_t n;
  template <typename T>
  bool Get(T* out) {
    if (n < sizeof(T)) return false;
    std::memcpy(out, p, sizeof(T));
    p += sizeof(T);
    n -= sizeof(T);
    return true;
  }
};

constexpr uint32_t kReaders = 3;

struct World {
  sd::Segment ring;  // the hostile writer's (and supervisor's) read-write mapping
  std::shared_ptr<const sd::Doorbell> writer_bell;
  std::vector<sd::Segment> pages;
  std::vector<std::shared_ptr<const sd::Doorbell>> reader_bells, writer_bells;
  std::optional<sd::BroadcastWriter> writer;
  std::optional<sd::BroadcastReader> readers[kReaders];
  bool broken[kReaders] = {};
};

void CheckView(const sd::BroadcastReader& r, std::span<const std::byte> d) {
  const std::byte* lo = r.ring().data();
  const std::byte* hi = lo + r.ring().size();
  if (d.size() > r.max_frame_bytes()) __builtin_trap();
  if (!d.empty() && (d.data() < lo || d.data() + d.size() > hi)) __builtin_trap();
}

void Attach(World& w, uint32_t i, uint8_t history) {
  w.readers[i].reset();
  w.broken[i] = false;
  absl::StatusOr<sd::UniqueFd> fd = sd::ReopenReadOnly(w.ring);
  if (!fd.ok()) __builtin_trap();
  absl::StatusOr<sd::Segment> ro = sd::Segment::Map(std::move(*fd), sd::Access::kReadOnly);
  absl::StatusOr<sd::Segment> page = sd::Segment::Map(*w.pages[i].DupFd(), sd::Access::kReadWrite);
  if (!ro.ok() || !page.ok()) __builtin_trap();
  const sd::ReaderStart start = history == 0
                                    ? sd::ReaderStart{sd::ReaderStart::Mode::kLiveTail, 0}
                                    : sd::ReaderStart{sd::ReaderStart::Mode::kHistory, history};
  // Attach validates the (scribbled) header: an error is a fine answer.
  absl::StatusOr<sd::BroadcastReader> r = sd::BroadcastReader::Attach(
      std::move(*ro), std::move(*page), i, {w.reader_bells[i], w.writer_bells[i]}, start,
      sd::WaitOptions{absl::ZeroDuration()});
  if (r.ok()) w.readers[i].emplace(std::move(*r));
}

void Note(World& w, uint32_t i, sd::BroadcastReadResult res) {
  if (w.broken[i] && res != sd::BroadcastReadResult::kBroken) __builtin_trap();  // sticky
  if (res == sd::BroadcastReadResult::kBroken) w.broken[i] = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sd::BroadcastOptions o;
  o.ring_bytes = 4096;
  o.max_frame_bytes = 1024;
  o.max_readers = kReaders;
  o.sample_every = 3;
  o.history_frames = 4;
  Input in{data, size};
  uint8_t policy = 0;
  if (!in.Get(&policy)) return 0;
  o.policy = static_cast<sd::SlowReaderPolicy>(1 + policy % 3);
  if (o.policy == sd::SlowReaderPolicy::kDisconnect) o.detach_lag_bytes = 2048;
  World w;
  absl::StatusOr<sd::Segment> ring = sd::CreateBroadcastRing(o);
  if (!ring.ok()) __builtin_trap();
  w.ring = std::move(*ring);
  w.writer_bell = std::make_shared<const sd::Doorbell>(*sd::Doorbell::Create());
  const sd::WaitOptions no_spin{absl::ZeroDuration()};
  absl::StatusOr<sd::BroadcastWriter> writer = sd::BroadcastWriter::Attach(
      *sd::Segment::Map(*w.ring.DupFd(), sd::Access::kReadWrite), {w.writer_bell}, no_spin);
  if (!writer.ok()) __builtin_trap();
  w.writer.emplace(std::move(*writer));
  for (uint32_t i = 0; i < kReaders; ++i) {
    absl::StatusOr<sd::Segment> page = sd::CreateReaderPage(w.ring, i);
    if (!page.ok() || !sd::ActivateReaderSlot(w.ring, i).ok()) __builtin_trap();
    w.pages.push_back(std::move(*page));
    w.reader_bells.push_back(std::make_shared<const sd::Doorbell>(*sd::Doorbell::Create()));
    w.writer_bells.push_back(std::make_shared<const sd::Doorbell>(*sd::Doorbell::Create()));
    if (!w.writer
             ->AddReader(i, *sd::Segment::Map(*w.pages[i].DupFd(), sd::Access::kReadOnly),
                         w.reader_bells[i], w.writer_bells[i])
             .ok()) {
      __builtin_trap();
    }
    Attach(w, i, 0);
  }
  const uint64_t header_bytes = sd::BroadcastHeaderBytes(kReaders);
  std::vector<std::byte> buf(2048), payload(1024, std::byte{0x5a});
  const sd::Deadline past = sd::Deadline::AtNs(0);
  for (int steps = 0; steps < 2048; ++steps) {
    uint8_t op = 0;
    if (!in.Get(&op)) break;
    uint8_t ri = 0;
    switch (op % 11) {
      case 0:
      case 1: {
        uint16_t off = 0;
        uint64_t value = 0;
        if (!in.Get(&off) || !in.Get(&value)) return 0;
        const bool header = op % 11 == 0;
        std::byte* base = w.ring.data() + (header ? 0 : header_bytes);
        const size_t span = header ? header_bytes : o.ring_bytes;
        std::memcpy(base + ((off % span) & ~size_t{7}), &value, sizeof(value));
        break;
      }
      case 2: {
        uint16_t len = 0;
        if (!in.Get(&len)) return 0;
        (void)w.writer->TryWrite({payload.data(), len % 700u});
        break;
      }
      case 3: {
        if (!in.Get(&ri)) return 0;
        auto& r = w.readers[ri % kReaders];
        if (!r) break;
        size_t n = 0;
        const sd::BroadcastReadResult res = r->TryRead(buf, &n);
        if (res == sd::BroadcastReadResult::kOk && n > o.max_frame_bytes) __builtin_trap();
        Note(w, ri % kReaders, res);
        break;
      }
      case 4: {
        if (!in.Get(&ri)) return 0;
        auto& r = w.readers[ri % kReaders];
        if (!r) break;
        sd::BroadcastPeek p = r->Peek();
        Note(w, ri % kReaders, p.result);
        if (p.result == sd::BroadcastReadResult::kOk) {
          CheckView(*r, p.data);
          (void)r->Release();
        }
        break;
      }
      case 5: {
        uint8_t max = 0;
        if (!in.Get(&ri) || !in.Get(&max)) return 0;
        auto& r = w.readers[ri % kReaders];
        if (!r) break;
        sd::BroadcastReadResult res = sd::BroadcastReadResult::kOk;
        (void)r->Drain([&](std::span<const std::byte> d) { CheckView(*r, d); }, max, &res);
        if (max > 0) Note(w, ri % kReaders, res);  // Drain(0) looks at nothing
        break;
      }
      case 6: {
        if (!in.Get(&ri)) return 0;
        auto& r = w.readers[ri % kReaders];
        if (!r) break;
        size_t n = 0;
        Note(w, ri % kReaders, r->Read(buf, &n, past));
        break;
      }
      case 7: {
        uint8_t k = 0;
        if (!in.Get(&ri) || !in.Get(&k)) return 0;
        Attach(w, ri % kReaders, k);
        break;
      }
      case 8: {
        if (!in.Get(&ri)) return 0;
        const uint32_t i = ri % kReaders;
        (void)sd::ReleaseReaderSlot(w.ring, i, w.writer_bell.get(), w.reader_bells[i].get());
        (void)sd::ActivateReaderSlot(w.ring, i);  // may fail on a scribbled header
        break;
      }
      case 9: {
        const sd::Doorbell* bells[kReaders];
        for (uint32_t i = 0; i < kReaders; ++i) bells[i] = w.reader_bells[i].get();
        sd::SupervisorCloseBroadcast(w.ring, sd::kClosedProducerGone, w.writer_bell.get(), bells);
        break;
      }
      case 10: {
        uint8_t n = 0;
        if (!in.Get(&n)) return 0;
        std::vector<std::span<const std::byte>> frames;
        for (uint8_t i = 0; i < n % 8; ++i) frames.emplace_back(payload.data(), 13u * i + 1);
        sd::WriteResult why;
        (void)w.writer->TryWriteBatch(frames, &why);
        break;
      }
    }
  }
  // Observers read the same scribbled memory.
  (void)sd::ObserveBroadcast(w.ring);
  for (uint32_t i = 0; i < kReaders; ++i) (void)sd::ObserveReaderPage(w.pages[i], &w.ring);
  return 0;
}
