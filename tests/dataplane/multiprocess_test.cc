// Multi-process tests of the data plane: producers and consumers are forked
// processes that share one memfd per lane; the test parent plays the
// supervisor. Frame counts scale with SHMLANE_TEST_SCALE (sanitizer runs use
// fewer frames).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "absl/time/clock.h"
#include "dataplane/lane.h"
#include "dataplane/lane_set.h"
#include "gtest/gtest.h"
#include "tests/dataplane/process_util.h"
#include "tests/dataplane/watchdog.h"

namespace shmlane::dataplane {
namespace {

uint64_t Scaled(uint64_t n) {
  const char* s = std::getenv("SHMLANE_TEST_SCALE");
  const double scale = s != nullptr ? std::atof(s) : 1.0;
  return std::max<uint64_t>(2000, static_cast<uint64_t>(static_cast<double>(n) * scale));
}

// A lane as the daemon would create it: the creator's mapping, both bells.
struct LaneFixture {
  Segment creator;
  std::shared_ptr<const Doorbell> producer_bell;
  std::shared_ptr<const Doorbell> consumer_bell;

  static LaneFixture Make(LaneOptions o, std::shared_ptr<const Doorbell> consumer_bell = nullptr) {
    LaneFixture f;
    absl::StatusOr<Segment> s = CreateLaneSegment(o);
    SHMLANE_CHECK(s.ok());
    f.creator = std::move(*s);
    f.producer_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
    f.consumer_bell = consumer_bell != nullptr
                          ? consumer_bell
                          : std::make_shared<const Doorbell>(*Doorbell::Create());
    return f;
  }
  Producer MakeProducer(WaitOptions w = {}) const {
    absl::StatusOr<Producer> p = Producer::Attach(
        *Segment::Map(*creator.DupFd(), Access::kReadWrite), {producer_bell, consumer_bell}, w);
    SHMLANE_CHECK(p.ok());
    return std::move(*p);
  }
  Consumer MakeConsumer(WaitOptions w = {}) const {
    absl::StatusOr<Consumer> c = Consumer::Attach(
        *Segment::Map(*creator.DupFd(), Access::kReadWrite), {consumer_bell, producer_bell}, w);
    SHMLANE_CHECK(c.ok());
    return std::move(*c);
  }
};

// Frame format: [seq u64][producer u32][len-12 bytes of f(seq, i)], so the
// consumer can check order, origin and content of every frame.
size_t FillFrame(std::byte* buf, uint64_t seq, uint32_t producer, size_t len) {
  std::memcpy(buf, &seq, 8);
  std::memcpy(buf + 8, &producer, 4);
  for (size_t i = 12; i < len; ++i) buf[i] = std::byte(static_cast<uint8_t>(seq * 131 + i));
  return len;
}

bool CheckFrame(std::span<const std::byte> f, uint64_t* seq, uint32_t* producer) {
  if (f.size() < 12) return false;
  std::memcpy(seq, f.data(), 8);
  std::memcpy(producer, f.data() + 8, 4);
  for (size_t i = 12; i < f.size(); ++i) {
    if (f[i] != std::byte(static_cast<uint8_t>(*seq * 131 + i))) return false;
  }
  return true;
}

using testing::Spawn;  // a child that dies with the test

// A child's exit code (128 + signal if killed); a child still running after
// 100 s (short of the watchdog's 120) has its state and stack printed, is
// killed and reads as -1.
int ExitCode(pid_t pid) { return testing::ExitCodeWithin(pid, absl::Seconds(100)); }

// Shared scratch for children to report numbers to the parent.
struct Report {
  uint64_t values[64];
};
Report* MakeReport() {
  void* p =
      mmap(nullptr, sizeof(Report), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  SHMLANE_CHECK(p != MAP_FAILED);
  return static_cast<Report*>(p);
}

struct StreamCase {
  uint64_t frames;
  BackpressurePolicy policy = BackpressurePolicy::kBlock;
  bool slow_consumer = false;
  bool slow_producer = false;
  WaitOptions wait{};
};

// Producer child: sends `frames` frames of random sizes (12..max) in random
// batches; with kFailFast it retries after kFull; with kDrop it counts drops.
int ProduceStream(const LaneFixture& lane, const StreamCase& c, Report* report) {
  Producer p = lane.MakeProducer(c.wait);
  std::mt19937_64 rng(42);
  std::vector<std::byte> buf(p.max_frame_bytes());
  uint64_t dropped = 0, full = 0;
  for (uint64_t seq = 0; seq < c.frames;) {
    const size_t len = 12 + rng() % (p.max_frame_bytes() - 11);
    FillFrame(buf.data(), seq, 0, len);
    const WriteResult r = p.Write({buf.data(), len}, absl::Now() + absl::Seconds(60));
    if (r == WriteResult::kOk) {
      ++seq;
    } else if (r == WriteResult::kDropped) {
      ++dropped;
      ++seq;  // the frame is gone; the consumer sees a gap
    } else if (r == WriteResult::kFull) {
      ++full;
      sched_yield();  // fail-fast: the application decides; here it retries
    } else {
      return 10 + static_cast<int>(r);
    }
    if (c.slow_producer && seq % 512 == 0) absl::SleepFor(absl::Microseconds(200));
  }
  p.Close();
  report->values[0] = dropped;
  report->values[1] = full;
  return 0;
}

int ConsumeStream(const LaneFixture& lane, const StreamCase& c, Report* report) {
  Consumer con = lane.MakeConsumer(c.wait);
  uint64_t expect = 0, received = 0, gaps = 0;
  std::vector<std::byte> buf(con.max_frame_bytes());
  for (;;) {
    size_t n = 0;
    const ReadResult r = con.Read(buf, &n, absl::Now() + absl::Seconds(60));
    if (r == ReadResult::kClosed) break;
    if (r != ReadResult::kOk) return 20 + static_cast<int>(r);
    uint64_t seq = 0;
    uint32_t producer = 0;
    if (!CheckFrame({buf.data(), n}, &seq, &producer)) return 30;  // corrupt
    if (seq < expect) return 31;                                   // duplicate or reorder
    if (seq > expect) {
      if (c.policy != BackpressurePolicy::kDrop) return 32;  // loss
      gaps += seq - expect;
    }
    expect = seq + 1;
    ++received;
    if (c.slow_consumer && received % 512 == 0) absl::SleepFor(absl::Microseconds(200));
  }
  report->values[2] = received;
  report->values[3] = gaps;
  report->values[4] = expect;  // one past the last sequence number seen
  return 0;
}

void RunStream(const StreamCase& c) {
  LaneFixture lane = LaneFixture::Make(
      {.ring_bytes = 1 << 16, .max_frame_bytes = 256, .policy = c.policy, .sample_every = 64});
  Report* report = MakeReport();
  const pid_t consumer = Spawn([&] { return ConsumeStream(lane, c, report); });
  const pid_t producer = Spawn([&] { return ProduceStream(lane, c, report); });
  EXPECT_EQ(ExitCode(producer), 0);
  EXPECT_EQ(ExitCode(consumer), 0);
  const uint64_t dropped = report->values[0], received = report->values[2],
                 gaps = report->values[3];
  absl::StatusOr<LaneSnapshot> s = Observe(lane.creator);
  ASSERT_TRUE(s.ok());
  // Nothing lost: delivered + counted drops = sent, and the counters agree.
  EXPECT_EQ(received + dropped, c.frames);
  // Drops show as gaps in the sequence, or as a missing tail after the last frame.
  EXPECT_EQ(gaps + (c.frames - report->values[4]), dropped);
  EXPECT_EQ(s->producer.frames, received);
  EXPECT_EQ(s->consumer.frames, received);
  EXPECT_EQ(s->producer.dropped_frames, dropped);
  EXPECT_EQ(s->occupancy_bytes, 0u);
  if (c.policy == BackpressurePolicy::kFailFast) {
    EXPECT_EQ(s->producer.backpressure_events, report->values[1]);
  }
  munmap(report, sizeof(Report));
}

TEST(MultiProcessStreamTest, TenMillionRandomFrames) { RunStream({.frames = Scaled(10'000'000)}); }

TEST(MultiProcessStreamTest, SlowConsumerParks) {
  RunStream({.frames = Scaled(300'000), .slow_consumer = true, .wait = {absl::Microseconds(5)}});
}

TEST(MultiProcessStreamTest, SlowProducer) {
  RunStream({.frames = Scaled(300'000), .slow_producer = true, .wait = {absl::Microseconds(5)}});
}

TEST(MultiProcessStreamTest, FailFastPolicyLosesNothing) {
  RunStream(
      {.frames = Scaled(500'000), .policy = BackpressurePolicy::kFailFast, .slow_consumer = true});
}

TEST(MultiProcessStreamTest, DropPolicyCountsEveryDrop) {
  RunStream(
      {.frames = Scaled(500'000), .policy = BackpressurePolicy::kDrop, .slow_consumer = true});
}

// The supervisor kills the producer mid-stream and marks it gone: the
// consumer reads every frame the producer published, then sees kClosed.
TEST(SupervisorTest, KilledProducerDrainsThenCloses) {
  LaneFixture lane = LaneFixture::Make({.ring_bytes = 1 << 20, .max_frame_bytes = 128});
  Report* report = MakeReport();
  const pid_t producer = Spawn([&] {
    Producer p = lane.MakeProducer();
    std::byte buf[128];
    for (uint64_t seq = 0;; ++seq) {
      FillFrame(buf, seq, 0, 64);
      if (p.Write({buf, 64}) != WriteResult::kOk) return 1;
      if (seq == 1000) report->values[10] = 1;  // streaming for real
    }
  });
  while (__atomic_load_n(&report->values[10], __ATOMIC_ACQUIRE) == 0)
    absl::SleepFor(absl::Milliseconds(1));
  // Let the consumer start behind, so committed-but-unread frames exist at the kill.
  const pid_t consumer = Spawn([&] {
    Consumer c = lane.MakeConsumer();
    absl::SleepFor(absl::Milliseconds(50));
    uint64_t expect = 0;
    for (;;) {
      PeekResult f = c.Peek();
      if (f.result == ReadResult::kEmpty) {
        const ReadResult w = c.WaitReadable(absl::Now() + absl::Seconds(30));
        if (w == ReadResult::kTimeout) return 2;
        continue;
      }
      if (f.result == ReadResult::kClosed) break;
      if (f.result != ReadResult::kOk) return 3;
      uint64_t seq = 0;
      uint32_t id = 0;
      if (!CheckFrame(f.data, &seq, &id) || seq != expect) return 4;
      ++expect;
      c.Release();
    }
    report->values[0] = expect;
    report->values[1] = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    return 0;
  });
  absl::SleepFor(absl::Milliseconds(20));
  kill(producer, SIGKILL);
  EXPECT_EQ(ExitCode(producer), 128 + SIGKILL);
  const int64_t closed_at = absl::ToUnixNanos(absl::Now());
  SupervisorClose(lane.creator, kClosedProducerGone, lane.producer_bell.get(),
                  lane.consumer_bell.get());
  EXPECT_EQ(ExitCode(consumer), 0);
  absl::StatusOr<LaneSnapshot> s = Observe(lane.creator);
  ASSERT_TRUE(s.ok());
  EXPECT_GT(report->values[0], 1000u);
  // Everything published was read: nothing left between head and tail.
  EXPECT_EQ(s->occupancy_bytes, 0u);
  EXPECT_EQ(s->consumer.frames, report->values[0]);
  EXPECT_LT(static_cast<int64_t>(report->values[1]) - closed_at,
            absl::ToInt64Nanoseconds(absl::Seconds(5)));
  munmap(report, sizeof(Report));
}

// The supervisor kills the consumer while the producer is blocked on a full
// ring: the producer's Write returns kClosed promptly.
TEST(SupervisorTest, KilledConsumerUnblocksProducer) {
  LaneFixture lane = LaneFixture::Make({.ring_bytes = 4096, .max_frame_bytes = 256});
  Report* report = MakeReport();
  const pid_t consumer = Spawn([&] {
    Consumer c = lane.MakeConsumer();
    report->values[5] = 1;
    pause();  // never reads
    return 0;
  });
  const pid_t producer = Spawn([&] {
    Producer p = lane.MakeProducer({absl::Microseconds(20)});
    std::byte buf[256] = {};
    for (;;) {
      const WriteResult r = p.Write({buf, 200}, absl::Now() + absl::Seconds(30));
      if (r == WriteResult::kClosed) break;
      if (r != WriteResult::kOk) return 1;
    }
    report->values[0] = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    return 0;
  });
  // Wait until the producer is parked on the full ring.
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (absl::Now() < give_up) {
    absl::StatusOr<LaneSnapshot> s = Observe(lane.creator);
    if (s.ok() && s->producer_waiting != 0) break;
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_NE(Observe(lane.creator)->producer_waiting, 0u) << "producer never blocked";
  kill(consumer, SIGKILL);
  ExitCode(consumer);
  const int64_t closed_at = absl::ToUnixNanos(absl::Now());
  SupervisorClose(lane.creator, kClosedConsumerGone, lane.producer_bell.get(),
                  lane.consumer_bell.get());
  EXPECT_EQ(ExitCode(producer), 0);
  const int64_t delay_ns = static_cast<int64_t>(report->values[0]) - closed_at;
  std::printf("producer saw closed %.3f ms after the supervisor marked it\n", delay_ns / 1e6);
  EXPECT_LT(delay_ns, absl::ToInt64Nanoseconds(absl::Milliseconds(100)));
  munmap(report, sizeof(Report));
}

// 32 producer processes into one LaneSet consumer: every frame accounted for.
TEST(FanInTest, ThirtyTwoProducersOneLaneSet) {
  constexpr int kProducers = 32;
  const uint64_t per_producer = Scaled(100'000);
  auto set_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
  std::vector<LaneFixture> lanes;
  for (int i = 0; i < kProducers; ++i) {
    lanes.push_back(LaneFixture::Make(
        {.ring_bytes = 1 << 15, .max_frame_bytes = 128, .lane_id = static_cast<uint64_t>(i)},
        set_bell));
  }
  LaneSet set(set_bell, 64, {absl::Microseconds(20)});
  for (int i = 0; i < kProducers; ++i) set.Add(i, lanes[i].MakeConsumer());
  std::vector<pid_t> pids;
  for (int i = 0; i < kProducers; ++i) {
    pids.push_back(Spawn([&, i] {
      Producer p = lanes[i].MakeProducer({absl::Microseconds(20)});
      std::byte buf[128];
      for (uint64_t seq = 0; seq < per_producer; ++seq) {
        FillFrame(buf, seq, static_cast<uint32_t>(i), 16 + seq % 100);
        if (p.Write({buf, 16 + seq % 100}) != WriteResult::kOk) return 1;
      }
      p.Close();
      return 0;
    }));
  }
  std::vector<uint64_t> next(kProducers, 0);
  int ended = 0;
  bool ok = true;
  const absl::Time give_up = absl::Now() + absl::Seconds(300);
  while (!set.empty() && absl::Now() < give_up) {
    set.Wait(
        [&](uint64_t lane_id, std::span<const std::byte> f) {
          uint64_t seq = 0;
          uint32_t producer = 0;
          if (!CheckFrame(f, &seq, &producer) || producer != lane_id || seq != next[lane_id]) {
            ok = false;
          }
          next[lane_id] = seq + 1;
        },
        [&](uint64_t, ReadResult r, const absl::Status&) {
          EXPECT_EQ(r, ReadResult::kClosed);
          ++ended;
        },
        absl::Now() + absl::Seconds(10));
  }
  for (pid_t pid : pids) EXPECT_EQ(ExitCode(pid), 0);
  EXPECT_TRUE(ok) << "a frame arrived corrupt, out of order or on the wrong lane";
  EXPECT_EQ(ended, kProducers);
  for (int i = 0; i < kProducers; ++i) EXPECT_EQ(next[i], per_producer) << "producer " << i;
}

}  // namespace
}  // namespace shmlane::dataplane
