#include "bench/loadgen/frame.h"

namespace shmlane::bench {
namespace {

uint64_t LoadWord(const std::byte* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

}  // namespace

FrameSums SumFrame(std::span<const std::byte> frame) {
  const std::byte* p = frame.data();
  size_t n = frame.size();
  // Four independent lanes keep the adds of consecutive words apart.
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
  for (; n >= 32; p += 32, n -= 32) {
    a0 += LoadWord(p);
    a1 += LoadWord(p + 8);
    a2 += LoadWord(p + 16);
    a3 += LoadWord(p + 24);
    b0 += a0;
    b1 += a1;
    b2 += a2;
    b3 += a3;
  }
  FrameSums s;
  s.a[0] = a0, s.a[1] = a1, s.a[2] = a2, s.a[3] = a3;
  s.b[0] = b0, s.b[1] = b1, s.b[2] = b2, s.b[3] = b3;
  int lane = 0;
  for (; n >= 8; p += 8, n -= 8, ++lane) {
    s.a[lane] += LoadWord(p);
    s.b[lane] += s.a[lane];
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    s.a[lane] += w;
    s.b[lane] += s.a[lane];
  }
  return s;
}

uint64_t MixSums(const FrameSums& sums) {
  // Independent multiplies by odd constants (a few cycles, not a serial
  // hash): lanes and the two sums stay distinguishable.
  const uint64_t a = sums.a[0] + sums.a[1] * 0x9e3779b97f4a7c15 + sums.a[2] * 0xc2b2ae3d27d4eb4f +
                     sums.a[3] * 0x165667b19e3779f9;
  const uint64_t b = sums.b[0] + sums.b[1] * 0xff51afd7ed558ccd + sums.b[2] * 0xc4ceb9fe1a85ec53 +
                     sums.b[3] * 0x27d4eb2f165667c5;
  // The offset makes an all-zero frame (a ring never written) fail.
  return (a ^ ((b << 32) | (b >> 32))) + 0x6a09e667f3bcc909;
}

namespace {

// The sums with the stored checksum word (the first of lane 2) taken back
// out; *stored receives it.
FrameSums SumsWithoutChecksum(std::span<const std::byte> frame, uint64_t* stored) {
  FrameSums s = SumFrame(frame);
  *stored = 0;
  if (frame.size() >= kFrameChecksumOffset + 8) {
    *stored = LoadWord(frame.data() + kFrameChecksumOffset);
    s.a[2] -= *stored;
    s.b[2] -= *stored * LaneWords(frame.size(), 2);
  }
  return s;
}

}  // namespace

uint64_t FrameChecksum(std::span<const std::byte> frame) {
  uint64_t stored;
  return MixSums(SumsWithoutChecksum(frame, &stored));
}

bool VerifyFrame(std::span<const std::byte> frame) {
  if (frame.size() < kFrameMinTouchBytes) return false;
  uint64_t stored;
  const FrameSums s = SumsWithoutChecksum(frame, &stored);
  return MixSums(s) == stored;
}

FrameSealer::FrameSealer(std::span<std::byte> frame, uint64_t seed)
    : frame_(frame), has_sequence_(frame.size() >= 32) {
  uint64_t state = seed * 0x2545f4914f6cdd1d + 1;
  size_t i = 0;
  for (; i + 8 <= frame.size(); i += 8) {
    const uint64_t w = SplitMix64(&state);
    std::memcpy(frame.data() + i, &w, 8);
  }
  if (i < frame.size()) {
    const uint64_t w = SplitMix64(&state);
    std::memcpy(frame.data() + i, &w, frame.size() - i);
  }
  std::memset(frame.data(), 0, has_sequence_ ? 32 : kFrameMinTouchBytes);
  pattern_ = SumFrame(frame);
  for (int j = 0; j < 4; ++j) weight_[j] = LaneWords(frame.size(), j);
}

void FrameSealer::Seal(const FrameStamps& stamps, uint64_t sequence) {
  FrameSums s = pattern_;
  const uint64_t intended = static_cast<uint64_t>(stamps.intended_ns);
  const uint64_t actual = static_cast<uint64_t>(stamps.actual_ns);
  std::memcpy(frame_.data(), &intended, 8);
  std::memcpy(frame_.data() + 8, &actual, 8);
  s.a[0] += intended;
  s.b[0] += intended * weight_[0];
  s.a[1] += actual;
  s.b[1] += actual * weight_[1];
  if (has_sequence_) {
    std::memcpy(frame_.data() + 24, &sequence, 8);
    s.a[3] += sequence;
    s.b[3] += sequence * weight_[3];
  }
  const uint64_t checksum = MixSums(s);
  std::memcpy(frame_.data() + kFrameChecksumOffset, &checksum, 8);
}

}  // namespace shmlane::bench
