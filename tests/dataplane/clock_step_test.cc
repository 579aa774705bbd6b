// A wall-clock step must not change how long a data-plane wait lasts: spin
// budgets and deadlines run on the monotonic clock, and an absl::Time
// deadline is converted to it once, on entry.
//
// This binary interposes clock_gettime() so that CLOCK_REALTIME (the clock
// behind absl::Now()) can be stepped without privileges; every other clock is
// passed through untouched. Each victim runs in a child process bounded in
// time, so a wait stretched by the step fails the test instead of hanging it.
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "dataplane/lane.h"
#include "gtest/gtest.h"
#include "tests/dataplane/process_util.h"

namespace {
std::atomic<int64_t> g_realtime_offset_s{0};
}  // namespace

extern "C" int clock_gettime(clockid_t id, struct timespec* ts) {
  const long r = syscall(SYS_clock_gettime, id, ts);
  if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
    ts->tv_sec += g_realtime_offset_s.load(std::memory_order_relaxed);
  }
  return static_cast<int>(r);
}

namespace shmlane::dataplane {
namespace {

using testing::ExitCodeWithin;
using testing::MakeShared;
using testing::NowNs;
using testing::Shared;
using testing::Spawn;
using testing::TestLane;

// ThreadSanitizer cannot run threads in a child forked from a threaded
// process (the watchdog thread), and intercepts the clock itself.
#if defined(__SANITIZE_THREAD__)
#define SHMLANE_SKIP_UNDER_TSAN() GTEST_SKIP() << "not under ThreadSanitizer"
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMLANE_SKIP_UNDER_TSAN() GTEST_SKIP() << "not under ThreadSanitizer"
#endif
#endif
#ifndef SHMLANE_SKIP_UNDER_TSAN
#define SHMLANE_SKIP_UNDER_TSAN() \
  do {                            \
  } while (0)
#endif

TEST(ClockStepTest, InterpositionStepsAbslNow) {
  SHMLANE_SKIP_UNDER_TSAN();
  const absl::Time before = absl::Now();
  g_realtime_offset_s = -3600;
  const absl::Time after = absl::Now();
  g_realtime_offset_s = 0;
  EXPECT_LT(after - before, absl::Minutes(-59)) << "absl::Now() does not see the fake step";
}

// Read(now + 60 ms) while the wall clock jumps back one hour 10 ms in; with
// `ring_at` > 0 stray rings arrive from then on, so the wait is re-entered after
// the step. The call must still end after ~60 ms.
void ExpectReadIgnoresClockStep(absl::Duration spin, absl::Duration ring_at) {
  TestLane lane = TestLane::Make({.ring_bytes = 1 << 16, .max_frame_bytes = 64});
  Shared* shared = MakeShared();
  const pid_t pid = Spawn([&] {
    Consumer c = lane.MakeConsumer({.spin = spin});
    std::atomic<bool> done{false};
    std::thread stepper([&] {
      absl::SleepFor(absl::Milliseconds(10));
      g_realtime_offset_s = -3600;
      if (ring_at > absl::ZeroDuration()) {
        // Stray rings every 5 ms from then on: the wait is re-entered each time.
        absl::SleepFor(ring_at - absl::Milliseconds(10));
        while (!done.load()) {
          lane.consumer_bell->Ring();
          absl::SleepFor(absl::Milliseconds(5));
        }
      }
    });
    std::vector<std::byte> out(64);
    size_t n = 0;
    const int64_t start = NowNs();
    const ReadResult r = c.Read(out, &n, absl::Now() + absl::Milliseconds(60));
    shared->Set(0, static_cast<uint64_t>(NowNs() - start));
    done = true;
    stepper.join();
    return r == ReadResult::kTimeout ? 0 : 1;
  });
  const int code = ExitCodeWithin(pid, absl::Seconds(3));
  const double ms = static_cast<double>(shared->Get(0)) / 1e6;
  if (code == -1) {
    std::printf("Read(60 ms) with a -1 h clock step: still blocked after 3 s (killed)\n");
  } else {
    std::printf("Read(60 ms) with a -1 h clock step: returned after %.3f ms\n", ms);
  }
  EXPECT_EQ(code, 0) << "-1: the step stretched the wait";
  EXPECT_LT(ms, 60 + 40);
  EXPECT_GE(ms, 59.0);
  munmap(shared, sizeof(Shared));
}

TEST(ClockStepTest, StepDuringTheSpinDoesNotStretchIt) {
  SHMLANE_SKIP_UNDER_TSAN();
  ExpectReadIgnoresClockStep(absl::Milliseconds(30), absl::ZeroDuration());
}

TEST(ClockStepTest, StepWhileParkedDoesNotStretchTheDeadline) {
  SHMLANE_SKIP_UNDER_TSAN();
  ExpectReadIgnoresClockStep(absl::ZeroDuration(), absl::Milliseconds(20));
}

}  // namespace
}  // namespace shmlane::dataplane
