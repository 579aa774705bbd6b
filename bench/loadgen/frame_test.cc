// The payload checksum (frame.h): what the sender seals is what the
// receiver verifies, for every frame length, and a changed, shifted or
// reordered payload fails.
#include "bench/loadgen/frame.h"

#include <vector>

#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

TEST(FrameTest, SealedFramesVerifyAtEveryLength) {
  for (size_t size = kFrameMinTouchBytes; size <= 300; ++size) {
    std::vector<std::byte> frame(size);
    FrameSealer sealer(frame, size);
    for (uint64_t seq = 0; seq < 3; ++seq) {
      sealer.Seal({static_cast<int64_t>(1000 + seq), static_cast<int64_t>(77 * seq)}, seq);
      EXPECT_TRUE(VerifyFrame(frame)) << "size " << size << " seq " << seq;
      // The sender's incremental checksum equals one computed from scratch.
      uint64_t stored;
      std::memcpy(&stored, frame.data() + kFrameChecksumOffset, 8);
      EXPECT_EQ(stored, FrameChecksum(frame)) << size;
      FrameStamps stamps;
      ASSERT_TRUE(ReadStamps(frame, &stamps));
      EXPECT_EQ(stamps.intended_ns, static_cast<int64_t>(1000 + seq));
    }
  }
}

TEST(FrameTest, LargeFramesVerify) {
  for (size_t size : {size_t{65536}, size_t{65536 + 5}, size_t{1} << 20}) {
    std::vector<std::byte> frame(size);
    FrameSealer sealer(frame, 3);
    sealer.Seal({123, 456}, 789);
    EXPECT_TRUE(VerifyFrame(frame)) << size;
  }
}

TEST(FrameTest, EveryChangedByteFails) {
  for (size_t size : {size_t{24}, size_t{31}, size_t{64}, size_t{100}}) {
    std::vector<std::byte> frame(size);
    FrameSealer sealer(frame, 9);
    sealer.Seal({1, 2}, 3);
    ASSERT_TRUE(VerifyFrame(frame));
    for (size_t i = 0; i < size; ++i) {
      std::vector<std::byte> bad = frame;
      bad[i] ^= std::byte{0x10};
      EXPECT_FALSE(VerifyFrame(bad)) << "size " << size << " byte " << i;
    }
  }
}

TEST(FrameTest, ReorderedShiftedAndTruncatedPayloadsFail) {
  std::vector<std::byte> frame(256);
  FrameSealer sealer(frame, 5);
  sealer.Seal({10, 20}, 30);
  ASSERT_TRUE(VerifyFrame(frame));
  // Two payload words of one lane swapped: equal sums, different order.
  std::vector<std::byte> swapped = frame;
  std::swap_ranges(swapped.begin() + 64, swapped.begin() + 72, swapped.begin() + 96);
  EXPECT_FALSE(VerifyFrame(swapped));
  // The payload shifted by one byte, as a framing bug would deliver it.
  std::vector<std::byte> shifted = frame;
  std::rotate(shifted.begin() + 32, shifted.begin() + 33, shifted.end());
  EXPECT_FALSE(VerifyFrame(shifted));
  // Too short for a checksum, or cut short.
  EXPECT_FALSE(VerifyFrame(std::span<const std::byte>(frame.data(), 23)));
  EXPECT_FALSE(VerifyFrame(std::span<const std::byte>(frame.data(), 200)));
  // All zeros (a ring that was never written) does not pass either.
  std::vector<std::byte> zeros(256);
  EXPECT_FALSE(VerifyFrame(zeros));
}

TEST(FrameTest, LaneWordsCountsEachLanesWords) {
  EXPECT_EQ(LaneWords(64, 0), 2u);  // words 0, 4
  EXPECT_EQ(LaneWords(64, 3), 2u);  // words 3, 7
  EXPECT_EQ(LaneWords(68, 0), 3u);  // word 8 (4 bytes, padded)
  EXPECT_EQ(LaneWords(68, 1), 2u);
  EXPECT_EQ(LaneWords(24, 3), 0u);
  EXPECT_EQ(LaneWords(8, 1), 0u);
}

}  // namespace
}  // namespace shmlane::bench
