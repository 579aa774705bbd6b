// Runs every transport x pattern for a fraction of a second through the real
// harness (processes, barrier, shared slots) and checks that results come
// back consistent. Timing is not checked: that is the gate's job.
#include "bench/loadgen/harness.h"

#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
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
