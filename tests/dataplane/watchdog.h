// Test watchdog for the data-plane test binaries: every test runs under a
// time bound, and a test that hangs fails with its name and a backtrace of
// every thread of the process (and the state and stacks of its children)
// instead of running into ctest's time-out.
//
// Link shmlane::test_watchdog_main instead of GTest::gtest_main (its main()
// installs the watchdog). The bound is SHMLANE_TEST_TIMEOUT_S seconds (default
// 120) per test; a test that needs more calls SetTestTimeLimit() first.
//
// Thread safety: SetTestTimeLimit() is called from the test's main thread.
#pragma once

#include <sys/types.h>

#include "absl/time/time.h"

namespace shmlane::testing {

// Replaces the current test's time bound (counted from the call).
void SetTestTimeLimit(absl::Duration limit);

// Installs the gtest listener; main() of test_watchdog_main calls it.
void InstallTestWatchdog();

// Prints a process's state (/proc stat, wchan, syscall) and has each of its
// threads print its own stack to the shared stderr: for a forked child that
// a test gives up on, before it is killed.
void DumpProcess(pid_t pid);

// Forked children call this so they die with the test process (a hung test
// aborted by the watchdog leaves no orphan behind).
void DieWithParent();

}  // namespace shmlane::testing
