// Helpers for data-plane tests that run peers in real, separate processes:
// lanes as the daemon creates them, forked children bounded in time, a shared
// page for children to report figures, and the monotonic clock they share.
//
// Thread safety: call from the test's main thread (fork() copies only it).
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dataplane/doorbell.h"
#include "dataplane/internal/check.h"
#include "dataplane/lane.h"
#include "dataplane/segment.h"
#include "tests/dataplane/watchdog.h"

namespace shmlane::dataplane::testing {

// CLOCK_MONOTONIC in ns: one clock for every process on the machine.
inline int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// A lane as the daemon would create it: the creator's mapping and both bells.
struct TestLane {
  Segment creator;
  std::shared_ptr<const Doorbell> producer_bell;
  std::shared_ptr<const Doorbell> consumer_bell;

  static TestLane Make(LaneOptions o, std::shared_ptr<const Doorbell> consumer_bell = nullptr) {
    TestLane l;
    absl::StatusOr<Segment> s = CreateLaneSegment(o);
    SHMLANE_CHECK(s.ok());
    l.creator = std::move(*s);
    l.producer_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
    l.consumer_bell = consumer_bell != nullptr
                          ? std::move(consumer_bell)
                          : std::make_shared<const Doorbell>(*Doorbell::Create());
    return l;
  }
  Segment Map() const {
    absl::StatusOr<Segment> s = Segment::Map(*creator.DupFd(), Access::kReadWrite);
    SHMLANE_CHECK(s.ok());
    return std::move(*s);
  }
  Producer MakeProducer(WaitOptions w = {}) const {
    absl::StatusOr<Producer> p = Producer::Attach(Map(), {producer_bell, consumer_bell}, w);
    SHMLANE_CHECK(p.ok());
    return std::move(*p);
  }
  Consumer MakeConsumer(WaitOptions w = {}) const {
    absl::StatusOr<Consumer> c = Consumer::Attach(Map(), {consumer_bell, producer_bell}, w);
    SHMLANE_CHECK(c.ok());
    return std::move(*c);
  }
  LaneBlocks* blocks() const { return reinterpret_cast<LaneBlocks*>(creator.data()); }
};

// Runs fn in a child process that dies with the test; returns its pid. The
// child exits with fn's value and runs no destructors of the parent's state.
template <typename Fn>
pid_t Spawn(Fn fn) {
  const pid_t pid = fork();
  SHMLANE_CHECK(pid >= 0);
  if (pid == 0) {
    shmlane::testing::DieWithParent();
    _exit(fn());
  }
  return pid;
}

// Waits for a child up to `limit`; a child still running then is killed and
// reported as -1 ("hung"). Otherwise its exit code, or 128 + signal.
inline int ExitCodeWithin(pid_t pid, absl::Duration limit) {
  const absl::Time give_up = absl::Now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    if (r < 0) return -2;
    if (absl::Now() >= give_up) {
      std::fprintf(stderr, "child %d still running after %s: its state and stack:\n",
                   static_cast<int>(pid), absl::FormatDuration(limit).c_str());
      shmlane::testing::DumpProcess(pid);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
}

// Kills a child that loops forever by design (a hostile peer) and reaps it.
inline void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

// A page shared with the children for figures and hand-shakes (atomics).
struct Shared {
  uint64_t values[512];
  uint64_t Get(int i) const { return __atomic_load_n(&values[i], __ATOMIC_ACQUIRE); }
  void Set(int i, uint64_t v) { __atomic_store_n(&values[i], v, __ATOMIC_RELEASE); }
};
inline Shared* MakeShared() {
  void* p =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  SHMLANE_CHECK(p != MAP_FAILED);
  return static_cast<Shared*>(p);
}

// Polls `cond` every 100 us until true or `limit`; returns its last answer.
template <typename Cond>
bool WaitFor(Cond cond, absl::Duration limit = absl::Seconds(10)) {
  const absl::Time give_up = absl::Now() + limit;
  while (!cond()) {
    if (absl::Now() >= give_up) return cond();
    absl::SleepFor(absl::Microseconds(100));
  }
  return true;
}

}  // namespace shmlane::dataplane::testing
