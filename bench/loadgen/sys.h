// System helpers for the load generator: futexes on shared memory, CPU
// pinning, resource usage of this process and of others (/proc), and waiting
// for a time or a file descriptor in a given WaitMode.
//
// Thread safety: every function is safe to call from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "bench/loadgen/spec.h"

namespace shmlane::bench {

// Blocks while *word == expected, at most until `deadline_ns` (CLOCK_MONOTONIC;
// INT64_MAX for no limit). The word lives in memory shared between processes.
void FutexWait(const std::atomic<uint32_t>* word, uint32_t expected, int64_t deadline_ns);
// Wakes every process blocked on *word.
void FutexWakeAll(const std::atomic<uint32_t>* word);

// Pins the calling process to one CPU (modulo the online count).
absl::Status PinToCpu(int cpu);
int OnlineCpus();

// CPU time and context switches of the calling process (all threads).
struct CpuUsage {
  int64_t user_ns = 0;
  int64_t sys_ns = 0;
  int64_t voluntary_switches = 0;
  int64_t involuntary_switches = 0;
};
CpuUsage SelfUsage();
CpuUsage Diff(const CpuUsage& later, const CpuUsage& earlier);

// Bytes the calling process passed to read()/write()-like system calls
// (rchar / wchar of /proc/self/io; zeros when unreadable). Memory copied by
// user code into shared memory does not count.
struct IoBytes {
  uint64_t read = 0;
  uint64_t written = 0;
};
IoBytes SelfIo();

// Another process, read from /proc (zeros when it is gone).
CpuUsage ProcessUsage(pid_t pid);
int64_t ProcessRssKb(pid_t pid);
// Total size of the memfds the process holds open.
int64_t ProcessMemfdBytes(pid_t pid);
// System-wide shared memory (Shmem in /proc/meminfo), in KiB.
int64_t SystemShmemKb();

// The machine: host name, CPU model, online CPUs, kernel.
struct MachineInfo {
  std::string host;
  std::string cpu_model;
  int cpus = 0;
  std::string kernel;
};
MachineInfo GetMachineInfo();

// Waits until CLOCK_MONOTONIC reaches `t_ns`: spinning, sleeping
// (clock_nanosleep) or sleeping until `spin` before it, then spinning.
void WaitUntil(int64_t t_ns, WaitMode mode, int64_t spin_ns);

// Waits for `events` (POLLIN/POLLOUT) on a non-blocking fd after an EAGAIN:
// kSpin returns at once (the caller retries), kPark polls, kAdaptive returns
// at once until `spin_ns` have passed since *spin_started_ns (0: now), then
// polls. Returns an error only when poll fails.
absl::Status WaitFd(int fd, short events, WaitMode mode, int64_t spin_ns, int64_t* spin_started_ns);

// A hint to the CPU that this thread spins (pause / yield).
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Raises RLIMIT_NOFILE's soft limit to the hard limit (512 clients need fds).
void RaiseFdLimit();

}  // namespace shmlane::bench
