// Pins the shared-memory layout: a failure here means the byte layout moved,
// which breaks every peer built from an older tree.
#include "dataplane/lane_layout.h"

#include <cstddef>

#include "gtest/gtest.h"

namespace shmlane::dataplane {
namespace {

constexpr char kBump[] =
    "the lane layout changed: bump kLayoutMajor (or kLayoutMinor for an append into reserved "
    "space) in lane_layout.h and update docs/shm_layout.md";

TEST(LaneLayoutTest, BlockOffsetsArePinned) {
  EXPECT_EQ(offsetof(LaneBlocks, header), 0u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, producer_index), 128u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, producer_control), 256u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, producer_counters), 384u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, consumer_index), 512u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, consumer_control), 640u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, consumer_counters), 768u) << kBump;
  EXPECT_EQ(offsetof(LaneBlocks, supervisor), 1152u) << kBump;
  EXPECT_EQ(sizeof(LaneBlocks), 1280u) << kBump;
  EXPECT_EQ(kLaneHeaderBytes, 4096u) << kBump;
}

TEST(LaneLayoutTest, FieldOffsetsArePinned) {
  EXPECT_EQ(offsetof(LaneHeader, magic), 0u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, version), 8u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, header_bytes), 12u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, ring_bytes), 16u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, max_frame_bytes), 24u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, policy), 28u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, sample_every), 32u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, created_unix_ns), 40u) << kBump;
  EXPECT_EQ(offsetof(LaneHeader, lane_id), 48u) << kBump;
  EXPECT_EQ(offsetof(ProducerControl, waiting), 0u) << kBump;
  EXPECT_EQ(offsetof(ProducerControl, closed), 8u) << kBump;
  EXPECT_EQ(offsetof(ProducerControl, need_bytes), 12u) << kBump;
  EXPECT_EQ(sizeof(ProducerControl::waiting), 8u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, frames), 0u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, bytes), 8u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, backpressure_events), 16u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, full_waits), 24u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, dropped_frames), 32u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, wakeups_sent), 40u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, wakeups_received), 48u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, broken), 56u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, wakeup_errors), 60u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, spin_ns), 64u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, spin_waits), 72u) << kBump;
  EXPECT_EQ(offsetof(ProducerCounters, spin_wins), 80u) << kBump;
  EXPECT_EQ(offsetof(ConsumerControl, waiting), 0u) << kBump;
  EXPECT_EQ(offsetof(ConsumerControl, closed), 8u) << kBump;
  EXPECT_EQ(sizeof(ConsumerControl::waiting), 8u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, frames), 0u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, bytes), 8u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, empty_waits), 16u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, wakeups_sent), 24u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, wakeups_received), 32u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, latency_count), 40u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, latency_sum_ns), 48u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, broken), 56u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, wakeup_errors), 60u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, latency_buckets), 64u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, spin_ns), 320u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, spin_waits), 328u) << kBump;
  EXPECT_EQ(offsetof(ConsumerCounters, spin_wins), 336u) << kBump;
  EXPECT_EQ(offsetof(SupervisorControl, closed_by), 0u) << kBump;
  EXPECT_EQ(sizeof(FrameHeader), 8u) << kBump;
  EXPECT_EQ(kLaneMagic, 0x314e414c4d485300ULL) << kBump;
  EXPECT_EQ(kLayoutMajor, 2u) << kBump;
  EXPECT_EQ(kLayoutMinor, 1u) << kBump;
}

TEST(LaneLayoutTest, LatencyBucketsAreLog2) {
  EXPECT_EQ(LatencyBucketFor(0), 0u);
  EXPECT_EQ(LatencyBucketFor(255), 0u);
  EXPECT_EQ(LatencyBucketFor(256), 1u);
  EXPECT_EQ(LatencyBucketFor(1000), 2u);        // [512, 1024)
  EXPECT_EQ(LatencyBucketFor(1024), 3u);        // [1024, 2048)
  EXPECT_EQ(LatencyBucketFor(1'000'000), 12u);  // [2^19, 2^20)
  for (uint32_t i = 0; i + 1 < kLatencyBuckets; ++i) {
    const uint64_t upper = LatencyBucketUpperNs(i);
    EXPECT_EQ(LatencyBucketFor(upper - 1), i) << "bucket " << i;
    EXPECT_EQ(LatencyBucketFor(upper), i + 1) << "bucket " << i;
  }
  EXPECT_EQ(LatencyBucketUpperNs(kLatencyBuckets - 1), UINT64_MAX);
  EXPECT_EQ(LatencyBucketFor(UINT64_MAX), kLatencyBuckets - 1);
}

}  // namespace
}  // namespace shmlane::dataplane
