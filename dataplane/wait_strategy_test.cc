// The wait strategies: cgroup CPU parsing (v1 and v2 trees built in a
// temporary directory, and a real v1 cgroup when the machine lets root make
// one), CPU-pressure detection in a child pinned to one CPU, the balanced
// waiter's learning, and the spin/park counters of real lanes in each
// preference.
#include "dataplane/wait_strategy.h"

#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "dataplane/lane.h"
#include "dataplane/lane_set.h"
#include "gtest/gtest.h"

namespace shmlane::dataplane {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/wait_strategy_test.XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

TEST(WaitPreferenceTest, NamesRoundTrip) {
  for (WaitPreference p :
       {WaitPreference::kBalanced, WaitPreference::kLatency, WaitPreference::kEfficiency}) {
    EXPECT_EQ(ParseWaitPreference(ToString(p)), p);
  }
  EXPECT_EQ(ParseWaitPreference("LATENCY"), WaitPreference::kLatency);
  EXPECT_EQ(ParseWaitPreference("spin"), std::nullopt);
  EXPECT_EQ(WaitOptions().preference, WaitPreference::kBalanced);
}

TEST(CgroupCpuTest, V1TakesTheTightestQuotaUpTheTree) {
  TempDir t;
  const fs::path cpu = t.path / "cpu";
  Write(cpu / "cpu.cfs_quota_us", "-1\n");
  Write(cpu / "cpu.cfs_period_us", "100000\n");
  Write(cpu / "pod" / "cpu.cfs_quota_us", "50000\n");
  Write(cpu / "pod" / "cpu.cfs_period_us", "100000\n");
  Write(cpu / "pod" / "cpu.stat", "nr_periods 40\nnr_throttled 7\nthrottled_time 123456\n");
  Write(cpu / "pod" / "ctr" / "cpu.cfs_quota_us", "150000\n");
  Write(cpu / "pod" / "ctr" / "cpu.cfs_period_us", "100000\n");
  Write(cpu / "pod" / "ctr" / "cpu.stat", "nr_periods 40\nnr_throttled 2\nthrottled_time 10\n");
  const CgroupCpu c = ReadCgroupCpu("4:memory:/x\n3:cpu,cpuacct:/pod/ctr\n", t.path.string());
  EXPECT_DOUBLE_EQ(c.quota_cpus, 0.5);
  EXPECT_EQ(c.limiting_dir, (cpu / "pod").string());
  EXPECT_EQ(c.nr_throttled, 9u);  // both levels with a quota
  EXPECT_EQ(c.throttled_ns, 123466u);
  EXPECT_GE(c.affinity_cpus, 1);
  EXPECT_GE(c.online_cpus, c.affinity_cpus);
}

TEST(CgroupCpuTest, V2ReadsCpuMaxAndThrottledUsec) {
  TempDir t;
  Write(t.path / "cpu.stat", "usage_usec 5\n");
  Write(t.path / "kubepods" / "cpu.max", "max 100000\n");
  Write(t.path / "kubepods" / "pod1" / "cpu.max", "25000 50000\n");
  Write(t.path / "kubepods" / "pod1" / "cpu.stat",
        "usage_usec 900\nnr_periods 10\nnr_throttled 3\nthrottled_usec 40\n");
  const CgroupCpu c = ReadCgroupCpu("0::/kubepods/pod1\n", t.path.string());
  EXPECT_DOUBLE_EQ(c.quota_cpus, 0.5);
  EXPECT_EQ(c.nr_throttled, 3u);
  EXPECT_EQ(c.throttled_ns, 40'000u);
}

TEST(CgroupCpuTest, NoQuotaAnywhereReadsAsUnlimited) {
  TempDir t;
  Write(t.path / "a" / "cpu.max", "max 100000\n");
  const CgroupCpu c = ReadCgroupCpu("0::/a\n", t.path.string());
  EXPECT_EQ(c.quota_cpus, 0);
  const CgroupCpu none = ReadCgroupCpu("garbage", t.path.string());
  EXPECT_EQ(none.quota_cpus, 0);
}

// Runs `body` in a forked child; the test fails with its message if the
// child's checks fail or it does not finish within 20 s.
void InChild(const std::function<std::string()>& body) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(20);
    const std::string err = body();
    if (!err.empty()) std::fprintf(stderr, "child: %s\n", err.c_str());
    _exit(err.empty() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died (signal " << WTERMSIG(status) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see the child's message above";
}

// A spin whose sched_yield hands the CPU to another runnable task (a busy
// process pinned to our CPU) notes it, and balanced waiters stop spinning;
// latency keeps its budget whatever happens.
TEST(CpuPressureTest, ASpinThatGivesTheCpuAwayStopsBalancedSpinning) {
  InChild([]() -> std::string {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) return "sched_setaffinity failed";
    const pid_t hog = fork();  // inherits the one-CPU mask
    if (hog == 0) {
      alarm(20);
      for (;;) {
      }
    }
    CpuPressure::Get().ResetForTest();
    const bool before = CpuPressure::Get().High(Deadline::NowNs());
    SpinOutcome o;
    for (int i = 0; i < 50 && !o.gave_cpu_away; ++i) {
      o = Spin(
          5'000'000, Deadline::Infinite(), [] { return false; }, 64, /*stop_on_long_yield=*/true);
    }
    kill(hog, SIGKILL);
    waitpid(hog, nullptr, 0);
    if (before) return "";  // pressure already (a quota on this machine): nothing to show
    if (!o.gave_cpu_away) return "sched_yield never ran the hog";
    Waiter balanced({.spin = absl::Microseconds(50)});
    balanced.Learn(kBreakEvenNs, o);
    if (!CpuPressure::Get().High(Deadline::NowNs())) return "a long yield did not count";
    if (balanced.SpinBudgetNs(Deadline::NowNs()) != 0) return "balanced spins after a long yield";
    Waiter latency({.spin = absl::Microseconds(50), .preference = WaitPreference::kLatency});
    if (latency.SpinBudgetNs(Deadline::NowNs()) != 50'000) return "latency must spin as asked";
    return "";
  });
}

// A real v1 cgroup with a half-CPU quota: the process inside sees it. Needs
// root and a writable v1 cpu controller (this project's VMs); skipped else.
TEST(CpuPressureTest, RealCgroupQuotaIsSeen) {
  const fs::path dir = absl::StrCat("/sys/fs/cgroup/cpu/shmlane-wait-test-", getpid());
  if (::mkdir(dir.c_str(), 0755) != 0) {
    GTEST_SKIP() << "cannot create " << dir << " (no writable cgroup v1 cpu controller)";
  }
  {
    std::ofstream(dir / "cpu.cfs_period_us") << "100000\n";
    std::ofstream(dir / "cpu.cfs_quota_us") << "50000\n";
  }
  InChild([&]() -> std::string {
    {
      std::ofstream procs(dir / "cgroup.procs");
      procs << getpid() << "\n";
      if (!procs) return "cannot join the cgroup";
    }
    const CgroupCpu c = ReadOwnCgroupCpu();
    if (c.quota_cpus != 0.5) return absl::StrCat("quota read as ", c.quota_cpus);
    CpuPressure::Get().ResetForTest();
    if (!CpuPressure::Get().High(Deadline::NowNs())) return "half a CPU, yet no pressure";
    return "";
  });
  // The child has exited; the empty cgroup can go.
  for (int i = 0; i < 100 && ::rmdir(dir.c_str()) != 0; ++i) usleep(10'000);
  EXPECT_FALSE(fs::exists(dir)) << "could not remove " << dir;
}

TEST(WaiterTest, PreferencesChooseTheBudget) {
  Waiter efficiency({.spin = absl::Microseconds(50), .preference = WaitPreference::kEfficiency});
  EXPECT_EQ(efficiency.SpinBudgetNs(Deadline::NowNs()), 0);
  Waiter latency({.spin = absl::Microseconds(50), .preference = WaitPreference::kLatency});
  EXPECT_EQ(latency.SpinBudgetNs(Deadline::NowNs()), 50'000);
  Waiter zero({.spin = absl::ZeroDuration(), .preference = WaitPreference::kLatency});
  EXPECT_EQ(zero.SpinBudgetNs(Deadline::NowNs()), 0);
}

// Balanced's learning, on a machine where it may spin at all.
class BalancedWaiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CpuPressure::Get().ResetForTest();
    if (CpuPressure::Get().High(Deadline::NowNs())) {
      GTEST_SKIP() << "this process is under CPU pressure (one CPU, a quota, or throttled): "
                      "balanced never spins here";
    }
  }
  Waiter w{{.spin = absl::Microseconds(50)}};
  const int64_t now = Deadline::NowNs();
  const SpinOutcome miss{.ready = false, .spun_ns = kBreakEvenNs};
  const SpinOutcome hit{.ready = true, .spun_ns = 500};
};

TEST_F(BalancedWaiterTest, LearnsToParkAndProbesBack) {
  EXPECT_EQ(w.SpinBudgetNs(now), kBreakEvenNs) << "balanced spins at most the break-even time";
  for (int i = 0; i < 3; ++i) w.Learn(kBreakEvenNs, miss);
  // Parking regime: park, except for one probe in kProbeEvery waits.
  int probes = 0;
  for (uint32_t i = 0; i < 4 * kProbeEvery; ++i) probes += w.SpinBudgetNs(now) > 0 ? 1 : 0;
  EXPECT_EQ(probes, 4);
  for (int i = 0; i < 3; ++i) w.Learn(kBreakEvenNs, hit);
  EXPECT_EQ(w.SpinBudgetNs(now), kBreakEvenNs) << "three probe hits switch back to spinning";
}

// Rare traffic: every probe misses, so probing backs off from one in
// kProbeEvery waits to one in kMaxProbeEvery; a probe that wins resets it.
TEST_F(BalancedWaiterTest, ProbesThatKeepMissingBackOff) {
  for (int i = 0; i < 3; ++i) w.Learn(kBreakEvenNs, miss);
  ASSERT_EQ(w.probe_every(), kProbeEvery);
  // 8 + 16 + 32 waits back off to 64; then five more intervals of 64.
  int probes = 0;
  const uint32_t waits = 8 + 16 + 32 + 5 * kMaxProbeEvery;
  for (uint32_t i = 0; i < waits; ++i) {
    const int64_t budget = w.SpinBudgetNs(now);
    if (budget > 0) {
      ++probes;
      w.Learn(budget, miss);
    }
  }
  EXPECT_EQ(probes, 8) << "one probe in 8, 16, 32, then 64 waits";
  EXPECT_EQ(w.probe_every(), kMaxProbeEvery);
  // The next probe wins: probing is back to one in kProbeEvery.
  int64_t budget = 0;
  for (uint32_t i = 0; i < kMaxProbeEvery && budget == 0; ++i) budget = w.SpinBudgetNs(now);
  ASSERT_GT(budget, 0);
  w.Learn(budget, hit);
  EXPECT_EQ(w.probe_every(), kProbeEvery);
}

struct Lane {
  Segment observer;
  std::shared_ptr<const Doorbell> pbell = std::make_shared<Doorbell>(*Doorbell::Create());
  std::shared_ptr<const Doorbell> cbell = std::make_shared<Doorbell>(*Doorbell::Create());
  Segment Map() const { return *Segment::Map(*observer.DupFd(), Access::kReadWrite); }
  const LaneBlocks& blocks() const { return *reinterpret_cast<const LaneBlocks*>(observer.data()); }
};

Lane MakeLane(uint64_t ring_bytes = 1 << 16) {
  Lane l;
  l.observer = *CreateLaneSegment({.ring_bytes = ring_bytes, .max_frame_bytes = 1024});
  return l;
}

// A consumer waits for a frame a thread writes 50 ms later (far beyond the
// 200 us spin even on a loaded machine): efficiency parks
// without spinning, latency spins its whole budget first; both count a park
// and a wake-up.
TEST(WaitCountersTest, ConsumerCountsSpinsParksAndWakeups) {
  for (WaitPreference pref : {WaitPreference::kEfficiency, WaitPreference::kLatency}) {
    SCOPED_TRACE(ToString(pref));
    Lane l = MakeLane();
    Producer p = *Producer::Attach(l.Map(), {l.pbell, l.cbell});
    Consumer c = *Consumer::Attach(l.Map(), {l.cbell, l.pbell},
                                   {.spin = absl::Microseconds(200), .preference = pref});
    std::thread writer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::byte b[8] = {};
      EXPECT_EQ(p.TryWrite(b), WriteResult::kOk);
    });
    std::byte buf[64];
    size_t n = 0;
    EXPECT_EQ(c.Read(buf, &n, absl::Now() + absl::Seconds(10)), ReadResult::kOk);
    writer.join();
    const ConsumerCounters& k = l.blocks().consumer_counters;
    EXPECT_EQ(k.empty_waits, 1u);
    EXPECT_EQ(k.wakeups_received, 1u);
    if (pref == WaitPreference::kEfficiency) {
      EXPECT_EQ(k.spin_waits, 0u);
      EXPECT_EQ(k.spin_ns, 0u);
    } else {
      EXPECT_EQ(k.spin_waits, 1u);
      EXPECT_EQ(k.spin_wins, 0u);
      EXPECT_GE(k.spin_ns, 200'000u);
    }
  }
}

// A producer blocked on a full ring follows its preference too.
TEST(WaitCountersTest, ProducerOnAFullRingCountsItsSpin) {
  for (WaitPreference pref : {WaitPreference::kEfficiency, WaitPreference::kLatency}) {
    SCOPED_TRACE(ToString(pref));
    Lane l = MakeLane(4096);
    Producer p = *Producer::Attach(l.Map(), {l.pbell, l.cbell},
                                   {.spin = absl::Microseconds(200), .preference = pref});
    Consumer c = *Consumer::Attach(l.Map(), {l.cbell, l.pbell});
    const std::byte frame[1000] = {};
    while (p.TryWrite(frame) == WriteResult::kOk) {
    }
    std::thread reader([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::byte buf[1024];
      size_t n = 0;
      while (c.TryRead(buf, &n) == ReadResult::kOk) {
      }
    });
    EXPECT_EQ(p.Write(frame, absl::Now() + absl::Seconds(10)), WriteResult::kOk);
    reader.join();
    const ProducerCounters& k = l.blocks().producer_counters;
    EXPECT_EQ(k.full_waits, 1u);
    EXPECT_EQ(k.spin_waits, pref == WaitPreference::kLatency ? 1u : 0u);
    if (pref == WaitPreference::kLatency) {
      EXPECT_GE(k.spin_ns, 200'000u);
    }
  }
}

// A lane set charges its spin to one lane: the one whose frame ended it.
TEST(WaitCountersTest, LaneSetChargesTheLaneThatEndedTheSpin) {
  Lane a = MakeLane(), b = MakeLane();
  Producer pb = *Producer::Attach(b.Map(), {b.pbell, b.cbell});
  LaneSet set(64, {.spin = absl::Seconds(5), .preference = WaitPreference::kLatency});
  ASSERT_TRUE(set.AddLane(1, *Consumer::Attach(a.Map(), {a.cbell, a.pbell})).ok());
  ASSERT_TRUE(set.AddLane(2, *Consumer::Attach(b.Map(), {b.cbell, b.pbell})).ok());
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const std::byte f[8] = {};
    EXPECT_EQ(pb.TryWrite(f), WriteResult::kOk);
  });
  size_t got =
      set.Wait([](uint64_t, std::span<const std::byte>) {},
               [](uint64_t, ReadResult, const absl::Status&) {}, absl::Now() + absl::Seconds(10));
  writer.join();
  EXPECT_EQ(got, 1u);
  EXPECT_EQ(b.blocks().consumer_counters.spin_waits, 1u);
  EXPECT_EQ(b.blocks().consumer_counters.spin_wins, 1u);
  EXPECT_GE(b.blocks().consumer_counters.spin_ns, 1'000'000u);
  EXPECT_EQ(a.blocks().consumer_counters.spin_waits, 0u);
  EXPECT_EQ(b.blocks().consumer_counters.empty_waits, 0u);
}

}  // namespace
}  // namespace shmlane::dataplane
