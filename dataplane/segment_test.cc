#include "dataplane/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "dataplane/doorbell.h"
#include "gtest/gtest.h"

namespace shmlane::dataplane {
namespace {

TEST(SegmentTest, CreateIsSealedAndMapped) {
  absl::StatusOr<Segment> seg = Segment::Create("test", 8192);
  ASSERT_TRUE(seg.ok()) << seg.status();
  EXPECT_EQ(seg->size(), 8192u);
  std::memset(seg->data(), 0xab, seg->size());
  const int seals = fcntl(seg->fd(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  // A peer holding the fd cannot shrink or grow it.
  EXPECT_NE(ftruncate(seg->fd(), 4096), 0);
  EXPECT_NE(ftruncate(seg->fd(), 16384), 0);
  EXPECT_NE(fcntl(seg->fd(), F_ADD_SEALS, F_SEAL_WRITE), 0);  // sealing is sealed
  EXPECT_NE(fcntl(seg->fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(SegmentTest, MapSeesSameBytes) {
  absl::StatusOr<Segment> seg = Segment::Create("test", 4096);
  ASSERT_TRUE(seg.ok());
  seg->data()[17] = std::byte{42};
  absl::StatusOr<UniqueFd> fd = seg->DupFd();
  ASSERT_TRUE(fd.ok());
  absl::StatusOr<Segment> ro = Segment::Map(std::move(*fd), Access::kReadOnly);
  ASSERT_TRUE(ro.ok()) << ro.status();
  EXPECT_EQ(ro->data()[17], std::byte{42});
  EXPECT_EQ(ro->size(), 4096u);
  EXPECT_EQ(ro->access(), Access::kReadOnly);
}

TEST(SegmentTest, MapRefusesUnsealedMemfdAndOtherFiles) {
  UniqueFd unsealed(memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_TRUE(unsealed.valid());
  ASSERT_EQ(ftruncate(unsealed.get(), 4096), 0);
  absl::StatusOr<Segment> a = Segment::Map(std::move(unsealed), Access::kReadWrite);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kDataLoss) << a.status();

  int p[2];
  ASSERT_EQ(pipe(p), 0);
  close(p[1]);
  absl::StatusOr<Segment> b = Segment::Map(UniqueFd(p[0]), Access::kReadOnly);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDataLoss) << b.status();

  absl::StatusOr<Segment> c = Segment::Map(UniqueFd(), Access::kReadOnly);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Segment::Create("zero", 0).ok());
}

TEST(DoorbellTest, RingWaitAndTimeout) {
  absl::StatusOr<Doorbell> bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  EXPECT_FALSE(bell->Wait(absl::Now() + absl::Milliseconds(5)));
  bell->Ring();
  bell->Ring();
  EXPECT_TRUE(bell->Wait(absl::Now() + absl::Seconds(5)));
  // Both rings were consumed by one wait.
  EXPECT_FALSE(bell->Wait(absl::Now() + absl::Milliseconds(1)));
}

TEST(DoorbellTest, AlsoFdWakesTheWaiter) {
  absl::StatusOr<Doorbell> bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  EXPECT_TRUE(bell->Wait(absl::Now() + absl::Seconds(5), p[0]));
  close(p[0]);
  close(p[1]);
}

TEST(DoorbellTest, AdoptRefusesNonEventfd) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  close(p[1]);
  EXPECT_EQ(Doorbell::Adopt(UniqueFd(p[0])).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<Doorbell> bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  absl::StatusOr<UniqueFd> dup = bell->DupFd();
  ASSERT_TRUE(dup.ok());
  absl::StatusOr<Doorbell> adopted = Doorbell::Adopt(std::move(*dup));
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  adopted->Ring();
  EXPECT_TRUE(bell->Wait(absl::Now() + absl::Seconds(5)));
}

}  // namespace
}  // namespace shmlane::dataplane
