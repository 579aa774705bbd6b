// The watchdog itself: a test that hangs must die with its name and stacks.
#include "tests/dataplane/watchdog.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace shmlane::testing {

// A forked child that hangs alongside its parent (what a lost wake-up
// between two test processes looks like). External and not inlined, so its
// name shows in the backtrace (-rdynamic exports it).
[[gnu::noinline]] void HangingChild();
void HangingChild() {
  for (;;) pause();
}

namespace {

// Runs this binary again with a filter that selects the hanging test (which
// only hangs when asked to through the environment) and checks the outcome.
TEST(WatchdogTest, AHangingTestDiesWithItsNameAndStacks) {
  char self[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", self, sizeof(self) - 1), 0);
  const std::string cmd = std::string("SHMLANE_WATCHDOG_HANG=1 SHMLANE_TEST_TIMEOUT_S=0.5 '") +
                          self + "' --gtest_filter=WatchdogTest.Hangs 2>&1";
  const absl::Time start = absl::Now();
  FILE* out = popen(cmd.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), out)) text.append(buf, n);
  const int status = pclose(out);
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(WIFEXITED(status) || WIFSIGNALED(status));
  EXPECT_NE(status, 0) << text;
  EXPECT_NE(text.find("[watchdog] WatchdogTest.Hangs did not finish"), std::string::npos) << text;
  EXPECT_NE(text.find("TIMED OUT"), std::string::npos) << text;
  EXPECT_NE(text.find("--- thread"), std::string::npos) << "no stack printed:\n" << text;
  // The hung test's forked child is shown too: its state and its own stack.
  EXPECT_NE(text.find("--- process"), std::string::npos) << "no child shown:\n" << text;
  EXPECT_NE(text.find("HangingChild"), std::string::npos) << "no child stack:\n" << text;
  EXPECT_LT(took, absl::Seconds(30));
}

TEST(WatchdogTest, Hangs) {
  if (std::getenv("SHMLANE_WATCHDOG_HANG") == nullptr) GTEST_SKIP() << "run by the test above";
  std::thread sleeper([] { pause(); });  // a second thread whose stack shows too
  sleeper.detach();
  const pid_t child = fork();
  if (child == 0) {
    DieWithParent();
    HangingChild();
  }
  pause();
}

}  // namespace
}  // namespace shmlane::testing
