// Doorbell: an eventfd one side blocks on and the other side rings.
//
// A doorbell is rung only when its owner has announced that it sleeps (see
// the waiter words in lane_layout.h); a busy pipeline never touches it.
// Ringing is a counter increment and waiting drains the counter.
//
// A ring is a hint, never a fact: whoever holds the fd (a hostile peer
// included) can ring it nonstop or drain it, so a waiter re-checks its ring
// after every wake-up and ends at its deadline whatever the counter says.
// That is also why a consumer should own a doorbell per lane (only that
// lane's producer holds it, see LaneSet) rather than share one among
// producers: a shared one lets any producer swallow the others' rings.
//
// Thread safety: Ring()/Notify() may be called from any thread or process
// holding the fd; Await()/Wait()/Clear() are for the single owner.
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/deadline.h"
#include "dataplane/unique_fd.h"

namespace shmlane::dataplane {

// Why Await() returned.
enum class WakeReason {
  kRung,     // the counter was non-zero (now reset): someone rang, maybe a peer's flood
  kOtherFd,  // `also_fd` became readable
  kTimeout,  // the deadline passed
};

class Doorbell {
 public:
  // A new non-blocking, close-on-exec eventfd.
  static absl::StatusOr<Doorbell> Create();
  // Adopts an eventfd received from elsewhere (for example over SCM_RIGHTS).
  static absl::StatusOr<Doorbell> Adopt(UniqueFd fd);

  // An invalid doorbell (fd -1). Lanes refuse it (Attach: InvalidArgument).
  Doorbell() = default;
  Doorbell(Doorbell&&) noexcept = default;
  Doorbell& operator=(Doorbell&&) noexcept = default;

  // Adds one to the counter, waking the owner if it waits. Never blocks. A
  // saturated counter (EAGAIN) counts as rung; any other failure (a closed or
  // foreign fd) is returned.
  absl::Status Notify() const;
  // Notify() for callers that have nowhere to report a failure.
  void Ring() const { (void)Notify(); }

  // Blocks until the counter is non-zero (and resets it), `also_fd` (if >= 0)
  // is readable, or `deadline` passes. Returns in every case by the deadline
  // (plus scheduling): a signal restarts the wait with the time that is left.
  // Internal error when the fds cannot be waited on (closed: POLLNVAL,
  // error: POLLERR, or ppoll itself failed), FailedPrecondition for an
  // invalid doorbell; the caller must not retry in a loop without a deadline.
  absl::StatusOr<WakeReason> Await(Deadline deadline, int also_fd = -1) const;

  // Await() with an absl::Time (converted once to the monotonic clock).
  // Returns true when rung or when `also_fd` became readable, false on
  // timeout and on error (use Await() to tell them apart).
  bool Wait(absl::Time deadline, int also_fd = -1) const;

  // Resets the counter without blocking. Returns true if it was non-zero.
  bool Clear() const;

  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  absl::StatusOr<UniqueFd> DupFd() const;

 private:
  explicit Doorbell(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

namespace internal {
// ppoll() for POLLIN on up to 32 fds until one is readable or `deadline`.
// Returns the bit set of readable fds (bit i for fds[i]); 0 on timeout. EINTR
// restarts with the time left; POLLNVAL/POLLERR on any fd or a ppoll failure
// is an Internal error naming the fd.
absl::StatusOr<uint32_t> PollReadable(std::span<const int> fds, Deadline deadline);
}  // namespace internal

}  // namespace shmlane::dataplane
