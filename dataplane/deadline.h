// Deadline: a point in time on CLOCK_MONOTONIC, the only clock the data path
// reads. An absl::Time deadline from a caller (wall clock) is converted once,
// on entry to the blocking call, so a wall-clock step (NTP, an operator, a VM
// resume) neither stretches nor shortens a wait that has already begun.
//
// Thread safety: a Deadline is a value.
#pragma once

#include <cstdint>
#include <limits>

#include "absl/time/time.h"

namespace shmlane::dataplane {

class Deadline {
 public:
  // CLOCK_MONOTONIC now, in nanoseconds.
  static int64_t NowNs();

  static constexpr Deadline Infinite() { return Deadline(kInfiniteNs); }
  static Deadline After(absl::Duration d);
  // absl::InfiniteFuture() maps to Infinite(), a time in the past to "now".
  static Deadline FromTime(absl::Time t);
  static constexpr Deadline AtNs(int64_t monotonic_ns) { return Deadline(monotonic_ns); }

  bool infinite() const { return ns_ == kInfiniteNs; }
  int64_t ns() const { return ns_; }
  bool Expired() const { return !infinite() && NowNs() >= ns_; }
  // Time left (zero once expired); absl::InfiniteDuration() when infinite.
  absl::Duration Remaining() const;

  friend bool operator<(Deadline a, Deadline b) { return a.ns_ < b.ns_; }

 private:
  static constexpr int64_t kInfiniteNs = std::numeric_limits<int64_t>::max();
  explicit constexpr Deadline(int64_t ns) : ns_(ns) {}
  int64_t ns_;
};

}  // namespace shmlane::dataplane
