// Fuzz target: the input is a script played by a hostile peer that scribbles
// arbitrary values into the lane header, indices and data area between the
// consumer's (and an honest producer's) calls. Whatever it does, the
// consumer and producer must only return results: no crash, no access
// outside the mapping (ASan), no endless loop (libFuzzer's timeout).
//
// Script: a sequence of records [op u8][arg...]:
//   0 off:u16 value:u64   store value at off in the header page (mod page)
//   1 off:u16 value:u64   store value at off in the ring (mod ring)
//   2 len:u16             honest producer TryWrite of len bytes
//   3                     consumer TryRead
//   4                     consumer Peek, then Release
//   5 max:u8              consumer Drain of up to max frames
//   6                     consumer Read with an expired deadline
//   7                     supervisor close (producer gone)
//   8                     producer Write with an expired deadline
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "dataplane/lane.h"

namespace sd = shmlane::dataplane;

namespace {

struct Reader {
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

void CheckInside(const sd::Segment& seg, std::span<const std::byte> frame) {
  const std::byte* lo = seg.data() + sd::kLaneHeaderBytes;
  const std::byte* hi = seg.data() + seg.size();
  if (!frame.empty() && (frame.data() < lo || frame.data() + frame.size() > hi)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sd::LaneOptions o;
  o.ring_bytes = 4096;
  o.max_frame_bytes = 512;
  o.sample_every = 3;
  o.policy = sd::BackpressurePolicy::kBlock;
  absl::StatusOr<sd::Segment> creator = sd::CreateLaneSegment(o);
  if (!creator.ok()) __builtin_trap();
  auto pbell = std::make_shared<const sd::Doorbell>(*sd::Doorbell::Create());
  auto cbell = std::make_shared<const sd::Doorbell>(*sd::Doorbell::Create());
  const sd::WaitOptions no_spin{absl::ZeroDuration()};
  absl::StatusOr<sd::Consumer> consumer = sd::Consumer::Attach(
      *sd::Segment::Map(*creator->DupFd(), sd::Access::kReadWrite), {cbell, pbell}, no_spin);
  absl::StatusOr<sd::Producer> producer = sd::Producer::Attach(
      *sd::Segment::Map(*creator->DupFd(), sd::Access::kReadWrite), {pbell, cbell}, no_spin);
  if (!consumer.ok() || !producer.ok()) __builtin_trap();
  const sd::Segment& seg = consumer->segment();
  std::vector<std::byte> buf(1024), payload(1024, std::byte{0x77});
  Reader in{data, size};
  const absl::Time past = absl::InfinitePast();
  for (int steps = 0; steps < 4096; ++steps) {
    uint8_t op = 0;
    if (!in.Get(&op)) break;
    switch (op % 9) {
      case 0:
      case 1: {
        uint16_t off = 0;
        uint64_t value = 0;
        if (!in.Get(&off) || !in.Get(&value)) return 0;
        std::byte* base = creator->data() + (op % 9 == 0 ? 0 : sd::kLaneHeaderBytes);
        const size_t span = op % 9 == 0 ? sd::kLaneHeaderBytes : o.ring_bytes;
        const size_t at = (off % span) & ~size_t{7};
        std::memcpy(base + at, &value, sizeof(value));
        break;
      }
      case 2: {
        uint16_t len = 0;
        if (!in.Get(&len)) return 0;
        (void)producer->TryWrite({payload.data(), len % 600u});
        break;
      }
      case 3: {
        size_t n = 0;
        if (consumer->TryRead(buf, &n) == sd::ReadResult::kOk && n > o.max_frame_bytes) {
          __builtin_trap();
        }
        break;
      }
      case 4: {
        sd::PeekResult f = consumer->Peek();
        if (f.result == sd::ReadResult::kOk) {
          CheckInside(seg, f.data);
          consumer->Release();
        }
        break;
      }
      case 5: {
        uint8_t max = 0;
        if (!in.Get(&max)) return 0;
        (void)consumer->Drain([&](std::span<const std::byte> f) { CheckInside(seg, f); }, max);
        break;
      }
      case 6: {
        size_t n = 0;
        (void)consumer->Read(buf, &n, past);
        break;
      }
      case 7:
        sd::SupervisorClose(*creator, sd::kClosedProducerGone, pbell.get(), cbell.get());
        break;
      case 8:
        (void)producer->Write({payload.data(), 100}, past);
        break;
    }
  }
  // Observers read the same scribbled memory.
  (void)sd::Observe(*creator);
  return 0;
}
