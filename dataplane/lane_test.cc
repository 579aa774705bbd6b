#include "dataplane/lane.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace shmlane::dataplane {
namespace {

std::span<const std::byte> Bytes(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

// memcmp that accepts empty (possibly null) ranges.
bool SameBytes(const std::byte* a, const std::byte* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

std::vector<std::byte> Pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<uint8_t>(seed * 31 + i * 7));
  return v;
}

// A producer and a consumer of one lane in this process, each with its own
// mapping of the memfd, as two processes would have.
struct Pair {
  Segment observer;  // the creator's mapping, used by tests to scribble and observe
  std::shared_ptr<const Doorbell> producer_bell;
  std::shared_ptr<const Doorbell> consumer_bell;
  std::optional<Producer> producer;
  std::optional<Consumer> consumer;

  LaneBlocks* blocks() { return reinterpret_cast<LaneBlocks*>(observer.data()); }
  std::byte* ring() { return observer.data() + kLaneHeaderBytes; }
};

Pair MakePair(LaneOptions options = {}, WaitOptions wait = {}) {
  Pair p;
  absl::StatusOr<Segment> seg = CreateLaneSegment(options);
  EXPECT_TRUE(seg.ok()) << seg.status();
  p.observer = std::move(*seg);
  p.producer_bell = std::make_shared<Doorbell>(*Doorbell::Create());
  p.consumer_bell = std::make_shared<Doorbell>(*Doorbell::Create());
  auto map = [&] {
    absl::StatusOr<Segment> s = Segment::Map(*p.observer.DupFd(), Access::kReadWrite);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  };
  absl::StatusOr<Producer> prod =
      Producer::Attach(map(), LaneBells{p.producer_bell, p.consumer_bell}, wait);
  EXPECT_TRUE(prod.ok()) << prod.status();
  p.producer.emplace(std::move(*prod));
  absl::StatusOr<Consumer> cons =
      Consumer::Attach(map(), LaneBells{p.consumer_bell, p.producer_bell}, wait);
  EXPECT_TRUE(cons.ok()) << cons.status();
  p.consumer.emplace(std::move(*cons));
  return p;
}

TEST(LaneOptionsTest, RejectsBadGeometry) {
  EXPECT_FALSE(ValidateLaneOptions({.ring_bytes = 3000}).ok());
  EXPECT_FALSE(ValidateLaneOptions({.ring_bytes = 2048}).ok());
  EXPECT_FALSE(ValidateLaneOptions({.ring_bytes = 4096, .max_frame_bytes = 4096}).ok());
  EXPECT_TRUE(ValidateLaneOptions({.ring_bytes = 4096, .max_frame_bytes = 2032}).ok());
  EXPECT_FALSE(ValidateLaneOptions({.policy = static_cast<BackpressurePolicy>(9)}).ok());
  EXPECT_EQ(CreateLaneSegment({.ring_bytes = 1000}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LaneTest, MapRejectsForeignSegments) {
  absl::StatusOr<Segment> plain = Segment::Create("plain", 8192);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(internal::ReadGeometry(*plain).status().code(), absl::StatusCode::kDataLoss);
  absl::StatusOr<Segment> lane = CreateLaneSegment({.ring_bytes = 4096, .max_frame_bytes = 100});
  ASSERT_TRUE(lane.ok());
  auto* h = reinterpret_cast<LaneHeader*>(lane->data());
  h->version = (kLayoutMajor + 1) << 16;
  EXPECT_EQ(internal::ReadGeometry(*lane).status().code(), absl::StatusCode::kDataLoss);
  h->version = kLayoutMajor << 16;
  h->ring_bytes = 8192;  // lies about its size
  EXPECT_EQ(internal::ReadGeometry(*lane).status().code(), absl::StatusCode::kDataLoss);
}

TEST(LaneTest, RoundTripOneFrame) {
  Pair p = MakePair();
  std::vector<std::byte> msg = Pattern(64, 1);
  EXPECT_EQ(p.producer->TryWrite(Bytes(msg)), WriteResult::kOk);
  std::vector<std::byte> out(256);
  size_t n = 0;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  ASSERT_EQ(n, 64u);
  EXPECT_EQ(std::memcmp(out.data(), msg.data(), n), 0);
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kEmpty);
}

TEST(LaneTest, ZeroLengthMaxSizeAndTooLarge) {
  Pair p = MakePair({.ring_bytes = 8192, .max_frame_bytes = 4000});
  std::vector<std::byte> max = Pattern(4000, 2);
  std::vector<std::byte> big(4001);
  EXPECT_EQ(p.producer->TryWrite({}), WriteResult::kOk);
  EXPECT_EQ(p.producer->TryWrite(Bytes(max)), WriteResult::kOk);
  EXPECT_EQ(p.producer->TryWrite(Bytes(big)), WriteResult::kTooLarge);
  EXPECT_EQ(p.producer->Write(Bytes(big)), WriteResult::kTooLarge);
  std::vector<std::byte> out(8000);
  size_t n = 99;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  EXPECT_EQ(n, 0u);
  std::vector<std::byte> small(10);
  EXPECT_EQ(p.consumer->TryRead(small, &n), ReadResult::kTooSmall);
  EXPECT_EQ(n, 4000u);
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  EXPECT_EQ(std::memcmp(out.data(), max.data(), 4000), 0);
}

// Every payload size 0..300 (every alignment), many times round a small ring
// so records wrap at every offset.
TEST(LaneTest, WrapAroundAtEveryAlignment) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1024, .sample_every = 3});
  std::vector<std::byte> out(1024);
  uint32_t seq = 0;
  for (int round = 0; round < 20; ++round) {
    for (size_t size = 0; size <= 300; ++size) {
      std::vector<std::byte> msg = Pattern(size, seq);
      ASSERT_EQ(p.producer->TryWrite(Bytes(msg)), WriteResult::kOk) << size;
      size_t n = 0;
      ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk) << size;
      ASSERT_EQ(n, size);
      ASSERT_TRUE(SameBytes(out.data(), msg.data(), n)) << "size " << size;
      ++seq;
    }
  }
  // Several frames in flight across the wrap point.
  for (int i = 0; i < 1000; ++i) {
    const size_t a = (i * 37) % 900, b = (i * 91) % 700;
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(a, i))), WriteResult::kOk);
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(b, i + 1))), WriteResult::kOk);
    size_t n = 0;
    ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
    ASSERT_EQ(n, a);
    ASSERT_TRUE(SameBytes(out.data(), Pattern(a, i).data(), a));
    ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
    ASSERT_EQ(n, b);
    ASSERT_TRUE(SameBytes(out.data(), Pattern(b, i + 1).data(), b));
  }
}

TEST(LaneTest, FullRingFailFast) {
  Pair p = MakePair({.ring_bytes = 4096,
                     .max_frame_bytes = 1000,
                     .policy = BackpressurePolicy::kFailFast,
                     .sample_every = 0});
  std::vector<std::byte> msg(1000);
  int written = 0;
  while (p.producer->TryWrite(Bytes(msg)) == WriteResult::kOk) ++written;
  EXPECT_EQ(written, 4);  // 4 x 1008-byte records fill 4096 - 64
  EXPECT_EQ(p.producer->Write(Bytes(msg), absl::Now() + absl::Seconds(10)), WriteResult::kFull);
  absl::StatusOr<LaneSnapshot> s = Observe(p.observer);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->producer.backpressure_events, 2u);  // the loop's last try and the Write
  EXPECT_EQ(s->producer.frames, 4u);
  EXPECT_EQ(s->occupancy_bytes, 4u * 1008);
}

TEST(LaneTest, FullRingDropCounts) {
  Pair p = MakePair({.ring_bytes = 4096,
                     .max_frame_bytes = 1000,
                     .policy = BackpressurePolicy::kDrop,
                     .sample_every = 0});
  std::vector<std::byte> msg(1000);
  int ok = 0, dropped = 0;
  for (int i = 0; i < 10; ++i) {
    const WriteResult r = p.producer->Write(Bytes(msg));
    if (r == WriteResult::kOk) ++ok;
    if (r == WriteResult::kDropped) ++dropped;
  }
  EXPECT_EQ(ok, 4);
  EXPECT_EQ(dropped, 6);
  absl::StatusOr<LaneSnapshot> s = Observe(p.observer);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->producer.dropped_frames, 6u);
  EXPECT_EQ(s->producer.frames + s->producer.dropped_frames, 10u);
}

TEST(LaneTest, FullRingBlockTimesOutThenUnblocks) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1000, .sample_every = 0},
                    {.spin = absl::Microseconds(10)});
  std::vector<std::byte> msg(1000);
  while (p.producer->TryWrite(Bytes(msg)) == WriteResult::kOk) {
  }
  EXPECT_EQ(p.producer->Write(Bytes(msg), absl::Now() + absl::Milliseconds(20)),
            WriteResult::kTimeout);
  // The consumer wakes a producer parked on a full ring only once half the
  // ring is free (low watermark): the first read frees 1008 of 4096 bytes
  // and must not ring; the second frees more than half and must.
  std::atomic<int> reads{0};
  std::thread reader([&] {
    std::vector<std::byte> out(1000);
    size_t n = 0;
    absl::SleepFor(absl::Milliseconds(20));
    EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
    absl::SleepFor(absl::Milliseconds(10));
    EXPECT_EQ(Observe(p.observer)->consumer.wakeups_sent, 0u);
    reads = 1;
    EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  });
  EXPECT_EQ(p.producer->Write(Bytes(msg), absl::Now() + absl::Seconds(10)), WriteResult::kOk);
  EXPECT_EQ(reads.load(), 1) << "the producer woke before half the ring was free";
  reader.join();
  absl::StatusOr<LaneSnapshot> s = Observe(p.observer);
  ASSERT_TRUE(s.ok());
  EXPECT_GE(s->producer.full_waits, 1u);
  EXPECT_EQ(s->consumer.wakeups_sent, 1u);
}

TEST(LaneTest, BatchPublishesOnce) {
  Pair p = MakePair({.sample_every = 0});
  std::vector<std::vector<std::byte>> frames;
  for (int i = 0; i < 10; ++i) frames.push_back(Pattern(i * 10, i));
  std::vector<std::span<const std::byte>> spans;
  for (auto& f : frames) spans.push_back(Bytes(f));
  WriteResult r = WriteResult::kBroken;
  EXPECT_EQ(p.producer->TryWriteBatch(spans, &r), 10u);
  EXPECT_EQ(r, WriteResult::kOk);
  std::vector<size_t> sizes;
  ReadResult rr = ReadResult::kOk;
  EXPECT_EQ(
      p.consumer->Drain([&](std::span<const std::byte> f) { sizes.push_back(f.size()); }, 100, &rr),
      10u);
  EXPECT_EQ(rr, ReadResult::kEmpty);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sizes[i], static_cast<size_t>(i * 10));
}

TEST(LaneTest, DeferredCommitIsInvisibleUntilPublish) {
  Pair p = MakePair({.sample_every = 0});
  for (int i = 0; i < 3; ++i) {
    Reservation r = p.producer->Reserve(100);
    ASSERT_EQ(r.result, WriteResult::kOk);
    ASSERT_EQ(r.data.size(), 100u);
    std::memset(r.data.data(), i, 100);
    p.producer->Commit(50 + i, PublishMode::kDefer);  // commit fewer bytes than reserved
  }
  EXPECT_EQ(p.consumer->Peek().result, ReadResult::kEmpty);
  EXPECT_EQ(p.blocks()->producer_index.tail, 0u);
  p.producer->Publish();
  for (int i = 0; i < 3; ++i) {
    PeekResult f = p.consumer->Peek();
    ASSERT_EQ(f.result, ReadResult::kOk);
    ASSERT_EQ(f.data.size(), 50u + i);
    EXPECT_EQ(f.data[0], std::byte(i));
    // Peeking again returns the same frame until it is released.
    EXPECT_EQ(p.consumer->Peek().data.data(), f.data.data());
    p.consumer->Release();
  }
  EXPECT_EQ(p.consumer->Peek().result, ReadResult::kEmpty);
}

TEST(LaneTest, CountersAreExactAfterAKnownWorkload) {
  Pair p = MakePair({.ring_bytes = 1 << 16, .max_frame_bytes = 1024, .sample_every = 4});
  std::vector<std::byte> out(1024);
  uint64_t bytes = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(i % 100, i))), WriteResult::kOk);
    bytes += i % 100;
    size_t n;
    ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  }
  absl::StatusOr<LaneSnapshot> s = Observe(p.observer);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->producer.frames, 1000u);
  EXPECT_EQ(s->producer.bytes, bytes);
  EXPECT_EQ(s->consumer.frames, 1000u);
  EXPECT_EQ(s->consumer.bytes, bytes);
  EXPECT_EQ(s->producer.backpressure_events, 0u);
  EXPECT_EQ(s->producer.wakeups_sent, 0u);     // nobody ever slept
  EXPECT_EQ(s->consumer.latency_count, 250u);  // one frame in 4
  uint64_t in_buckets = 0;
  for (uint64_t b : s->consumer.latency_buckets) in_buckets += b;
  EXPECT_EQ(in_buckets, 250u);
  EXPECT_EQ(s->occupancy_bytes, 0u);
}

TEST(LatencyQuantileTest, InterpolatesInsideBuckets) {
  uint64_t b[kLatencyBuckets] = {};
  EXPECT_EQ(LatencyQuantileNs(b, 0.5), 0.0);
  b[3] = 100;  // [1024, 2048)
  EXPECT_DOUBLE_EQ(LatencyQuantileNs(b, 0.5), 1536.0);
  EXPECT_DOUBLE_EQ(LatencyQuantileNs(b, 1.0), 2048.0);
  b[0] = 100;  // [0, 256)
  EXPECT_DOUBLE_EQ(LatencyQuantileNs(b, 0.25), 128.0);
  EXPECT_DOUBLE_EQ(LatencyQuantileNs(b, 0.75), 1536.0);
  b[kLatencyBuckets - 1] = 200;
  EXPECT_DOUBLE_EQ(LatencyQuantileNs(b, 0.99),
                   static_cast<double>(LatencyBucketUpperNs(kLatencyBuckets - 2)));
}

TEST(LaneTest, ProducerCloseDeliversEverythingThenClosed) {
  Pair p = MakePair();
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(8, i))), WriteResult::kOk);
  p.producer->Close();
  std::vector<std::byte> out(64);
  size_t n;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kClosed);
  EXPECT_EQ(p.consumer->Read(out, &n, absl::Now() + absl::Seconds(5)), ReadResult::kClosed);
}

TEST(LaneTest, ConsumerCloseWakesBlockedProducer) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1000, .sample_every = 0},
                    {.spin = absl::Microseconds(10)});
  std::vector<std::byte> msg(1000);
  while (p.producer->TryWrite(Bytes(msg)) == WriteResult::kOk) {
  }
  std::thread closer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    p.consumer->Close();
  });
  const absl::Time start = absl::Now();
  EXPECT_EQ(p.producer->Write(Bytes(msg), absl::Now() + absl::Seconds(10)), WriteResult::kClosed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  closer.join();
  EXPECT_TRUE(p.producer->PeerClosed());
}

TEST(LaneTest, ProducerSeesClosedAtNextPublishWithRoomLeft) {
  Pair p = MakePair();
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(8, 0))), WriteResult::kOk);
  p.consumer->Close();
  // The publish that follows the close notices it; every later write is refused.
  (void)p.producer->TryWrite(Bytes(Pattern(8, 1)));
  EXPECT_EQ(p.producer->TryWrite(Bytes(Pattern(8, 2))), WriteResult::kClosed);
  EXPECT_EQ(p.producer->Write(Bytes(Pattern(8, 3))), WriteResult::kClosed);
}

TEST(LaneTest, SupervisorDeleteClosesBothSides) {
  Pair p = MakePair();
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(8, 0))), WriteResult::kOk);
  SupervisorClose(p.observer, kClosedDeleted, p.producer_bell.get(), p.consumer_bell.get());
  (void)p.producer->TryWrite(Bytes(Pattern(8, 1)));
  EXPECT_EQ(p.producer->TryWrite(Bytes(Pattern(8, 2))), WriteResult::kClosed);
  std::vector<std::byte> out(64);
  size_t n;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);  // published before it noticed
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kClosed);
}

TEST(LaneTest, SupervisorCloseWakesParkedConsumer) {
  Pair p = MakePair({}, {.spin = absl::Microseconds(10)});
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
  std::thread supervisor([&] {
    absl::SleepFor(absl::Milliseconds(30));
    SupervisorClose(p.observer, kClosedProducerGone, p.producer_bell.get(), p.consumer_bell.get());
  });
  std::vector<std::byte> out(64);
  size_t n;
  EXPECT_EQ(p.consumer->Read(out, &n, absl::Now() + absl::Seconds(10)), ReadResult::kOk);
  const absl::Time start = absl::Now();
  EXPECT_EQ(p.consumer->Read(out, &n, absl::Now() + absl::Seconds(10)), ReadResult::kClosed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  supervisor.join();
}

// A side spinning (not parked) when its peer closes ends the spin at once:
// found with shmlane-pair --wait spin (spin = 1 h), whose consumer span for
// the whole hour when the producer closed after the last frame was read.
TEST(LaneTest, SpinningConsumerSeesTheProducerClose) {
  Pair p = MakePair({}, {.spin = absl::Seconds(30)});
  std::thread closer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    p.producer->Close();
  });
  const absl::Time start = absl::Now();
  EXPECT_EQ(p.consumer->WaitReadable(absl::Now() + absl::Seconds(60)), ReadResult::kClosed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  closer.join();
}

TEST(LaneTest, SpinningProducerSeesTheConsumerClose) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1000, .sample_every = 0},
                    {.spin = absl::Seconds(30)});
  std::vector<std::byte> msg(1000);
  while (p.producer->TryWrite(Bytes(msg)) == WriteResult::kOk) {
  }
  std::thread closer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    p.consumer->Close();
  });
  const absl::Time start = absl::Now();
  EXPECT_EQ(p.producer->Write(Bytes(msg), absl::Now() + absl::Seconds(60)), WriteResult::kClosed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  closer.join();
}

TEST(LaneTest, ReadTimesOut) {
  Pair p = MakePair({}, {.spin = absl::Microseconds(5)});
  std::vector<std::byte> out(64);
  size_t n;
  EXPECT_EQ(p.consumer->Read(out, &n, absl::Now() + absl::Milliseconds(10)), ReadResult::kTimeout);
  absl::StatusOr<LaneSnapshot> s = Observe(p.observer);
  ASSERT_TRUE(s.ok());
  EXPECT_GE(s->consumer.empty_waits, 1u);
}

// --- hostile peers: every corruption gives kBroken + DataLoss, never a crash.

TEST(LaneHostileTest, TailBeyondRing) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100});
  p.blocks()->producer_index.tail = 4096 + 8;
  std::vector<std::byte> out(100);
  size_t n;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kBroken);
  EXPECT_EQ(p.consumer->status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(p.consumer->status().message().find("tail"), std::string::npos);
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kBroken);  // stays broken
  EXPECT_EQ(Observe(p.observer)->consumer.broken, 1u);
}

TEST(LaneHostileTest, MisalignedOrBackwardTail) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100});
  p.blocks()->producer_index.tail = 12;
  EXPECT_EQ(p.consumer->Peek().result, ReadResult::kBroken);
}

TEST(LaneHostileTest, FrameLengthLies) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
  FrameHeader h{4000, 0};
  std::memcpy(p.ring(), &h, sizeof(h));
  EXPECT_EQ(p.consumer->Peek().result, ReadResult::kBroken);
  EXPECT_EQ(p.consumer->status().code(), absl::StatusCode::kDataLoss);
}

TEST(LaneHostileTest, FrameLongerThanPublished) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
  FrameHeader h{64, 0};  // within max_frame_bytes, but only 24 bytes were published
  std::memcpy(p.ring(), &h, sizeof(h));
  EXPECT_EQ(p.consumer->Peek().result, ReadResult::kBroken);
}

TEST(LaneHostileTest, UnknownFlagsAndBadPadding) {
  {
    Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
    FrameHeader h{16, 0x80};
    std::memcpy(p.ring(), &h, sizeof(h));
    EXPECT_EQ(p.consumer->Peek().result, ReadResult::kBroken);
  }
  {
    Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
    FrameHeader h{16, kFrameFlagPadding};  // padding that does not reach the end
    std::memcpy(p.ring(), &h, sizeof(h));
    EXPECT_EQ(p.consumer->Peek().result, ReadResult::kBroken);
  }
}

TEST(LaneHostileTest, ConsumerHeadLies) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1000, .sample_every = 0});
  std::vector<std::byte> msg(1000);
  while (p.producer->TryWrite(Bytes(msg)) == WriteResult::kOk) {
  }
  p.blocks()->consumer_index.head = 1 << 20;  // beyond anything published
  EXPECT_EQ(p.producer->TryWrite(Bytes(msg)), WriteResult::kBroken);
  EXPECT_EQ(p.producer->status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(p.producer->Write(Bytes(msg)), WriteResult::kBroken);
}

// Moves both sides to `offset` in the ring (nothing unread) by writing and
// reading filler frames.
void AdvanceTo(Pair& p, uint64_t offset) {
  std::vector<std::byte> out(4096);
  size_t n = 0;
  while ((p.blocks()->producer_index.tail & 4095) != offset) {
    const uint64_t left = (offset - (p.blocks()->producer_index.tail & 4095)) & 4095;
    const size_t payload = left >= 64 ? 56 : left - 8;
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(payload, 0))), WriteResult::kOk);
    ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  }
}

TEST(LaneHostileTest, BackwardTailAfterReading) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, i))), WriteResult::kOk);
  std::vector<std::byte> out(100);
  size_t n;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  p.blocks()->producer_index.tail = 24;  // behind what was already read
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kBroken);
  EXPECT_EQ(p.consumer->status().code(), absl::StatusCode::kDataLoss);
}

TEST(LaneHostileTest, MisalignedTailAfterReading) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
  std::vector<std::byte> out(100);
  size_t n;
  ASSERT_EQ(p.consumer->TryRead(out, &n), ReadResult::kOk);
  p.blocks()->producer_index.tail = 24 + 28;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kBroken);
}

TEST(LaneHostileTest, TwoPaddingRecordsInARow) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1000, .sample_every = 0});
  AdvanceTo(p, 4096 - 64);
  const uint64_t head = p.blocks()->consumer_index.head;
  const FrameHeader pad_end{64, kFrameFlagPadding};
  const FrameHeader pad_again{4096, kFrameFlagPadding};
  std::memcpy(p.ring() + 4096 - 64, &pad_end, sizeof(pad_end));
  std::memcpy(p.ring(), &pad_again, sizeof(pad_again));
  p.blocks()->producer_index.tail = head + 64 + 1024;  // as much as a valid tail can claim
  std::vector<std::byte> out(1000);
  size_t n;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kBroken);
  EXPECT_EQ(p.consumer->status().code(), absl::StatusCode::kDataLoss);
}

TEST(LaneHostileTest, TimestampedRecordCrossingTheRingEnd) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 1000, .sample_every = 0});
  AdvanceTo(p, 4096 - 16);
  const uint64_t head = p.blocks()->consumer_index.head;
  // 8 header + 8 stamp + 8 payload = 24 bytes, with 16 left before the end.
  const FrameHeader h{8, kFrameFlagTimestamp};
  std::memcpy(p.ring() + 4096 - 16, &h, sizeof(h));
  p.blocks()->producer_index.tail = head + 24;
  std::vector<std::byte> out(1000);
  size_t n;
  EXPECT_EQ(p.consumer->TryRead(out, &n), ReadResult::kBroken);
  EXPECT_NE(p.consumer->status().message().find("claims"), std::string::npos)
      << p.consumer->status();
}

// A peer rewriting a frame header while the consumer reads it is a data race
// unless both sides use atomic accesses: the consumer loads each header with
// one relaxed atomic load (ThreadSanitizer checks this test).
TEST(LaneHostileTest, HeaderScribbledDuringPeekIsNotADataRace) {
  Pair p = MakePair({.ring_bytes = 4096, .max_frame_bytes = 100, .sample_every = 0});
  ASSERT_EQ(p.producer->TryWrite(Bytes(Pattern(16, 0))), WriteResult::kOk);
  std::atomic<bool> stop{false};
  std::atomic<bool> started{false};
  std::thread scribbler([&] {
    // Through the consumer's own mapping: ThreadSanitizer tracks addresses,
    // and the test's mapping of the memfd is a different one.
    auto* word = reinterpret_cast<uint64_t*>(p.consumer->segment().data() + kLaneHeaderBytes);
    const uint64_t values[] = {16, 4000, uint64_t{0x80} << 32, 16};
    for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      std::atomic_ref<uint64_t>(*word).store(values[i % 4], std::memory_order_relaxed);
      started.store(true, std::memory_order_relaxed);
    }
  });
  while (!started.load()) std::this_thread::yield();
  int ok = 0, broken = 0;
  const absl::Time until = absl::Now() + absl::Milliseconds(50);
  for (int i = 0; broken == 0 && (i < 2000 || absl::Now() < until); ++i) {
    const PeekResult r = p.consumer->Peek();
    if (r.result == ReadResult::kOk) ++ok;
    if (r.result == ReadResult::kBroken) ++broken;
  }
  stop = true;
  scribbler.join();
  EXPECT_GT(ok + broken, 0);
  if (broken > 0) {
    EXPECT_EQ(p.consumer->status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(LaneTest, AttachRefusesAnInvalidDoorbell) {
  absl::StatusOr<Segment> seg = CreateLaneSegment({});
  ASSERT_TRUE(seg.ok());
  auto valid = std::make_shared<const Doorbell>(*Doorbell::Create());
  auto invalid = std::make_shared<const Doorbell>();  // fd -1: a wait on it never ends
  auto map = [&] { return *Segment::Map(*seg->DupFd(), Access::kReadWrite); };
  EXPECT_EQ(Producer::Attach(map(), {invalid, valid}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Producer::Attach(map(), {valid, invalid}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Consumer::Attach(map(), {invalid, valid}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Consumer::Attach(map(), {valid, invalid}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A doorbell that fails (here: its fd closed behind the lane's back) is
// reported, not taken for a timeout or a busy loop: the wait returns at once
// with the error in doorbell_status() and counted in shm.
TEST(LaneTest, DoorbellFailuresAreSurfaced) {
  Pair p = MakePair({}, {.spin = absl::Microseconds(5)});
  ASSERT_EQ(::close(p.consumer_bell->fd()), 0);  // the Doorbell's own close later gets EBADF
  std::vector<std::byte> out(64);
  size_t n = 0;
  const absl::Time start = absl::Now();
  EXPECT_EQ(p.consumer->Read(out, &n, absl::Now() + absl::Seconds(5)), ReadResult::kTimeout);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "a dead doorbell made Read wait or spin";
  EXPECT_EQ(p.consumer->doorbell_status().code(), absl::StatusCode::kInternal)
      << p.consumer->doorbell_status();
  EXPECT_EQ(Observe(p.observer)->consumer.wakeup_errors, 1u);
  // The producer rings that closed fd when it sees the consumer parked.
  reinterpret_cast<std::atomic<uint64_t>*>(&p.blocks()->consumer_control.waiting)
      ->store(77 << 1 | 1);
  EXPECT_EQ(p.producer->TryWrite(Bytes(Pattern(8, 0))), WriteResult::kOk);
  EXPECT_EQ(p.producer->doorbell_status().code(), absl::StatusCode::kInternal)
      << p.producer->doorbell_status();
  EXPECT_EQ(Observe(p.observer)->producer.wakeup_errors, 1u);
}

TEST(DoorbellTest, AwaitReportsWhyItReturned) {
  Doorbell bell = *Doorbell::Create();
  EXPECT_EQ(*bell.Await(Deadline::After(absl::Milliseconds(1))), WakeReason::kTimeout);
  bell.Ring();
  EXPECT_EQ(*bell.Await(Deadline::After(absl::Seconds(5))), WakeReason::kRung);
  Doorbell other = *Doorbell::Create();
  other.Ring();
  EXPECT_EQ(*bell.Await(Deadline::After(absl::Seconds(5)), other.fd()), WakeReason::kOtherFd);
  EXPECT_TRUE(bell.Notify().ok());
  EXPECT_FALSE(Doorbell().Notify().ok());
  EXPECT_FALSE(Doorbell().Await(Deadline::After(absl::Seconds(5))).ok());
}

TEST(DeadlineTest, ConvertsOnceAndSaturates) {
  EXPECT_TRUE(Deadline::FromTime(absl::InfiniteFuture()).infinite());
  EXPECT_TRUE(Deadline::FromTime(absl::InfinitePast()).Expired());
  EXPECT_TRUE(Deadline::After(absl::Hours(-1)).Expired());
  const Deadline d = Deadline::After(absl::Seconds(10));
  EXPECT_FALSE(d.Expired());
  EXPECT_LE(d.Remaining(), absl::Seconds(10));
  EXPECT_GT(d.Remaining(), absl::Seconds(9));
  EXPECT_FALSE(Deadline::After(absl::Hours(24 * 365 * 1000)).infinite());
}

// Two supervisor threads closing for different reasons at once: neither
// reason is lost (the word is updated with one atomic OR).
TEST(LaneTest, ConcurrentSupervisorClosesKeepEveryReason) {
  absl::StatusOr<Segment> seg = CreateLaneSegment({});
  ASSERT_TRUE(seg.ok());
  auto* word = &reinterpret_cast<LaneBlocks*>(seg->data())->supervisor.closed_by;
  std::atomic<int> round{0};
  std::atomic<int> done{0};
  constexpr int kRounds = 3000;
  auto closer = [&](uint32_t bit) {
    for (int r = 1; r <= kRounds; ++r) {
      while (round.load(std::memory_order_acquire) < r) std::this_thread::yield();
      SupervisorClose(*seg, bit, nullptr, nullptr);
      done.fetch_add(1, std::memory_order_acq_rel);
    }
  };
  std::thread a(closer, kClosedProducerGone), b(closer, kClosedConsumerGone);
  int lost = 0;
  for (int r = 1; r <= kRounds; ++r) {
    std::atomic_ref<uint32_t>(*word).store(0, std::memory_order_relaxed);
    round.store(r, std::memory_order_release);
    while (done.load(std::memory_order_acquire) < 2 * r) std::this_thread::yield();
    if (std::atomic_ref<uint32_t>(*word).load(std::memory_order_relaxed) !=
        (kClosedProducerGone | kClosedConsumerGone)) {
      ++lost;
    }
  }
  a.join();
  b.join();
  EXPECT_EQ(lost, 0) << "of " << kRounds << " rounds";
}

// --- two threads, one lane: sequence numbers and checksums survive.

struct StreamResult {
  uint64_t received = 0;
  bool ok = true;
};

void StreamThreads(uint64_t frames, WaitOptions wait, bool slow_consumer, bool slow_producer) {
  Pair p = MakePair({.ring_bytes = 1 << 14, .max_frame_bytes = 512, .sample_every = 16}, wait);
  // Neither side may leave the other waiting forever: a failing producer
  // stops and closes (the consumer then sees kClosed), a failing consumer
  // closes (the producer's Write then returns kClosed), and every blocking
  // call has a deadline.
  std::thread producer([&] {
    std::mt19937 rng(7);
    std::vector<std::byte> buf(512);
    for (uint64_t seq = 0; seq < frames; ++seq) {
      const size_t n = 8 + rng() % 256;
      std::memcpy(buf.data(), &seq, 8);
      for (size_t i = 8; i < n; ++i) buf[i] = std::byte(static_cast<uint8_t>(seq + i));
      const WriteResult r = p.producer->Write({buf.data(), n}, absl::Now() + absl::Seconds(60));
      if (r != WriteResult::kOk) {
        ADD_FAILURE() << "Write of frame " << seq << ": " << ToString(r);
        break;
      }
      if (slow_producer && seq % 64 == 0) absl::SleepFor(absl::Microseconds(50));
    }
    p.producer->Close();
  });
  uint64_t expect = 0;
  std::vector<std::byte> out(512);
  for (;;) {
    size_t n = 0;
    const ReadResult r = p.consumer->Read(out, &n, absl::Now() + absl::Seconds(60));
    if (r == ReadResult::kClosed) break;
    uint64_t seq = ~uint64_t{0};
    if (r == ReadResult::kOk) std::memcpy(&seq, out.data(), 8);
    bool content_ok = r == ReadResult::kOk;
    for (size_t i = 8; content_ok && i < n; ++i) {
      content_ok = out[i] == std::byte(static_cast<uint8_t>(seq + i));
    }
    if (r != ReadResult::kOk || seq != expect || !content_ok) {
      ADD_FAILURE() << "frame " << expect << ": " << ToString(r) << " " << p.consumer->status()
                    << ", seq " << seq << ", content " << (content_ok ? "ok" : "corrupt");
      p.consumer->Close();
      break;
    }
    ++expect;
    if (slow_consumer && expect % 64 == 0) absl::SleepFor(absl::Microseconds(50));
  }
  producer.join();
  EXPECT_EQ(expect, frames);
}

uint64_t Scaled(uint64_t n) {
  const char* s = std::getenv("SHMLANE_TEST_SCALE");
  const double scale = s != nullptr ? std::atof(s) : 1.0;
  return std::max<uint64_t>(1000, static_cast<uint64_t>(static_cast<double>(n) * scale));
}

TEST(LaneThreadsTest, SpinningPair) { StreamThreads(Scaled(500'000), {}, false, false); }
TEST(LaneThreadsTest, ParkingPair) {
  StreamThreads(Scaled(200'000), {.spin = absl::ZeroDuration()}, false, false);
}
TEST(LaneThreadsTest, SlowConsumer) {
  StreamThreads(Scaled(50'000), {.spin = absl::Microseconds(1)}, true, false);
}
TEST(LaneThreadsTest, SlowProducer) {
  StreamThreads(Scaled(50'000), {.spin = absl::Microseconds(1)}, false, true);
}

}  // namespace
}  // namespace shmlane::dataplane
