// Wait strategies: how a blocking data-plane call (a consumer waiting for a
// frame, a producer waiting for room, a lane set waiting for any lane, a
// request/reply client waiting for its reply) decides between spinning and
// parking on its eventfd.
//
//   kLatency     spin up to WaitOptions::spin (50 us), then park: the fastest
//                hand-off when a CPU is free for the waiter, a full core per
//                busy waiter at moderate rates, and the worst choice under a
//                CPU quota (the spin is throttled into 100 ms CFS periods).
//   kBalanced    the default: spin only when spinning is likely to pay and
//                is cheap, else park at once (below and docs/architecture.md,
//                "Waiting").
//   kEfficiency  park at once: one wake-up per idle period, like a blocking
//                socket.
//
// Balanced, in short. A park costs the waiter a system call and its peer an
// eventfd write, a few microseconds of CPU each, plus a wake-up latency of
// tens of microseconds on small VMs. Spinning for at most that cost
// (kBreakEvenNs) is the classic 2-competitive rule of spin-then-block
// (Karlin, Li, Manasse, Owicki 1991): whatever the peer does, the waiter
// spends at most twice what an oracle would. Balanced spins that long (or
// twice its recent winning spins, up to kMaxGrownSpinNs, when they keep
// winning near the limit: glibc's adaptive-mutex rule, which lets a busy
// stream keep spinning), and only while the recent spins of this endpoint
// mostly succeeded (a hit
// ratio, like glibc's adaptive mutexes learning their spin count); while
// they fail it parks at once and re-tests with one spin in kProbeEvery waits
// (backing off to one in kMaxProbeEvery while the probes keep missing), so
// a lane whose traffic speeds up is noticed. It never spins when spinning
// cannot help or burns a quota (CpuPressure): fewer than two CPUs online, or
// a cgroup CPU quota below two CPUs (read from cpu.max or cpu.cfs_quota_us up
// the hierarchy), the cgroup was throttled in the last
// second (cpu.stat nr_throttled grew), or a sched_yield inside a spin gave the
// CPU away for long (another runnable task shares our CPU). The Go runtime
// has the same rules (no spinning with one P, only while others are idle).
//
// Thread safety: WaitOptions is a value. A Waiter belongs to one endpoint and
// is used by the thread that uses the endpoint. CpuPressure is process-wide
// and safe from any thread.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dataplane/deadline.h"

namespace shmlane::dataplane {

// What a channel or an endpoint prefers when it has to wait. The numbering
// matches shmlane.v1.WaitPreference (control.proto), minus its UNSPECIFIED.
enum class WaitPreference : uint32_t {
  kBalanced = 1,
  kLatency = 2,
  kEfficiency = 3,
};
const char* ToString(WaitPreference p);  // "balanced", "latency", "efficiency"
std::optional<WaitPreference> ParseWaitPreference(absl::string_view name);

// How a blocking call waits. `spin` is the spin budget of kLatency and the
// upper bound of kBalanced's (which spins at most kBreakEvenNs); zero parks
// at once whatever the preference. Positional initialisation
// (`WaitOptions{absl::Microseconds(5)}`) sets the budget only.
struct WaitOptions {
  absl::Duration spin = absl::Microseconds(50);
  WaitPreference preference = WaitPreference::kBalanced;
};

// Roughly what one park costs (CPU of the park and of the peer's eventfd
// write, on the 2-vCPU development VMs): the spin kBalanced starts from (it
// grows only while longer spins keep winning, Waiter::SpinBudgetNs).
inline constexpr int64_t kBreakEvenNs = 10'000;
// The most kBalanced's budget grows to (twice the break-even): enough for a
// busy 64 KiB stream's 10-20 us waits, short of an open loop's 45 us ones
// at 20 k frames/s (a budget that covered those learned to spin every gap
// and cost what kLatency costs).
inline constexpr int64_t kMaxGrownSpinNs = 2 * kBreakEvenNs;
// kBalanced re-tests spinning once in this many waits while it parks; each
// probe that misses doubles the interval up to kMaxProbeEvery, a probe that
// wins resets it (rare traffic then pays kBreakEvenNs / 64, 0.16 us, per
// wait for the probes instead of 1.25 us: the binary exponential backoff of
// Ethernet and Aeron's BackoffIdleStrategy, applied to probing).
inline constexpr uint32_t kProbeEvery = 8;
inline constexpr uint32_t kMaxProbeEvery = 64;

// The CPU a process may use, from its affinity mask and the cgroup CPU
// controller (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us), the
// smallest quota on the path from the process's cgroup to the root.
struct CgroupCpu {
  int online_cpus = 0;        // CPUs the kernel runs (sysconf)
  int affinity_cpus = 0;      // CPUs in this thread's affinity mask (informational: a thread
                              // pinned to one CPU may wait for a peer pinned to another)
  double quota_cpus = 0;      // quota / period of the tightest level; 0 = no quota
  uint64_t nr_throttled = 0;  // summed over the levels that have a quota
  uint64_t throttled_ns = 0;  // likewise (v2 throttled_usec, v1 throttled_time)
  std::string limiting_dir;   // the cgroup directory whose quota is the tightest
};

// Reads the above for the cgroup named in `proc_self_cgroup` (the text of
// /proc/self/cgroup) under `fs_root` (normally /sys/fs/cgroup). Levels
// without the files are skipped; a process with no quota anywhere gets
// quota_cpus 0. Never fails: unreadable files read as "no limit".
CgroupCpu ReadCgroupCpu(absl::string_view proc_self_cgroup, const std::string& fs_root);
// The same for this process (reads /proc/self/cgroup).
CgroupCpu ReadOwnCgroupCpu();

// Process-wide: is spinning a bad idea right now? Refreshed from the cgroup
// files at most once per kPressureRefreshNs (by whichever waiter asks first;
// the others use the cached answer), so asking costs two relaxed loads.
class CpuPressure {
 public:
  static constexpr int64_t kPressureRefreshNs = 100'000'000;  // 100 ms, one CFS period
  static constexpr int64_t kThrottleHoldNs = 1'000'000'000;   // after a throttled period
  static constexpr int64_t kYieldHoldNs = 100'000'000;        // after a long sched_yield

  static CpuPressure& Get();
  bool High(int64_t now_ns);
  // A spin's sched_yield ran another task for long: hold off spinning.
  void NoteCpuGivenAway(int64_t now_ns);
  // For tests: forget the cached state (the next High() re-reads).
  void ResetForTest();

 private:
  void Refresh(int64_t now_ns);
  std::atomic<int64_t> next_refresh_ns_{0};
  std::atomic<int64_t> hold_until_ns_{0};
  std::atomic<uint32_t> starved_{0};  // < 2 CPUs online, or a quota below two CPUs
  std::atomic<uint64_t> last_throttled_{UINT64_MAX};
};

// The outcome of one spin.
struct SpinOutcome {
  bool ready = false;          // `ready` returned true
  int64_t spun_ns = 0;         // time spent spinning
  bool gave_cpu_away = false;  // a sched_yield returned after a long time
};

// A sched_yield that returns after this long ran another task on our CPU.
inline constexpr int64_t kLongYieldNs = 20'000;

namespace internal {
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}
inline constexpr int64_t kPureSpinNs = 2'000;
}  // namespace internal

// Calls `ready` until it returns true, `budget_ns` elapses or `deadline`
// passes. The first 2 us busy-wait; after that each block of probes ends with
// sched_yield(), so a peer sharing our CPU runs instead of waiting out the
// budget. With `stop_on_long_yield`, a yield that ran another task for long
// ends the spin (kBalanced: spinning there only delays the peer).
template <typename F>
SpinOutcome Spin(int64_t budget_ns, Deadline deadline, F ready, int probes_per_check,
                 bool stop_on_long_yield) {
  SpinOutcome out;
  if (budget_ns <= 0) {
    out.ready = ready();
    return out;
  }
  const int64_t start = Deadline::NowNs();
  const int64_t stop =
      std::min(start + std::min<int64_t>(budget_ns, int64_t{1} << 62), deadline.ns());
  const int64_t yield_from = start + internal::kPureSpinNs;
  for (;;) {
    for (int i = 0; i < probes_per_check; ++i) {
      if (ready()) {
        out.ready = true;
        out.spun_ns = Deadline::NowNs() - start;
        return out;
      }
      internal::CpuRelax();
    }
    int64_t now = Deadline::NowNs();
    if (now >= stop) {
      out.ready = ready();
      out.spun_ns = now - start;
      return out;
    }
    if (now >= yield_from) {
      sched_yield();
      const int64_t after = Deadline::NowNs();
      if (after - now >= kLongYieldNs) {
        out.gave_cpu_away = true;
        if (stop_on_long_yield) {
          out.ready = ready();
          out.spun_ns = after - start;
          return out;
        }
      }
    }
  }
}

// One endpoint's wait strategy and what it has learned. Used as:
//   budget = waiter.SpinBudgetNs(now); outcome = Spin(budget, ...);
//   waiter.Learn(budget, outcome); ... park if !outcome.ready.
class Waiter {
 public:
  // `max_grown_ns`: the most balanced's learned budget may grow to without
  // a backlog. A producer on a full ring passes WaitOptions::spin: a full
  // ring means the consumer is draining it (the wait is the drain of a
  // ring, tens of microseconds), and a park there stalls the pipeline for a
  // wake-up.
  explicit Waiter(WaitOptions options = WaitOptions(), int64_t max_grown_ns = kMaxGrownSpinNs)
      : options_(options), max_grown_ns_(max_grown_ns) {}
  const WaitOptions& options() const { return options_; }
  // How long to spin before parking in this wait (0: park at once).
  int64_t SpinBudgetNs(int64_t now_ns);
  // Feeds back the spin that ran with `budget_ns` (nothing for budget 0).
  void Learn(int64_t budget_ns, const SpinOutcome& outcome);
  // After a wait: did it end with a backlog (several frames, a good part of
  // the ring)? Then the peer is saturating the lane, the wait was the
  // peer's batch, and balanced may learn a spin up to WaitOptions::spin for
  // the next one; a single frame resets it. One frame per wait is what
  // rare traffic looks like, and it keeps the kMaxGrownSpinNs ceiling.
  void NoteBacklog(bool backlog) { backlog_ = backlog; }
  // Hit ratio of recent spins, 0..kOne (for tests and docs).
  static constexpr uint32_t kOne = 1024;
  uint32_t hit_ratio() const { return hit_; }
  // Waits between probes in the parking regime (kProbeEvery..kMaxProbeEvery).
  uint32_t probe_every() const { return probe_every_; }
  bool stop_on_long_yield() const { return options_.preference == WaitPreference::kBalanced; }

 private:
  WaitOptions options_;
  uint32_t hit_ = kOne;  // optimistic start: a fresh lane spins first
  int64_t max_grown_ns_;
  bool backlog_ = false;
  int64_t won_spin_ns_ = 0;  // mean length of recent winning spins (weight 1/4)
  uint32_t since_probe_ = 0;
  uint32_t probe_every_ = kProbeEvery;
};

}  // namespace shmlane::dataplane
