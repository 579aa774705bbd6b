// Frame layout and the payload checksum.
//
// Bytes [0, 16) of a frame carry its intended and actual send times
// (CLOCK_MONOTONIC ns, native byte order: every process of a run is on the
// same machine) when the frame is at least kFrameStampBytes long. With
// Touch::kRead (frames >= kFrameMinTouchBytes), bytes [16, 24) carry a
// checksum of the whole frame and bytes [24, 32), when present, the sender's
// sequence number; the rest is a per-client pseudo-random pattern.
//
// The checksum reads the frame as 8-byte words (the last one zero-padded),
// the checksum word itself counted as zero, in four interleaved lanes
// (word i goes to lane i % 4) of a Fletcher-style pair of sums: a += w;
// b += a. Both sums are linear in the words, so the sender, whose frames
// differ only in words 0, 1 and 3 (stamps and sequence, each the first word
// of its lane), computes the checksum from the pattern's sums in a few
// operations, while the receiver reads every byte. The second sum makes the
// checksum depend on word order, so shifted or reordered payloads fail too.
// The lanes are combined with independent multiplies: a few cycles per frame.
//
// Thread safety: pure functions; a FrameSealer is used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "bench/loadgen/spec.h"

namespace shmlane::bench {

struct FrameStamps {
  int64_t intended_ns = 0;
  int64_t actual_ns = 0;
};

inline void WriteStamps(std::span<std::byte> frame, const FrameStamps& stamps) {
  if (frame.size() < kFrameStampBytes) return;
  std::memcpy(frame.data(), &stamps.intended_ns, 8);
  std::memcpy(frame.data() + 8, &stamps.actual_ns, 8);
}

// False when the frame is too short to carry stamps.
inline bool ReadStamps(std::span<const std::byte> frame, FrameStamps* stamps) {
  if (frame.size() < kFrameStampBytes) return false;
  std::memcpy(&stamps->intended_ns, frame.data(), 8);
  std::memcpy(&stamps->actual_ns, frame.data() + 8, 8);
  return true;
}

// The two sums of each lane over a frame's words.
struct FrameSums {
  uint64_t a[4] = {0, 0, 0, 0};
  uint64_t b[4] = {0, 0, 0, 0};
};

// Sums over every word of `frame` (the checksum word included as stored).
FrameSums SumFrame(std::span<const std::byte> frame);

// How many words lane `lane` holds in a frame of `bytes` bytes: word
// 4k + lane adds (count - k) times to the lane's second sum.
inline uint64_t LaneWords(size_t bytes, int lane) {
  const uint64_t words = (bytes + 7) / 8;
  return words > static_cast<uint64_t>(lane) ? (words - lane + 3) / 4 : 0;
}

// The checksum from the sums (with the checksum word counted as zero).
uint64_t MixSums(const FrameSums& sums);

// The checksum `frame` should carry.
uint64_t FrameChecksum(std::span<const std::byte> frame);

// True when the frame carries the checksum of its contents. Reads every
// byte once. Frames shorter than kFrameMinTouchBytes carry none: false.
bool VerifyFrame(std::span<const std::byte> frame);

// The sender's side: fills a frame with a per-client pattern once, then
// per frame writes stamps, sequence and checksum without rereading it.
class FrameSealer {
 public:
  // Fills `frame` (>= kFrameMinTouchBytes) with a pseudo-random pattern
  // seeded by `seed`.
  FrameSealer(std::span<std::byte> frame, uint64_t seed);

  // Writes stamps, sequence number (when the frame has room) and checksum
  // into the frame given to the constructor.
  void Seal(const FrameStamps& stamps, uint64_t sequence);

 private:
  std::span<std::byte> frame_;
  FrameSums pattern_;  // with words 0..3 counted as zero
  uint64_t weight_[4];
  bool has_sequence_;
};

}  // namespace shmlane::bench
