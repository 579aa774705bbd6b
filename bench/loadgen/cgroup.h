// CpuLimit: a fresh cgroup with a CFS CPU quota for one benchmark run
// (shmlane-bench --cpu-limit CPUS), so that the server, the clients and the
// daemon of the run share the quota a Kubernetes CPU limit would give them.
//
// Create() makes a child of this process's own cgroup (v1: the `cpu`
// controller's hierarchy, cpu.cfs_quota_us / cpu.cfs_period_us; v2:
// cpu.max, enabling the cpu controller in the parent's subtree_control) and
// moves this process into it, so that everything it forks afterwards runs
// under the quota. The destructor moves the process back and removes the
// cgroup (waiting briefly for exited children to leave it). Stats() reads the
// throttling counters of cpu.stat.
//
// Thread safety: one object per process at a time; call from the bench's
// single thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace shmlane::bench {

struct ThrottleStats {
  uint64_t periods = 0;    // CFS periods with runnable tasks (nr_periods)
  uint64_t throttled = 0;  // periods in which the quota ran out (nr_throttled)
  uint64_t throttled_ns = 0;
};
ThrottleStats operator-(const ThrottleStats& a, const ThrottleStats& b);

class CpuLimit {
 public:
  // The CFS period used: 100 ms, the kernel's and Kubernetes' default.
  static constexpr int64_t kPeriodUs = 100'000;

  // FailedPrecondition with what to do when neither cgroup version lets us
  // create a cgroup with a CPU quota (not root, read-only cgroupfs, no cpu
  // controller).
  static absl::StatusOr<std::unique_ptr<CpuLimit>> Create(double cpus);
  ~CpuLimit();
  CpuLimit(const CpuLimit&) = delete;
  CpuLimit& operator=(const CpuLimit&) = delete;

  absl::StatusOr<ThrottleStats> Stats() const;
  const std::string& dir() const { return dir_; }
  const char* version() const { return v2_ ? "v2" : "v1"; }
  double cpus() const { return cpus_; }

 private:
  CpuLimit(std::string dir, std::string parent, bool v2, double cpus)
      : dir_(std::move(dir)), parent_(std::move(parent)), v2_(v2), cpus_(cpus) {}
  std::string dir_;
  std::string parent_;  // where this process was, and returns to
  bool v2_;
  double cpus_;
};

}  // namespace shmlane::bench
