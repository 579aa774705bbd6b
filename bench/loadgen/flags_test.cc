// shmlane-bench's command line: defaults, both value spellings, validation,
// --help and usage errors (bench/cli.h), single runs and suites.
#include "bench/loadgen/flags.h"

#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "bench/cli.h"
#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

struct Parsed {
  ParseOutcome outcome;
  std::string out, err;
};

Parsed ParseArgs(std::initializer_list<const char*> args) {
  std::vector<const char*> argv = {"shmlane-bench"};
  argv.insert(argv.end(), args.begin(), args.end());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  Parsed p;
  p.outcome = ParseCommandLine(static_cast<int>(argv.size()), argv.data());
  p.out = testing::internal::GetCapturedStdout();
  p.err = testing::internal::GetCapturedStderr();
  return p;
}

TEST(FlagsTest, DefaultsAreOneUdsStreamRun) {
  Parsed p = ParseArgs({});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  ASSERT_EQ(p.outcome.invocation->specs.size(), 1u);
  const RunSpec& s = p.outcome.invocation->specs[0];
  const SuiteOptions& o = p.outcome.invocation->options;
  EXPECT_EQ(s.transport, TransportKind::kUds);
  EXPECT_EQ(s.pattern, Pattern::kStream);
  EXPECT_EQ(s.clients, 1);
  EXPECT_EQ(s.frame_bytes, 64u);
  EXPECT_EQ(s.duration, absl::Seconds(5));
  EXPECT_EQ(s.warmup, absl::Seconds(1));
  EXPECT_EQ(s.rate, 100000);
  EXPECT_EQ(s.wait, WaitMode::kPark);  // blocking calls: what socket programs do
  EXPECT_EQ(s.spin, absl::Microseconds(50));
  EXPECT_FALSE(s.pin);
  EXPECT_EQ(s.ring_bytes, 0u);
  EXPECT_EQ(s.batch, 1);
  EXPECT_EQ(s.batch_bytes, uint64_t{1} << 20);
  EXPECT_EQ(s.touch, Touch::kRead);
  EXPECT_FALSE(s.shmlaned.empty());
  EXPECT_FALSE(o.json);
  EXPECT_FALSE(o.gate);
  EXPECT_TRUE(o.plots);
  EXPECT_FALSE(o.write_files);  // a single run writes files only with --out
  EXPECT_EQ(o.out_dir, "bench/results");
  EXPECT_EQ(o.targets, "bench/targets.json");
}

TEST(FlagsTest, WaitDefaultsPerTransportUnlessGiven) {
  Parsed p = ParseArgs({"--transport", "shm"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  EXPECT_EQ(p.outcome.invocation->specs[0].wait, WaitMode::kBalanced);  // the library's default
  p = ParseArgs({"--transport", "tcp", "--wait", "spin"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  EXPECT_EQ(p.outcome.invocation->specs[0].wait, WaitMode::kSpin);
}

TEST(FlagsTest, CpuLimitClientTimingAndBalanced) {
  Parsed p = ParseArgs({"--transport", "shm", "--pattern", "openloop", "--cpu-limit", "0.5",
                        "--client-timing", "wait", "--wait", "balanced"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  const RunSpec& s = p.outcome.invocation->specs[0];
  EXPECT_EQ(s.cpu_limit, 0.5);
  EXPECT_EQ(s.client_timing, ClientTiming::kWait);
  EXPECT_EQ(s.wait, WaitMode::kBalanced);
  EXPECT_EQ(Label(s), "shm/openloop/c1/f64/b1/r100000/cpu0.5");
  // The default client timing sleeps; balanced is for shm only.
  p = ParseArgs({"--pattern", "openloop"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  EXPECT_EQ(p.outcome.invocation->specs[0].client_timing, ClientTiming::kSleep);
  p = ParseArgs({"--transport", "uds", "--wait", "balanced"});
  EXPECT_FALSE(p.outcome.invocation.has_value());
  EXPECT_NE(p.err.find("balanced"), std::string::npos) << p.err;
  p = ParseArgs({"--cpu-limit", "0"});
  EXPECT_FALSE(p.outcome.invocation.has_value());
}

TEST(FlagsTest, WaitingSuiteCoversEveryStrategyRateAndLimit) {
  Parsed p = ParseArgs({"--suite", "waiting"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  std::set<std::string> cells;
  for (const RunSpec& s : p.outcome.invocation->specs) {
    EXPECT_EQ(s.client_timing, ClientTiming::kSleep);
    if (s.transport == TransportKind::kUds) {
      EXPECT_TRUE(s.wait == WaitMode::kPark || s.wait == WaitMode::kAdaptive);
    }
    cells.insert(Label(s));
  }
  EXPECT_EQ(cells.size(), p.outcome.invocation->specs.size()) << "every run is its own cell";
  for (const char* want :
       {"shm/openloop/c1/f64/b1/r1000", "shm/openloop/c8/f64/b1/r200000/cpu0.5/adaptive",
        "shm/openloop/c1/f64/b1/r20000/cpu1/park", "uds/openloop/c8/f64/b1/r20000/cpu1",
        "uds/pingpong/c1/f64/b1/cpu0.5/adaptive", "shm/pingpong/c1/f64/b1",
        "shm/stream/c32/f64/b1/adaptive"}) {
    EXPECT_TRUE(cells.count(want)) << want;
  }
  EXPECT_EQ(p.outcome.invocation->specs.size(), 3u * (3 * 2 * 5 + 5) + 4);
}

TEST(FlagsTest, TakesBatchingAndTouch) {
  Parsed p =
      ParseArgs({"--batch=64", "--batch-bytes", "4096", "--touch", "none", "--frame-bytes", "8"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  const RunSpec& s = p.outcome.invocation->specs[0];
  EXPECT_EQ(s.batch, 64);
  EXPECT_EQ(s.batch_bytes, 4096u);
  EXPECT_EQ(s.touch, Touch::kNone);
  EXPECT_EQ(s.frame_bytes, 8u);  // counting-only frames carry no checksum
  EXPECT_EQ(Label(s), "uds/stream/c1/f8/b64/touch-none");
}

TEST(FlagsTest, TakesBothValueSpellingsAndDurations) {
  Parsed p = ParseArgs({"--transport=tcp",
                        "--pattern",
                        "openloop",
                        "--clients=8",
                        "--frame-bytes",
                        "128",
                        "--duration=500ms",
                        "--warmup",
                        "0",
                        "--rate=2500.5",
                        "--wait",
                        "park",
                        "--spin=2us",
                        "--pin",
                        "--ring-bytes",
                        "65536",
                        "--shmlaned=/x/shmlaned",
                        "--json",
                        "--out",
                        "/tmp/o",
                        "--no-plots"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  const RunSpec& s = p.outcome.invocation->specs[0];
  const SuiteOptions& o = p.outcome.invocation->options;
  EXPECT_EQ(s.transport, TransportKind::kTcp);
  EXPECT_EQ(s.pattern, Pattern::kOpenLoop);
  EXPECT_EQ(s.clients, 8);
  EXPECT_EQ(s.frame_bytes, 128u);
  EXPECT_EQ(s.duration, absl::Milliseconds(500));
  EXPECT_EQ(s.warmup, absl::ZeroDuration());
  EXPECT_EQ(s.rate, 2500.5);
  EXPECT_EQ(s.wait, WaitMode::kPark);
  EXPECT_EQ(s.spin, absl::Microseconds(2));
  EXPECT_TRUE(s.pin);
  EXPECT_EQ(s.ring_bytes, 65536u);
  EXPECT_EQ(s.shmlaned, "/x/shmlaned");
  EXPECT_TRUE(o.json);
  EXPECT_TRUE(o.write_files);
  EXPECT_EQ(o.out_dir, "/tmp/o");
  EXPECT_FALSE(o.plots);
  // Plain seconds and the last of repeated options.
  p = ParseArgs({"--duration", "2.5", "--clients", "3", "--clients", "4"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  EXPECT_EQ(p.outcome.invocation->specs[0].duration, absl::Milliseconds(2500));
  EXPECT_EQ(p.outcome.invocation->specs[0].clients, 4);
}

TEST(FlagsTest, HelpListsGroupsAndDefaultsAndExitsZero) {
  for (const char* help : {"--help", "-h"}) {
    Parsed p = ParseArgs({help});
    EXPECT_FALSE(p.outcome.invocation);
    EXPECT_EQ(p.outcome.exit_code, 0);
    EXPECT_TRUE(p.err.empty()) << p.err;
    for (const char* want : {"Run:",
                             "Suites and result files:",
                             "Output:",
                             "--transport",
                             "--frame-bytes",
                             "=64",
                             "=5s",
                             "=50us",
                             "--wait",
                             "--batch",
                             "--batch-bytes",
                             "=1048576",
                             "--touch",
                             "=read",
                             "--ring-bytes",
                             "--suite",
                             "{quick,full,smoke,fanout,waiting}",
                             "--subscribers",
                             "{stream,pingpong,openloop,fanout}",
                             "--cpu-limit",
                             "--client-timing",
                             "=bench/results",
                             "--gate",
                             "--no-plots",
                             "--json"}) {
      EXPECT_NE(p.out.find(want), std::string::npos) << want << " not in\n" << p.out;
    }
  }
}

TEST(FlagsTest, UsageErrorsAreOneLineNamingTheArgument) {
  struct Case {
    std::vector<const char*> args;
    const char* names;
  };
  const std::vector<Case> cases = {
      {{"--no-such-flag"}, "--no-such-flag"},
      {{"--clients", "0"}, "--clients"},
      {{"--clients", "513"}, "--clients"},
      {{"--clients", "many"}, "--clients"},
      {{"--pattern", "burst"}, "--pattern"},
      {{"--wait=sleep"}, "--wait"},
      {{"--transport", "shm,carrier-pigeon"}, "--transport"},
      {{"--duration", "soon"}, "--duration"},
      {{"--duration", "0"}, "--duration"},
      {{"--warmup", "-1s"}, "--warmup"},
      {{"--ring-bytes", "1000"}, "--ring-bytes"},
      {{"--frame-bytes", "0"}, "--frame-bytes"},
      {{"--suite", "huge"}, "--suite"},
      {{"--clients"}, "--clients"},
      {{"--transport", "shm,uds"}, "--transport"},  // one per single run
      {{"--pattern", "openloop", "--frame-bytes", "8", "--touch", "none"}, "--frame-bytes"},
      {{"--frame-bytes", "16"}, "--frame-bytes"},  // too short for the checksum
      {{"--batch", "0"}, "--batch"},
      {{"--batch", "1025"}, "--batch"},
      {{"--batch", "1,64"}, "--batch"},  // one per single run
      {{"--batch-bytes", "0"}, "--batch-bytes"},
      {{"--touch", "some"}, "--touch"},
      {{"stray"}, "stray"},
  };
  for (const Case& c : cases) {
    std::vector<const char*> argv = {"shmlane-bench"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    ParseOutcome o = ParseCommandLine(static_cast<int>(argv.size()), argv.data());
    const std::string out = testing::internal::GetCapturedStdout();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_FALSE(o.invocation) << c.names;
    EXPECT_EQ(o.exit_code, kExitUsage) << c.names;
    EXPECT_TRUE(out.empty()) << out;
    EXPECT_EQ(err.rfind("shmlane-bench: ", 0), 0u) << err;
    EXPECT_NE(err.find(c.names), std::string::npos) << c.names << ": " << err;
    EXPECT_EQ(err.find('\n'), err.size() - 1) << "not one line: " << err;
  }
}

TEST(FlagsTest, SuitesTakeOverridesAndATransportList) {
  Parsed p = ParseArgs({"--suite=smoke", "--duration", "1s", "--transport", "shm,uds"});
  if (!p.outcome.invocation) {
    // The smoke suite needs shm; without the client library it is refused.
    EXPECT_NE(p.err.find("smoke suite needs the shm transport"), std::string::npos) << p.err;
    GTEST_SKIP() << "shm not built in";
  }
  const Invocation& inv = *p.outcome.invocation;
  EXPECT_TRUE(inv.options.write_files);
  // shm, uds x stream 64 B and 64 KiB (batched), pingpong 64 B, fanout
  // 64 KiB to 8 subscribers.
  ASSERT_EQ(inv.specs.size(), 8u);
  int fanout = 0;
  for (const RunSpec& s : inv.specs) {
    EXPECT_EQ(s.duration, absl::Seconds(1));
    if (s.pattern == Pattern::kFanout) {
      ++fanout;
      EXPECT_EQ(s.clients, 8);
      EXPECT_EQ(s.frame_bytes, 65536u);
      EXPECT_EQ(s.warmup, absl::Milliseconds(250));  // the fanout axis's own
    } else {
      EXPECT_EQ(s.warmup, absl::Milliseconds(500));  // the suite's
    }
    EXPECT_EQ(s.pin, s.pattern == Pattern::kPingPong);  // streaming runs unpinned
    EXPECT_EQ(s.batch, s.pattern == Pattern::kPingPong ? 1 : 64);
    EXPECT_EQ(s.touch, Touch::kRead);
    EXPECT_EQ(s.wait, s.transport == TransportKind::kShm ? WaitMode::kBalanced : WaitMode::kPark);
  }
  EXPECT_EQ(fanout, 2);
  p = ParseArgs({"--suite", "quick", "--transport", "uds", "--transport", "pipe"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  bool batched = false, unbatched = false;
  for (const RunSpec& s : p.outcome.invocation->specs) {
    EXPECT_TRUE(s.transport == TransportKind::kUds || s.transport == TransportKind::kPipe);
    EXPECT_EQ(s.wait, WaitMode::kPark);
    if (s.pattern == Pattern::kOpenLoop) {
      EXPECT_EQ(s.rate, 20000);
    }
    if (s.pattern == Pattern::kStream) {
      batched |= s.batch == 64;
      unbatched |= s.batch == 1;
    } else if (s.pattern == Pattern::kFanout) {
      EXPECT_EQ(s.batch, 64);
      EXPECT_EQ(s.duration, absl::Seconds(1));  // bounded: 32 subscribers oversubscribe
    } else {
      EXPECT_EQ(s.batch, 1);
    }
  }
  EXPECT_TRUE(batched && unbatched);
  // --batch replaces the suite's batch settings (ping-pong stays at 1).
  p = ParseArgs({"--suite", "quick", "--transport", "uds", "--batch", "1,256"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  for (const RunSpec& s : p.outcome.invocation->specs) {
    EXPECT_TRUE(s.batch == 1 || (s.batch == 256 && s.pattern != Pattern::kPingPong)) << Label(s);
  }
}

TEST(FlagsTest, FanoutTakesSubscribers) {
  Parsed p = ParseArgs({"--pattern", "fanout", "--subscribers", "8", "--transport", "shm",
                        "--frame-bytes", "65536", "--batch", "64"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  ASSERT_EQ(p.outcome.invocation->specs.size(), 1u);
  const RunSpec& s = p.outcome.invocation->specs[0];
  EXPECT_EQ(s.pattern, Pattern::kFanout);
  EXPECT_EQ(s.clients, 8);
  EXPECT_EQ(s.wait, WaitMode::kBalanced);
  EXPECT_EQ(Label(s), "shm/fanout/s8/f65536/b64");
  // --clients is the same count for fanout; --subscribers wins when both are given.
  p = ParseArgs({"--pattern=fanout", "--clients", "3"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  EXPECT_EQ(p.outcome.invocation->specs[0].clients, 3);
  p = ParseArgs({"--pattern=fanout", "--clients", "3", "--subscribers", "5"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  EXPECT_EQ(p.outcome.invocation->specs[0].clients, 5);
}

TEST(FlagsTest, FanoutRejectsWhatItCannotRun) {
  struct Case {
    std::initializer_list<const char*> args;
    const char* names;
  };
  const Case cases[] = {
      {{"--subscribers", "4"}, "--subscribers needs --pattern fanout"},
      {{"--pattern", "fanout", "--subscribers", "0"}, "--subscribers"},
      {{"--pattern", "fanout", "--subscribers", "513"}, "--subscribers"},
      {{"--pattern", "fanout", "--frame-bytes", "8", "--touch", "none"}, ">= 16"},
  };
  for (const Case& c : cases) {
    Parsed p = ParseArgs(c.args);
    EXPECT_FALSE(p.outcome.invocation) << c.names;
    EXPECT_EQ(p.outcome.exit_code, kExitUsage) << c.names;
    EXPECT_NE(p.err.find(c.names), std::string::npos) << c.names << ": " << p.err;
  }
}

TEST(FlagsTest, FanoutSuiteIsTheIssueMatrix) {
  Parsed p = ParseArgs({"--suite", "fanout", "--transport", "uds,pipe,tcp,grpc"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  std::set<std::string> cells;
  for (const RunSpec& s : p.outcome.invocation->specs) {
    EXPECT_EQ(s.pattern, Pattern::kFanout);
    EXPECT_EQ(s.batch, 64);
    EXPECT_EQ(s.touch, Touch::kRead);
    EXPECT_EQ(s.duration, absl::Seconds(1));
    EXPECT_EQ(s.warmup, absl::Milliseconds(250));
    cells.insert(Label(s));
  }
  // 4 transports x {64 B, 64 KiB} x {1, 8, 32} subscribers.
  EXPECT_EQ(cells.size(), 24u);
  EXPECT_EQ(cells.count("uds/fanout/s32/f65536/b64"), 1u);
  EXPECT_EQ(cells.count("grpc/fanout/s1/f64/b64"), 1u);
  // --duration overrides the axis's bounded window.
  p = ParseArgs({"--suite", "fanout", "--transport", "uds", "--duration", "3s"});
  ASSERT_TRUE(p.outcome.invocation) << p.err;
  for (const RunSpec& s : p.outcome.invocation->specs) EXPECT_EQ(s.duration, absl::Seconds(3));
}

}  // namespace
}  // namespace shmlane::bench
