// Fuzz target: Attach and Observe on a segment whose header the input wrote.
// A peer (or a daemon of another version) may hand over any memfd: wrong
// magic, major version, header size, ring size against the real mapping,
// frame limit, policy, indices. Every such segment must be refused with a
// status (DataLoss for a bad segment, InvalidArgument for a bad call), never
// crash or read outside the mapping; one that is accepted must behave as a
// lane (frames written come back exactly).
//
// Input: [size selector][mode][body]. mode bit 0: start from a valid header
// and apply body as (offset u16, value u64) patches; else body is copied raw
// over the start of the segment. mode bit 1: also attach with an invalid
// (default-constructed) doorbell, which must be refused (issue 8 item 8).
// After the header, remaining patch bytes size the frames of a short session.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/lane.h"
#include "tests/fuzz/fuzz_harness.h"

namespace shmlane::fuzz {
namespace {

constexpr size_t kSizes[8] = {100, 4095, 4096, 8192, 8193, 12288, 4096 + 65536, 4096 + 3 * 4096};

void ExpectRefusal(const char* what, const absl::Status& s) {
  if (s.code() != absl::StatusCode::kDataLoss && s.code() != absl::StatusCode::kInvalidArgument) {
    Fail("%s refused with %s (want DataLoss or InvalidArgument)", what, s.ToString().c_str());
  }
}

void WriteValidHeader(const ShmView& v, size_t size) {
  using B = sd::LaneBlocks;
  const uint64_t ring = size > sd::kLaneHeaderBytes ? size - sd::kLaneHeaderBytes : 0;
  v.Store<uint64_t>(offsetof(sd::LaneHeader, magic), sd::kLaneMagic);
  v.Store<uint32_t>(offsetof(sd::LaneHeader, header_bytes), sd::kLaneHeaderBytes);
  v.Store<uint64_t>(offsetof(sd::LaneHeader, ring_bytes), ring);
  v.Store<uint32_t>(offsetof(sd::LaneHeader, max_frame_bytes),
                    static_cast<uint32_t>(std::min<uint64_t>(sd::MaxFrameBytesFor(ring), 1000)));
  v.Store<uint32_t>(offsetof(sd::LaneHeader, policy), 1);
  v.Store<uint32_t>(offsetof(sd::LaneHeader, sample_every), 3);
  (void)sizeof(B);
  std::atomic_ref<uint32_t>(
      *reinterpret_cast<uint32_t*>(v.base + offsetof(sd::LaneHeader, version)))
      .store((uint32_t{sd::kLayoutMajor} << 16) | sd::kLayoutMinor, std::memory_order_release);
}

}  // namespace
}  // namespace shmlane::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shmlane::fuzz;  // NOLINT(google-build-using-namespace): a fuzz entry point
  Bytes in(data, size);
  const size_t bytes = kSizes[in.U8() % 8];
  const uint8_t mode = in.U8();
  absl::StatusOr<sd::Segment> seg = sd::Segment::Create("attach-fuzz", bytes);
  if (!seg.ok()) Fail("Segment::Create(%zu): %s", bytes, seg.status().ToString().c_str());
  const ShmView v{seg->data(), 0, 0};
  const size_t page = std::min<size_t>(bytes, sd::kLaneHeaderBytes);
  std::vector<uint16_t> frame_sizes;
  if ((mode & 1) != 0) {
    if (bytes >= sd::kLaneHeaderBytes) WriteValidHeader(v, bytes);
    // Patches; two-thirds of them land in the first 1280 bytes (the blocks).
    for (int i = 0; i < 16 && in.size() >= 10; ++i) {
      const uint16_t off = in.U16();
      const uint64_t value = in.U64();
      const size_t span =
          (off & 0x8000) != 0 ? page : std::min<size_t>(page, sizeof(sd::LaneBlocks));
      const size_t at = (off % span) & ~size_t{7};
      if (at + 8 <= bytes) v.Store<uint64_t>(at, value);
    }
  } else {
    Bytes raw = in.Take(page);
    for (size_t at = 0; at + 8 <= page && !raw.empty(); at += 8) v.Store<uint64_t>(at, raw.U64());
  }
  while (!in.empty() && frame_sizes.size() < 32) frame_sizes.push_back(in.U16());

  auto make_bell = [] {
    absl::StatusOr<sd::Doorbell> b = sd::Doorbell::Create();
    if (!b.ok()) Fail("Doorbell::Create: %s", b.status().ToString().c_str());
    return std::make_shared<const sd::Doorbell>(std::move(*b));
  };
  auto pbell = make_bell();
  auto cbell = make_bell();
  auto map = [&](sd::Access a) {
    absl::StatusOr<sd::Segment> m = sd::Segment::Map(*seg->DupFd(), a);
    if (!m.ok()) Fail("Segment::Map of a sealed memfd: %s", m.status().ToString().c_str());
    return std::move(*m);
  };

  // What an observer with a read-only mapping makes of it.
  absl::StatusOr<sd::LaneSnapshot> snap = sd::Observe(map(sd::Access::kReadOnly));
  if (!snap.ok()) {
    if (snap.status().code() != absl::StatusCode::kDataLoss) {
      Fail("Observe refused with %s (want DataLoss)", snap.status().ToString().c_str());
    }
  } else {
    if (snap->ring_bytes + sd::kLaneHeaderBytes != bytes) {
      Fail("Observe accepted ring_bytes %lu for a segment of %zu bytes", snap->ring_bytes, bytes);
    }
    if (snap->max_frame_bytes > sd::MaxFrameBytesFor(snap->ring_bytes)) {
      Fail("Observe accepted max_frame_bytes %u for a ring of %lu", snap->max_frame_bytes,
           snap->ring_bytes);
    }
    if (snap->occupancy_bytes > snap->ring_bytes) Fail("Observe: occupancy > ring");
  }

  // Calls that are wrong whatever the segment holds.
  {
    absl::StatusOr<sd::Consumer> ro =
        sd::Consumer::Attach(map(sd::Access::kReadOnly), {cbell, pbell});
    if (ro.ok()) Fail("Consumer::Attach accepted a read-only mapping");
    ExpectRefusal("Consumer::Attach (read-only)", ro.status());
    absl::StatusOr<sd::Producer> nobell =
        sd::Producer::Attach(map(sd::Access::kReadWrite), {pbell, nullptr});
    if (nobell.ok()) Fail("Producer::Attach accepted a null consumer doorbell");
    ExpectRefusal("Producer::Attach (no bell)", nobell.status());
  }
  if ((mode & 2) != 0 && OracleEnabled("invalid-bell")) {
    auto invalid = std::make_shared<const sd::Doorbell>();
    absl::StatusOr<sd::Consumer> c =
        sd::Consumer::Attach(map(sd::Access::kReadWrite), {invalid, pbell});
    if (c.ok())
      Fail("Consumer::Attach accepted an invalid (fd -1) doorbell: it could park forever");
    absl::StatusOr<sd::Producer> p =
        sd::Producer::Attach(map(sd::Access::kReadWrite), {pbell, invalid});
    if (p.ok()) Fail("Producer::Attach accepted an invalid (fd -1) peer doorbell");
  }

  absl::StatusOr<sd::Consumer> consumer =
      sd::Consumer::Attach(map(sd::Access::kReadWrite), {cbell, pbell}, {absl::ZeroDuration()});
  absl::StatusOr<sd::Producer> producer =
      sd::Producer::Attach(map(sd::Access::kReadWrite), {pbell, cbell}, {absl::ZeroDuration()});
  if (!consumer.ok()) ExpectRefusal("Consumer::Attach", consumer.status());
  if (!producer.ok()) ExpectRefusal("Producer::Attach", producer.status());
  if (!snap.ok() && (consumer.ok() || producer.ok())) {
    Fail("Attach accepted a segment that Observe rejects: %s", snap.status().ToString().c_str());
  }
  if (!consumer.ok() || !producer.ok()) return 0;

  // Both sides accepted it: a short session must behave. The frames come
  // back exactly when the input left the indices equal (a ring with nothing
  // unread); otherwise only the usual "result, never crash" holds.
  const bool empty_start = v.head() == v.tail();
  const uint32_t max = producer->max_frame_bytes();
  std::vector<std::byte> frame(65536), out(65536);
  uint32_t written = 0;
  std::vector<uint32_t> lens;
  for (uint16_t raw : frame_sizes) {
    const uint32_t len = raw % (max + 2);
    FillFrame(7, written, std::span<std::byte>(frame.data(), len));
    const sd::WriteResult r = producer->TryWrite(std::span<const std::byte>(frame.data(), len));
    if (r == sd::WriteResult::kOk) {
      if (len > max) Fail("TryWrite accepted %u bytes > max %u", len, max);
      lens.push_back(len);
      ++written;
    } else if (r == sd::WriteResult::kTooLarge && len <= max) {
      Fail("TryWrite of %u bytes (max %u) returned kTooLarge", len, max);
    }
  }
  uint32_t got = 0;
  for (int i = 0; i < 64; ++i) {
    size_t n = 0;
    const sd::ReadResult r = consumer->TryRead(out, &n);
    if (r != sd::ReadResult::kOk) {
      if (empty_start && r == sd::ReadResult::kBroken) {
        Fail("a lane the input left empty broke: %s", consumer->status().ToString().c_str());
      }
      if (r == sd::ReadResult::kBroken &&
          consumer->status().code() != absl::StatusCode::kDataLoss) {
        Fail("kBroken with status %s", consumer->status().ToString().c_str());
      }
      break;
    }
    if (n > consumer->max_frame_bytes()) Fail("read %zu bytes > max", n);
    if (empty_start) {
      if (got >= written) Fail("read frame #%u, only %u were written", got, written);
      if (n != lens[got]) Fail("frame #%u: %zu bytes, %u written", got, n, lens[got]);
      for (size_t k = 0; k < n; ++k) {
        if (out[k] != FrameByte(7, got, k)) Fail("frame #%u differs at byte %zu", got, k);
      }
    }
    ++got;
  }
  if (empty_start && got != written) Fail("wrote %u frames, read back %u", written, got);
  return 0;
}
