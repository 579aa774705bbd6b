// SpinUntil: the bounded spin that precedes parking (WaitOptions::spin).
//
// The first kPureSpinNs (2 us) of the budget is a pure busy-wait: the peer most likely
// runs on another core and is about to act, and a wake-up costs far more
// (~90 us round trip on 2-vCPU machines). After that each block of probes ends
// with sched_yield(), so a peer that shares our core (more runnable processes
// than cores: 32 producers on 2 vCPUs) gets the CPU instead of waiting for our
// budget to run out. Only waiting sides get here: a busy pipeline never spins.
// Budget and deadline are on CLOCK_MONOTONIC (dataplane/deadline.h), so a
// wall-clock step cannot turn the spin into an endless busy-wait.
//
// Thread safety: stateless.
#pragma once

#include <sched.h>

#include <algorithm>
#include <cstdint>

#include "absl/time/time.h"
#include "dataplane/deadline.h"

namespace shmlane::dataplane::internal {

inline constexpr int64_t kPureSpinNs = 2'000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Calls `ready` until it returns true (returns true) or `spin` elapses or
// `deadline` passes (returns the last answer). The clock is read once every
// `probes_per_check` probes so a probe stays a few nanoseconds.
template <typename F>
bool SpinUntil(absl::Duration spin, Deadline deadline, F ready, int probes_per_check = 64) {
  if (spin <= absl::ZeroDuration()) return ready();
  const int64_t start = Deadline::NowNs();
  const int64_t budget = std::min<int64_t>(absl::ToInt64Nanoseconds(spin), int64_t{1} << 62);
  const int64_t stop = std::min(start + budget, deadline.ns());
  const int64_t yield_from = start + kPureSpinNs;
  for (;;) {
    for (int i = 0; i < probes_per_check; ++i) {
      if (ready()) return true;
      CpuRelax();
    }
    const int64_t now = Deadline::NowNs();
    if (now >= stop) return ready();
    if (now >= yield_from) sched_yield();
  }
}

}  // namespace shmlane::dataplane::internal
