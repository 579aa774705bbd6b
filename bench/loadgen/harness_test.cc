// Runs every transport x pattern for a fraction of a second through the real
// harness (processes, barrier, shared slots) and checks that results come
// back consistent. Timing is not checked: that is the gate's job.
#include "bench/loadgen/harness.h"

#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/loadgen/frame.h"
#include "bench/loadgen/transport.h"
#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

class HarnessTest : public testing::TestWithParam<std::tuple<TransportKind, Pattern>> {};

TEST_P(HarnessTest, RunsAndReportsConsistentResults) {
  const auto [transport, pattern] = GetParam();
  if (!MakeTransport(transport).ok()) GTEST_SKIP() << ToString(transport) << " not built in";
  RunSpec spec;
  spec.transport = transport;
  spec.pattern = pattern;
  spec.clients = 3;
  spec.frame_bytes = 100;
  spec.duration = absl::Milliseconds(300);
  spec.warmup = absl::Milliseconds(50);
  spec.rate = 3000;
#ifdef SHMLANE_BENCH_SHMLANED
  spec.shmlaned = SHMLANE_BENCH_SHMLANED;
#endif
  absl::StatusOr<RunResult> result = RunOne(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->frames, 0u);
  EXPECT_GT(result->frames_per_s, 0.0);
  EXPECT_NEAR(result->mb_per_s, result->frames_per_s * 100 / 1e6, 1e-6);
  EXPECT_GT(result->resources.clients.user_ns + result->resources.clients.sys_ns, 0);
  EXPECT_GT(result->resources.client_rss_kb, 0);
  switch (pattern) {
    case Pattern::kStream:
      EXPECT_EQ(result->latency, nullptr);
      break;
    case Pattern::kPingPong:
      ASSERT_NE(result->latency, nullptr);
      EXPECT_EQ(result->latency->count(), result->frames);
      EXPECT_GT(result->latency->ValueAtQuantile(0.5), 0u);
      break;
    case Pattern::kFanout:
      FAIL() << "fanout has its own test";
      break;
    case Pattern::kOpenLoop:
      ASSERT_NE(result->latency, nullptr);
      ASSERT_NE(result->latency_actual, nullptr);
      // About rate x duration frames are scheduled inside the window.
      EXPECT_GT(result->latency->count(), 450u);
      EXPECT_LT(result->latency->count(), 1100u);
      // Latency from the intended time includes the time from the actual one.
      EXPECT_GE(result->latency->max(), result->latency_actual->max());
      break;
  }
  if (transport == TransportKind::kShm) {
    EXPECT_GT(result->resources.daemon_rss_kb, 0);
    EXPECT_GT(result->resources.daemon_memfd_bytes, 0);
  }
  if (pattern != Pattern::kPingPong) {
    // Batch 1: one write / publish per frame.
    EXPECT_EQ(result->client_flushes, result->total_sent);
  }
}

// Batching: a streaming client fills its batches; an openloop client on
// schedule flushes (nearly) every frame; every frame still arrives and
// passes the server's checksum.
class BatchTest : public testing::TestWithParam<std::tuple<TransportKind, Pattern>> {};

TEST_P(BatchTest, StreamFillsBatchesAndOpenloopFlushesOnSchedule) {
  const auto [transport, pattern] = GetParam();
  if (!MakeTransport(transport).ok()) GTEST_SKIP() << ToString(transport) << " not built in";
  RunSpec spec;
  spec.transport = transport;
  spec.pattern = pattern;
  spec.wait = DefaultWait(transport);
  spec.clients = 2;
  spec.frame_bytes = 100;
  spec.batch = 16;
  spec.duration = absl::Milliseconds(300);
  spec.warmup = absl::Milliseconds(50);
  spec.rate = 2000;
#ifdef SHMLANE_BENCH_SHMLANED
  spec.shmlaned = SHMLANE_BENCH_SHMLANED;
#endif
  absl::StatusOr<RunResult> result = RunOne(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_sent, result->total_received);
  ASSERT_GT(result->client_flushes, 0u);
  const double per_flush =
      static_cast<double>(result->total_sent) / static_cast<double>(result->client_flushes);
  if (pattern == Pattern::kStream) {
    // Full batches, except the last of each client and (shm) a full ring.
    EXPECT_GT(per_flush, 8.0) << result->total_sent << " frames in " << result->client_flushes;
    EXPECT_LE(per_flush, 16.0);
  } else {
    EXPECT_LT(per_flush, 3.0) << result->total_sent << " frames in " << result->client_flushes;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransports, BatchTest,
                         testing::Combine(testing::Values(TransportKind::kShm, TransportKind::kUds,
                                                          TransportKind::kPipe, TransportKind::kTcp,
                                                          TransportKind::kGrpc),
                                          testing::Values(Pattern::kStream, Pattern::kOpenLoop)),
                         [](const testing::TestParamInfo<BatchTest::ParamType>& info) {
                           return absl::StrCat(ToString(std::get<0>(info.param)), "_",
                                               ToString(std::get<1>(info.param)));
                         });

// Fanout: one publisher, three subscribers; each gets every frame (the run
// fails otherwise), checksummed; deliveries are the subscribers' sum; the
// publisher copies each frame once into shm and once per subscriber into a
// kernel transport or gRPC.
class FanoutTest : public testing::TestWithParam<std::tuple<TransportKind, int>> {};

TEST_P(FanoutTest, EverySubscriberGetsEveryFrame) {
  const auto [transport, batch] = GetParam();
  if (!MakeTransport(transport).ok()) GTEST_SKIP() << ToString(transport) << " not built in";
  RunSpec spec;
  spec.transport = transport;
  spec.pattern = Pattern::kFanout;
  spec.wait = DefaultWait(transport);
  spec.clients = 3;
  spec.frame_bytes = 100;
  spec.batch = batch;
  spec.duration = absl::Milliseconds(300);
  spec.warmup = absl::Milliseconds(50);
#ifdef SHMLANE_BENCH_SHMLANED
  spec.shmlaned = SHMLANE_BENCH_SHMLANED;
#endif
  absl::StatusOr<RunResult> result = RunOne(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  const FanoutResult& f = result->fanout;
  EXPECT_EQ(f.subscribers, 3);
  ASSERT_GT(f.total_published, 0u);
  EXPECT_EQ(result->total_sent, f.total_published);
  EXPECT_EQ(result->total_received, 3 * f.total_published);
  EXPECT_GT(result->frames, 0u);
  EXPECT_LE(result->frames, 3 * f.total_published);
  EXPECT_NEAR(f.per_subscriber_frames_per_s * 3, result->frames_per_s, 1e-3);
  EXPECT_LE(f.min_subscriber_frames_per_s, f.per_subscriber_frames_per_s + 1e-3);
  EXPECT_GT(f.published_per_s, 0.0);
  // One sampled latency per kFanoutSampleEvery frames sent in the window, at
  // every subscriber.
  ASSERT_NE(result->latency, nullptr);
  EXPECT_GT(result->latency->count(), 0u);
  EXPECT_LE(result->latency->count(), 3 * (f.published_frames / kFanoutSampleEvery + 2));
  const uint64_t n = f.total_published;
  switch (transport) {
    case TransportKind::kShm:
      EXPECT_EQ(f.publisher_copied_bytes, n * 100);
      // Frames travel through shared memory, not through read()/write().
      EXPECT_LT(f.publisher_io_written, n * 100 / 10);
      EXPECT_LT(f.subscribers_io_read, n * 100 / 10);
      break;
    case TransportKind::kGrpc:
      EXPECT_EQ(f.publisher_copied_bytes, 3 * n * 100);
      break;
    default:
      EXPECT_EQ(f.publisher_copied_bytes, 3 * n * 104);  // length prefix + payload
      EXPECT_GE(f.publisher_io_written, 3 * n * 104);
      EXPECT_GE(f.subscribers_io_read, 3 * n * 104);
      break;
  }
  EXPECT_GT(result->client_flushes, 0u);
  if (batch == 1) {
    EXPECT_EQ(result->client_flushes, n);
  } else {
    EXPECT_LT(result->client_flushes, n);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransports, FanoutTest,
                         testing::Combine(testing::Values(TransportKind::kShm, TransportKind::kUds,
                                                          TransportKind::kPipe, TransportKind::kTcp,
                                                          TransportKind::kGrpc),
                                          testing::Values(1, 16)),
                         [](const testing::TestParamInfo<FanoutTest::ParamType>& info) {
                           return absl::StrCat(ToString(std::get<0>(info.param)), "_b",
                                               std::get<1>(info.param));
                         });

// The server's payload check: frames the sender sealed pass, a changed byte
// is counted and named, and a counting-only sink reads nothing.
TEST(ServerSinkTest, ReadsEveryPayloadAndCountsBadFrames) {
  RunSpec spec;
  spec.frame_bytes = 64;
  RunClock clock{1, 2, 3};
  std::vector<std::byte> frame(64);
  FrameSealer sealer(frame, 1);
  sealer.Seal({5, 6}, 7);
  ServerSink sink(spec, clock, nullptr, nullptr);
  EXPECT_FALSE(sink.OnFrame(frame));  // stream: no echo
  frame[40] ^= std::byte{1};
  sink.OnFrame(frame);
  EXPECT_EQ(sink.total_frames(), 2u);
  EXPECT_EQ(sink.bad_frames(), 1u);
  EXPECT_NE(sink.first_bad_frame().find("frame 2 (64 bytes)"), std::string::npos)
      << sink.first_bad_frame();
  spec.touch = Touch::kNone;
  ServerSink counting(spec, clock, nullptr, nullptr);
  counting.OnFrame(frame);
  EXPECT_EQ(counting.bad_frames(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    AllTransports, HarnessTest,
    testing::Combine(testing::Values(TransportKind::kShm, TransportKind::kUds, TransportKind::kPipe,
                                     TransportKind::kTcp, TransportKind::kGrpc),
                     testing::Values(Pattern::kStream, Pattern::kPingPong, Pattern::kOpenLoop)),
    [](const testing::TestParamInfo<HarnessTest::ParamType>& info) {
      return absl::StrCat(ToString(std::get<0>(info.param)), "_",
                          ToString(std::get<1>(info.param)));
    });

TEST(ValidateSpecTest, RejectsOutOfRangeOptions) {
  RunSpec spec;
  spec.clients = 0;
  EXPECT_FALSE(ValidateSpec(spec).ok());
  spec.clients = kMaxClients + 1;
  EXPECT_FALSE(ValidateSpec(spec).ok());
  spec.clients = 1;
  spec.pattern = Pattern::kOpenLoop;
  spec.frame_bytes = 8;
  EXPECT_FALSE(ValidateSpec(spec).ok());
  spec.frame_bytes = 64;
  EXPECT_TRUE(ValidateSpec(spec).ok());
  spec.rate = 0;
  EXPECT_FALSE(ValidateSpec(spec).ok());
  spec.pattern = Pattern::kFanout;
  spec.touch = Touch::kNone;
  spec.frame_bytes = 15;  // no room for the send stamp
  EXPECT_FALSE(ValidateSpec(spec).ok());
  spec.frame_bytes = 16;
  EXPECT_TRUE(ValidateSpec(spec).ok());
}

// A subscriber's sink samples one frame in kFanoutSampleEvery, by arrival
// order (the publisher's sequence), for its one-way latency.
TEST(ServerSinkTest, FanoutSamplesEverySixteenthFrame) {
  RunSpec spec;
  spec.pattern = Pattern::kFanout;
  spec.frame_bytes = 64;
  const int64_t now = NowNs();
  RunClock clock{now - 2'000'000, now - 1'000'000, now + 60'000'000'000};
  std::vector<std::byte> frame(64);
  FrameSealer sealer(frame, 1);
  Histogram latency;
  ServerSink sink(spec, clock, nullptr, &latency);
  for (uint64_t seq = 0; seq < 40; ++seq) {
    sealer.Seal({now, now}, seq);
    EXPECT_FALSE(sink.OnFrame(frame));
  }
  EXPECT_EQ(latency.count(), 3u);  // frames 0, 16 and 32
  EXPECT_EQ(sink.bad_frames(), 0u);
}

}  // namespace
}  // namespace shmlane::bench
