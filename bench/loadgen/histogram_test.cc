#include "bench/loadgen/histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

// The reference: the observation at 1-based rank ceil(q * n) of the sorted values.
uint64_t Reference(const std::vector<uint64_t>& sorted, double q) {
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<uint64_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

constexpr double kQuantiles[] = {0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0};

// The histogram reports the upper end of the bucket, so it is never below the
// exact value and at most one sub-bucket width (value / 128) above it.
void ExpectMatchesReference(const Histogram& h, std::vector<uint64_t> values) {
  std::sort(values.begin(), values.end());
  ASSERT_EQ(h.count(), values.size());
  EXPECT_EQ(h.min(), values.front());
  EXPECT_EQ(h.max(), values.back());
  for (double q : kQuantiles) {
    const uint64_t exact = Reference(values, q);
    const uint64_t got = h.ValueAtQuantile(q);
    EXPECT_GE(got, exact) << "q=" << q;
    EXPECT_LE(got, exact + exact / Histogram::kSubBuckets) << "q=" << q;
  }
}

TEST(HistogramTest, EmptyReportsZero) {
  auto h = std::make_unique<Histogram>();
  EXPECT_EQ(h->count(), 0u);
  EXPECT_EQ(h->ValueAtQuantile(0.5), 0u);
  EXPECT_EQ(h->max(), 0u);
  EXPECT_EQ(h->min(), 0u);
}

TEST(HistogramTest, SmallValuesAreExact) {
  auto h = std::make_unique<Histogram>();
  std::vector<uint64_t> values;
  for (uint64_t v = 0; v < 128; ++v) {
    for (uint64_t k = 0; k <= v % 5; ++k) {
      h->Record(v);
      values.push_back(v);
    }
  }
  std::sort(values.begin(), values.end());
  for (double q : kQuantiles) EXPECT_EQ(h->ValueAtQuantile(q), Reference(values, q)) << q;
}

TEST(HistogramTest, BucketsAreContiguousAndMonotonic) {
  for (uint32_t i = 0; i + 2 < Histogram::kBuckets; ++i) {
    const uint64_t upper = Histogram::BucketUpper(i);
    ASSERT_EQ(Histogram::BucketFor(upper), i);
    ASSERT_EQ(Histogram::BucketFor(upper + 1), i + 1);
  }
}

TEST(HistogramTest, LogNormalMatchesSortedReference) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(9.0, 1.5);  // median ~8 us, long tail
  auto h = std::make_unique<Histogram>();
  std::vector<uint64_t> values;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t v = static_cast<uint64_t>(dist(rng));
    h->Record(v);
    values.push_back(v);
  }
  ExpectMatchesReference(*h, values);
}

TEST(HistogramTest, WideUniformMatchesSortedReference) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> exponent(0, 46);
  auto h = std::make_unique<Histogram>();
  std::vector<uint64_t> values;
  for (int i = 0; i < 100000; ++i) {
    const uint64_t base = uint64_t{1} << exponent(rng);
    const uint64_t v = base + rng() % base;
    h->Record(v);
    values.push_back(v);
  }
  ExpectMatchesReference(*h, values);
}

TEST(HistogramTest, MergeEqualsRecordingEverything) {
  std::mt19937_64 rng(3);
  std::exponential_distribution<double> dist(1.0 / 20000);
  auto all = std::make_unique<Histogram>();
  auto merged = std::make_unique<Histogram>();
  std::vector<uint64_t> values;
  for (int part = 0; part < 8; ++part) {
    auto h = std::make_unique<Histogram>();
    for (int i = 0; i < 10000 * (part + 1); ++i) {
      const uint64_t v = static_cast<uint64_t>(dist(rng)) + 1000 * part;
      h->Record(v);
      all->Record(v);
      values.push_back(v);
    }
    merged->Merge(*h);
  }
  ExpectMatchesReference(*merged, values);
  EXPECT_EQ(merged->sum(), all->sum());
  for (double q : kQuantiles) EXPECT_EQ(merged->ValueAtQuantile(q), all->ValueAtQuantile(q));
}

TEST(HistogramTest, HugeValuesClampIntoLastBucket) {
  auto h = std::make_unique<Histogram>();
  h->Record(UINT64_MAX / 2);
  h->Record(1);
  EXPECT_EQ(h->max(), UINT64_MAX / 2);
  EXPECT_EQ(h->ValueAtQuantile(1.0), UINT64_MAX / 2);
  EXPECT_EQ(h->ValueAtQuantile(0.5), 1u);
}

}  // namespace
}  // namespace shmlane::bench
