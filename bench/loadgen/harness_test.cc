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
}

}  // namespace
}  // namespace shmlane::bench
