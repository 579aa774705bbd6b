#include "dataplane/deadline.h"

#include <time.h>

#include <algorithm>

#include "absl/time/clock.h"

namespace shmlane::dataplane {

int64_t Deadline::NowNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

Deadline Deadline::After(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return Infinite();
  const int64_t now = NowNs();
  const int64_t left = std::max<int64_t>(0, absl::ToInt64Nanoseconds(d));  // saturates
  return Deadline(left >= kInfiniteNs - now ? kInfiniteNs - 1 : now + left);
}

Deadline Deadline::FromTime(absl::Time t) {
  if (t == absl::InfiniteFuture()) return Infinite();
  return After(t - absl::Now());
}

absl::Duration Deadline::Remaining() const {
  if (infinite()) return absl::InfiniteDuration();
  return absl::Nanoseconds(std::max<int64_t>(0, ns_ - NowNs()));
}

}  // namespace shmlane::dataplane
