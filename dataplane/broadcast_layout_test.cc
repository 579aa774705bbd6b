// Pins the broadcast ring and cursor page layouts: a failure here means the
// byte layout moved, which breaks every peer built from an older tree.
#include "dataplane/broadcast_layout.h"

#include <cstddef>

#include "gtest/gtest.h"

namespace shmlane::dataplane {
namespace {

constexpr char kBump[] =
    "the broadcast layout changed: bump kBroadcastLayoutMajor (or kBroadcastLayoutMinor for an "
    "append into reserved space) in broadcast_layout.h and update docs/shm_layout.md";

TEST(BroadcastLayoutTest, RingBlocksArePinned) {
  EXPECT_EQ(offsetof(BroadcastBlocks, header), 0u) << kBump;
  EXPECT_EQ(offsetof(BroadcastBlocks, writer_index), 128u) << kBump;
  EXPECT_EQ(offsetof(BroadcastBlocks, writer_control), 256u) << kBump;
  EXPECT_EQ(offsetof(BroadcastBlocks, writer_counters), 384u) << kBump;
  EXPECT_EQ(offsetof(BroadcastBlocks, supervisor), 512u) << kBump;
  EXPECT_EQ(sizeof(BroadcastBlocks), 640u) << kBump;
  EXPECT_EQ(kBroadcastFixedHeaderBytes, 4096u) << kBump;
  EXPECT_EQ(sizeof(SlotControl), 128u) << kBump;
  EXPECT_EQ(BroadcastHeaderBytes(1), 8192u) << kBump;
  EXPECT_EQ(BroadcastHeaderBytes(32), 8192u) << kBump;
  EXPECT_EQ(BroadcastHeaderBytes(33), 12288u) << kBump;
  EXPECT_EQ(BroadcastHeaderBytes(1024), 4096u + 131072u) << kBump;
}

TEST(BroadcastLayoutTest, RingFieldsArePinned) {
  EXPECT_EQ(offsetof(BroadcastHeader, magic), 0u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, version), 8u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, header_bytes), 12u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, ring_bytes), 16u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, max_frame_bytes), 24u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, policy), 28u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, max_readers), 32u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, history_frames), 36u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, sample_every), 40u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, detach_lag_bytes), 48u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, created_unix_ns), 56u) << kBump;
  EXPECT_EQ(offsetof(BroadcastHeader, channel_id), 64u) << kBump;
  EXPECT_EQ(offsetof(WriterIndex, publish), 0u) << kBump;
  EXPECT_EQ(offsetof(WriterIndex, oldest), 8u) << kBump;
  EXPECT_EQ(offsetof(WriterIndex, last_frame), 16u) << kBump;
  EXPECT_EQ(offsetof(WriterControl, waiting), 0u) << kBump;
  EXPECT_EQ(offsetof(WriterControl, closed), 8u) << kBump;
  EXPECT_EQ(offsetof(WriterControl, need_floor), 16u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, frames), 0u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, bytes), 8u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, backpressure_events), 16u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, full_waits), 24u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, readers_detached), 32u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, wakeups_sent), 40u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, wakeups_received), 48u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, broken), 56u) << kBump;
  EXPECT_EQ(offsetof(WriterCounters, wakeup_errors), 60u) << kBump;
  EXPECT_EQ(offsetof(BroadcastSupervisor, closed_by), 0u) << kBump;
  EXPECT_EQ(offsetof(BroadcastSupervisor, slots_generation), 8u) << kBump;
  EXPECT_EQ(offsetof(SlotControl, state), 0u) << kBump;
  EXPECT_EQ(offsetof(SlotControl, detached_epoch), 8u) << kBump;
  EXPECT_EQ(sizeof(BroadcastFrameHeader), 16u) << kBump;
  EXPECT_EQ(offsetof(BroadcastFrameHeader, seq), 8u) << kBump;
  EXPECT_EQ(kBroadcastMagic, 0x3143524240485300ULL) << kBump;
  EXPECT_EQ(kBroadcastLayoutMajor, 1u) << kBump;
}

TEST(BroadcastLayoutTest, ReaderPageIsPinned) {
  EXPECT_EQ(offsetof(ReaderPage, header), 0u) << kBump;
  EXPECT_EQ(offsetof(ReaderPage, index), 128u) << kBump;
  EXPECT_EQ(offsetof(ReaderPage, control), 256u) << kBump;
  EXPECT_EQ(offsetof(ReaderPage, counters), 384u) << kBump;
  EXPECT_EQ(sizeof(ReaderPage), 768u) << kBump;
  EXPECT_EQ(kReaderPageBytes, 4096u) << kBump;
  EXPECT_EQ(offsetof(ReaderPageHeader, magic), 0u) << kBump;
  EXPECT_EQ(offsetof(ReaderPageHeader, version), 8u) << kBump;
  EXPECT_EQ(offsetof(ReaderPageHeader, slot), 12u) << kBump;
  EXPECT_EQ(offsetof(ReaderPageHeader, channel_id), 16u) << kBump;
  EXPECT_EQ(offsetof(ReaderIndex, cursor), 0u) << kBump;
  EXPECT_EQ(offsetof(ReaderIndex, joined_epoch), 8u) << kBump;
  EXPECT_EQ(offsetof(ReaderControl, waiting), 0u) << kBump;
  EXPECT_EQ(offsetof(ReaderControl, closed_epoch), 8u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, frames), 0u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, bytes), 8u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, lapped_frames), 16u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, laps), 24u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, empty_waits), 32u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, wakeups_sent), 40u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, wakeups_received), 48u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, latency_count), 56u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, latency_sum_ns), 64u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, broken), 72u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, wakeup_errors), 76u) << kBump;
  EXPECT_EQ(offsetof(ReaderCounters, latency_buckets), 80u) << kBump;
  EXPECT_EQ(kReaderPageMagic, 0x3155434240485300ULL) << kBump;
}

}  // namespace
}  // namespace shmlane::dataplane
