#include "dataplane/wait_strategy.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace shmlane::dataplane {
namespace {

// Small file reads with plain syscalls: no iostreams, no allocation beyond
// the string, and a missing file is simply empty.
std::string ReadSmallFile(const std::string& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0 || out.size() > (64u << 10)) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// The value of `key` in a "key value" per line file (cpu.stat).
uint64_t StatValue(absl::string_view text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, key) || rest.empty() || rest[0] != ' ') continue;
    uint64_t v = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &v)) return v;
  }
  return 0;
}

// Visits `dir` and its parents up to and including `root`.
template <typename F>
void WalkUp(std::string dir, const std::string& root, F visit) {
  while (dir.size() >= root.size()) {
    visit(dir);
    if (dir.size() == root.size()) break;
    const size_t slash = dir.rfind('/');
    if (slash == std::string::npos || slash < root.size()) {
      dir = root;
    } else {
      dir.resize(slash);
    }
  }
}

std::string Join(const std::string& root, absl::string_view path) {
  std::string dir = root;
  absl::string_view p = absl::StripSuffix(path, "/");
  if (!p.empty() && p != "/") {
    if (p[0] != '/') dir += '/';
    dir.append(p.data(), p.size());
  }
  return dir;
}

void Consider(CgroupCpu* out, const std::string& dir, double cpus, uint64_t throttled,
              uint64_t throttled_ns) {
  if (!(cpus > 0)) return;
  out->nr_throttled += throttled;
  out->throttled_ns += throttled_ns;
  if (out->quota_cpus == 0 || cpus < out->quota_cpus) {
    out->quota_cpus = cpus;
    out->limiting_dir = dir;
  }
}

}  // namespace

const char* ToString(WaitPreference p) {
  switch (p) {
    case WaitPreference::kBalanced:
      return "balanced";
    case WaitPreference::kLatency:
      return "latency";
    case WaitPreference::kEfficiency:
      return "efficiency";
  }
  return "unknown";
}

std::optional<WaitPreference> ParseWaitPreference(absl::string_view name) {
  for (WaitPreference p :
       {WaitPreference::kBalanced, WaitPreference::kLatency, WaitPreference::kEfficiency}) {
    if (absl::EqualsIgnoreCase(name, ToString(p))) return p;
  }
  return std::nullopt;
}

CgroupCpu ReadCgroupCpu(absl::string_view proc_self_cgroup, const std::string& fs_root) {
  CgroupCpu out;
  cpu_set_t set;
  CPU_ZERO(&set);
  out.affinity_cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  out.online_cpus = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  std::string v1_path, v2_path;
  bool have_v2 = false;
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {
      v2_path = std::string(f[2]);
      have_v2 = true;
      continue;
    }
    for (absl::string_view c : absl::StrSplit(f[1], ',')) {
      if (c == "cpu") v1_path = std::string(f[2]);
    }
  }
  // cgroup v1: the cpu controller's own hierarchy.
  if (!v1_path.empty() || proc_self_cgroup.find(":cpu") != absl::string_view::npos) {
    for (const char* mount : {"/cpu", "/cpu,cpuacct", "/cpuacct,cpu"}) {
      const std::string root = fs_root + mount;
      if (!Exists(root + "/cpu.cfs_quota_us")) continue;
      WalkUp(Join(root, v1_path), root, [&](const std::string& dir) {
        int64_t quota = -1, period = 0;
        if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadSmallFile(dir + "/cpu.cfs_quota_us")),
                              &quota) ||
            !absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadSmallFile(dir + "/cpu.cfs_period_us")),
                              &period) ||
            quota <= 0 || period <= 0) {
          return;
        }
        const std::string stat = ReadSmallFile(dir + "/cpu.stat");
        Consider(&out, dir, static_cast<double>(quota) / static_cast<double>(period),
                 StatValue(stat, "nr_throttled"), StatValue(stat, "throttled_time"));
      });
      break;
    }
  }
  // cgroup v2: the unified hierarchy (where it has the cpu controller).
  if (have_v2) {
    const std::string& root = fs_root;
    WalkUp(Join(root, v2_path), root, [&](const std::string& dir) {
      const std::string max = ReadSmallFile(dir + "/cpu.max");
      std::vector<absl::string_view> f =
          absl::StrSplit(absl::StripAsciiWhitespace(max), ' ', absl::SkipEmpty());
      int64_t quota = 0, period = 0;
      if (f.size() != 2 || !absl::SimpleAtoi(f[0], &quota) || !absl::SimpleAtoi(f[1], &period) ||
          quota <= 0 || period <= 0) {
        return;  // "max 100000", or no cpu controller here
      }
      const std::string stat = ReadSmallFile(dir + "/cpu.stat");
      Consider(&out, dir, static_cast<double>(quota) / static_cast<double>(period),
               StatValue(stat, "nr_throttled"), StatValue(stat, "throttled_usec") * 1000);
    });
  }
  return out;
}

CgroupCpu ReadOwnCgroupCpu() {
  return ReadCgroupCpu(ReadSmallFile("/proc/self/cgroup"), "/sys/fs/cgroup");
}

CpuPressure& CpuPressure::Get() {
  static CpuPressure* pressure = new CpuPressure();  // never destroyed: used at exit
  return *pressure;
}

bool CpuPressure::High(int64_t now_ns) {
  int64_t next = next_refresh_ns_.load(std::memory_order_relaxed);
  // One waiter refreshes (the CAS winner); the others use the cached answer.
  if (now_ns >= next && next_refresh_ns_.compare_exchange_strong(next, now_ns + kPressureRefreshNs,
                                                                 std::memory_order_relaxed)) {
    Refresh(now_ns);
  }
  return starved_.load(std::memory_order_relaxed) != 0 ||
         now_ns < hold_until_ns_.load(std::memory_order_relaxed);
}

void CpuPressure::NoteCpuGivenAway(int64_t now_ns) {
  const int64_t until = now_ns + kYieldHoldNs;
  int64_t cur = hold_until_ns_.load(std::memory_order_relaxed);
  while (cur < until &&
         !hold_until_ns_.compare_exchange_weak(cur, until, std::memory_order_relaxed)) {
  }
}

void CpuPressure::Refresh(int64_t now_ns) {
  const CgroupCpu c = ReadOwnCgroupCpu();
  // A spinner and the peer it waits for need two CPUs at once; with less
  // (one CPU online, or a quota under two CPUs) the spin competes with the
  // very peer it waits for, or spends quota the peer needs. The affinity
  // mask does not count: a waiter pinned to one CPU may wait for a peer
  // pinned to another (a peer on our own CPU shows as a long sched_yield).
  const bool starved = c.online_cpus < 2 || (c.quota_cpus > 0 && c.quota_cpus < 2.0);
  starved_.store(starved ? 1 : 0, std::memory_order_relaxed);
  const uint64_t last = last_throttled_.exchange(c.nr_throttled, std::memory_order_relaxed);
  if (last != UINT64_MAX && c.nr_throttled > last) {
    const int64_t until = now_ns + kThrottleHoldNs;
    int64_t cur = hold_until_ns_.load(std::memory_order_relaxed);
    while (cur < until &&
           !hold_until_ns_.compare_exchange_weak(cur, until, std::memory_order_relaxed)) {
    }
  }
}

void CpuPressure::ResetForTest() {
  next_refresh_ns_.store(0, std::memory_order_relaxed);
  hold_until_ns_.store(0, std::memory_order_relaxed);
  starved_.store(0, std::memory_order_relaxed);
  last_throttled_.store(UINT64_MAX, std::memory_order_relaxed);
}

int64_t Waiter::SpinBudgetNs(int64_t now_ns) {
  const int64_t cap = absl::ToInt64Nanoseconds(options_.spin);  // saturates for infinite
  if (cap <= 0) return 0;
  switch (options_.preference) {
    case WaitPreference::kEfficiency:
      return 0;
    case WaitPreference::kLatency:
      return cap;
    case WaitPreference::kBalanced:
      break;
  }
  if (CpuPressure::Get().High(now_ns)) return 0;
  // The break-even time, or twice the recent winning spin when spins keep
  // winning near their limit (glibc's adaptive mutex rule): a busy stream
  // whose gaps are a little longer than a park's cost earns a longer spin,
  // rare traffic never does (its spins miss, so nothing raises the mean).
  const int64_t budget =
      std::min({cap, backlog_ ? cap : max_grown_ns_, std::max(kBreakEvenNs, 2 * won_spin_ns_)});
  if (hit_ >= kOne / 2) return budget;
  // Parking regime: one probe spin in probe_every_ waits notices traffic
  // that sped up; it costs at most kBreakEvenNs / probe_every_ per wait.
  if (++since_probe_ >= probe_every_) {
    since_probe_ = 0;
    return budget;
  }
  return 0;
}

void Waiter::Learn(int64_t budget_ns, const SpinOutcome& outcome) {
  if (outcome.gave_cpu_away) CpuPressure::Get().NoteCpuGivenAway(Deadline::NowNs());
  if (budget_ns <= 0) return;
  // An exponentially weighted hit ratio (weight 1/4): three misses in a row
  // from a perfect record switch to parking, three probe hits switch back.
  // A spin in the parking regime was a probe: back off while probes miss.
  if (hit_ < kOne / 2) {
    probe_every_ = outcome.ready ? kProbeEvery : std::min(2 * probe_every_, kMaxProbeEvery);
  }
  if (outcome.ready) {
    won_spin_ns_ += (outcome.spun_ns - won_spin_ns_) / 4;
    hit_ += (kOne - hit_) / 4;
    if (hit_ > kOne - 4) hit_ = kOne;
  } else {
    hit_ -= hit_ / 4;
  }
}

}  // namespace shmlane::dataplane
