// SpinUntil: the bounded spin that precedes parking (WaitOptions::spin).
//
// The first kPureSpin (2 us) of the budget is a pure busy-wait: the peer most likely
// runs on another core and is about to act, and a wake-up costs far more
// (~90 us round trip on 2-vCPU machines). After that each block of probes ends
// with sched_yield(), so a peer that shares our core (more runnable processes
// than cores: 32 producers on 2 vCPUs) gets the CPU instead of waiting for our
// budget to run out. Only waiting sides get here: a busy pipeline never spins.
//
// Thread safety: stateless.
#pragma once

#include <sched.h>

#include <algorithm>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace shmlane::dataplane::internal {

inline constexpr absl::Duration kPureSpin = absl::Microseconds(2);

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
bool SpinUntil(absl::Duration spin, absl::Time deadline, F ready, int probes_per_check = 64) {
  if (spin <= absl::ZeroDuration()) return ready();
  const absl::Time start = absl::Now();
  const absl::Time stop = std::min(start + spin, deadline);
  const absl::Time yield_from = start + kPureSpin;
  for (;;) {
    for (int i = 0; i < probes_per_check; ++i) {
      if (ready()) return true;
      CpuRelax();
    }
    const absl::Time now = absl::Now();
    if (now >= stop) return ready();
    if (now >= yield_from) sched_yield();
  }
}

}  // namespace shmlane::dataplane::internal
