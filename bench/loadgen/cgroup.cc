#include "bench/loadgen/cgroup.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace shmlane::bench {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `text` to a cgroup file; the error names the file and errno.
absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (out) out << text << std::flush;
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write '", text, "' to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// This process's path in the hierarchy of `controller` ("" = v2's "0::").
std::string OwnPath(const std::string& controller) {
  for (absl::string_view line : absl::StrSplit(ReadFile("/proc/self/cgroup"), '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (controller.empty()) {
      if (f[0] == "0" && f[1].empty()) return std::string(absl::StripSuffix(f[2], "/"));
      continue;
    }
    for (absl::string_view c : absl::StrSplit(f[1], ',')) {
      if (c == controller) return std::string(absl::StripSuffix(f[2], "/"));
    }
  }
  return "";
}

uint64_t StatValue(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t v = 0;
    if (f.size() == 2 && f[0] == key && absl::SimpleAtoi(f[1], &v)) return v;
  }
  return 0;
}

std::string FreshName() {
  static int counter = 0;
  return absl::StrCat("shmlane-bench-", getpid(), "-", counter++);
}

}  // namespace

ThrottleStats operator-(const ThrottleStats& a, const ThrottleStats& b) {
  return {a.periods - b.periods, a.throttled - b.throttled, a.throttled_ns - b.throttled_ns};
}

absl::StatusOr<std::unique_ptr<CpuLimit>> CpuLimit::Create(double cpus) {
  if (!(cpus > 0) || cpus > 4096) {
    return absl::InvalidArgumentError("--cpu-limit must be a number of CPUs in (0, 4096]");
  }
  const int64_t quota_us = std::max<int64_t>(1000, std::llround(cpus * kPeriodUs));
  std::string v1_error, v2_error;
  // cgroup v1: the cpu controller's own mount.
  for (const char* mount : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
    if (::access(absl::StrCat(mount, "/cpu.cfs_quota_us").c_str(), F_OK) != 0) continue;
    const std::string parent = absl::StrCat(mount, OwnPath("cpu"));
    const std::string dir = absl::StrCat(parent, "/", FreshName());
    if (::mkdir(dir.c_str(), 0755) != 0) {
      v1_error = absl::StrCat("mkdir ", dir, ": ", std::strerror(errno));
      break;
    }
    absl::Status s = WriteFile(dir + "/cpu.cfs_period_us", absl::StrCat(kPeriodUs));
    if (s.ok()) s = WriteFile(dir + "/cpu.cfs_quota_us", absl::StrCat(quota_us));
    if (s.ok()) s = WriteFile(dir + "/cgroup.procs", absl::StrCat(getpid()));
    if (!s.ok()) {
      ::rmdir(dir.c_str());
      v1_error = std::string(s.message());
      break;
    }
    return std::unique_ptr<CpuLimit>(new CpuLimit(dir, parent, /*v2=*/false, cpus));
  }
  if (v1_error.empty()) v1_error = "no v1 cpu controller mounted at /sys/fs/cgroup/cpu";
  // cgroup v2: the unified hierarchy with the cpu controller.
  if (::access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
    const std::string parent = absl::StrCat("/sys/fs/cgroup", OwnPath(""));
    const std::string dir = absl::StrCat(parent, "/", FreshName());
    // The cpu controller must be enabled for the parent's children.
    (void)WriteFile(parent + "/cgroup.subtree_control", "+cpu");
    if (::mkdir(dir.c_str(), 0755) != 0) {
      v2_error = absl::StrCat("mkdir ", dir, ": ", std::strerror(errno));
    } else {
      absl::Status s =
          ::access((dir + "/cpu.max").c_str(), F_OK) == 0
              ? WriteFile(dir + "/cpu.max", absl::StrCat(quota_us, " ", kPeriodUs))
              : absl::FailedPreconditionError(absl::StrCat(
                    dir, " has no cpu.max: the cpu controller is not enabled in ", parent,
                    "/cgroup.subtree_control (a v2 cgroup with processes cannot enable it)"));
      if (s.ok()) s = WriteFile(dir + "/cgroup.procs", absl::StrCat(getpid()));
      if (s.ok()) return std::unique_ptr<CpuLimit>(new CpuLimit(dir, parent, /*v2=*/true, cpus));
      ::rmdir(dir.c_str());
      v2_error = std::string(s.message());
    }
  } else {
    v2_error = "no unified hierarchy at /sys/fs/cgroup";
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "--cpu-limit needs a cgroup with a CPU quota it can create, and neither cgroup version "
      "allowed one: v1 (cpu.cfs_quota_us): ",
      v1_error, "; v2 (cpu.max): ", v2_error,
      ". Run as root, or in a cgroup delegated to this user."));
}

CpuLimit::~CpuLimit() {
  (void)WriteFile(parent_ + "/cgroup.procs", absl::StrCat(getpid()));
  // Children that exited a moment ago may still be leaving the cgroup.
  for (int i = 0; i < 200 && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i) usleep(10'000);
}

absl::StatusOr<ThrottleStats> CpuLimit::Stats() const {
  const std::string stat = ReadFile(dir_ + "/cpu.stat");
  if (stat.empty()) return absl::UnavailableError(absl::StrCat("cannot read ", dir_, "/cpu.stat"));
  ThrottleStats s;
  s.periods = StatValue(stat, "nr_periods");
  s.throttled = StatValue(stat, "nr_throttled");
  s.throttled_ns =
      v2_ ? StatValue(stat, "throttled_usec") * 1000 : StatValue(stat, "throttled_time");
  return s;
}

}  // namespace shmlane::bench
