// Histogram: a log-linear latency histogram of fixed size, for one process to
// record into and for the harness to merge across processes.
//
// Values below 2^kSubBucketBits nanoseconds have a bucket each (exact). Above
// that, every power-of-two range [2^e, 2^(e+1)) is split into 2^kSubBucketBits
// equal buckets, so a reported value is within 1/2^kSubBucketBits (0.8 %) of
// the true one. Values of 2^kMaxExponent ns (about 78 hours) and more land in
// the last bucket; min, max, count and sum are kept exactly.
//
// The object is a plain array of integers with no pointers, so it can be
// copied into a shared anonymous mapping by a worker process and merged by
// the parent (see harness.h).
//
// Thread safety: none. One thread records; merging needs both sides quiet.
#pragma once

#include <array>
#include <cstdint>

namespace shmlane::bench {

class Histogram {
 public:
  static constexpr uint32_t kSubBucketBits = 7;
  static constexpr uint32_t kSubBuckets = 1u << kSubBucketBits;
  static constexpr uint32_t kMaxExponent = 48;
  // Linear region [0, kSubBuckets) plus kSubBuckets per octave up to 2^kMaxExponent.
  static constexpr uint32_t kBuckets = kSubBuckets * (kMaxExponent - kSubBucketBits + 1);

  Histogram() { Reset(); }

  void Reset();

  // Adds one observation of `value` (nanoseconds, or any non-negative unit).
  void Record(uint64_t value) {
    ++buckets_[BucketFor(value)];
    ++count_;
    sum_ += value;
    if (value < min_) min_ = value;
    if (value > max_) max_ = value;
  }

  // Adds every observation of `other`.
  void Merge(const Histogram& other);

  // The value at quantile q in [0, 1]: the smallest recorded value v such
  // that at least ceil(q * count) observations are <= v, reported as the
  // upper end of v's bucket (clamped to [min, max]). 0 when empty.
  uint64_t ValueAtQuantile(double q) const;

  uint64_t count() const { return count_; }
  uint64_t sum() const { return sum_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }

  // Bucket arithmetic, public for the unit test.
  static constexpr uint32_t BucketFor(uint64_t value) {
    if (value < kSubBuckets) return static_cast<uint32_t>(value);
    const uint32_t exponent = 63u - static_cast<uint32_t>(__builtin_clzll(value));
    if (exponent >= kMaxExponent) return kBuckets - 1;
    // The top kSubBucketBits + 1 bits of value, leading one included.
    const uint32_t mantissa = static_cast<uint32_t>(value >> (exponent - kSubBucketBits));
    return (exponent - kSubBucketBits + 1) * kSubBuckets + (mantissa - kSubBuckets);
  }
  // Largest value that maps to bucket `index`.
  static constexpr uint64_t BucketUpper(uint32_t index) {
    if (index < kSubBuckets) return index;
    if (index >= kBuckets - 1) return UINT64_MAX;
    const uint32_t octave = index / kSubBuckets;  // >= 1
    const uint32_t sub = index % kSubBuckets;
    const uint32_t shift = octave - 1;
    return ((uint64_t{kSubBuckets + sub + 1}) << shift) - 1;
  }

 private:
  uint64_t count_;
  uint64_t sum_;
  uint64_t min_;
  uint64_t max_;
  std::array<uint64_t, kBuckets> buckets_;
};

static_assert(Histogram::BucketFor(0) == 0);
static_assert(Histogram::BucketFor(127) == 127);
static_assert(Histogram::BucketFor(128) == 128);
static_assert(Histogram::BucketFor(255) == 255);
static_assert(Histogram::BucketFor(256) == 256);
static_assert(Histogram::BucketFor(257) == 256);
static_assert(Histogram::BucketUpper(256) == 257);
static_assert(Histogram::BucketFor(UINT64_MAX) == Histogram::kBuckets - 1);

}  // namespace shmlane::bench
