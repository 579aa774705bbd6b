// Doorbell: an eventfd one side blocks on and the other side rings.
//
// A doorbell is rung only when its owner has announced that it sleeps (see
// the waiter flags in lane_layout.h); a busy pipeline never touches it. Many
// lanes may share one doorbell (a LaneSet consumer waits on one eventfd for
// all its lanes), which is why ringing is a counter increment and waiting
// drains the counter.
//
// Thread safety: Ring() may be called from any thread or process holding the
// fd; Wait() is for the single owner.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/unique_fd.h"

namespace shmlane::dataplane {

class Doorbell {
 public:
  // A new non-blocking, close-on-exec eventfd.
  static absl::StatusOr<Doorbell> Create();
  // Adopts an eventfd received from elsewhere (for example over SCM_RIGHTS).
  static absl::StatusOr<Doorbell> Adopt(UniqueFd fd);

  Doorbell() = default;
  Doorbell(Doorbell&&) noexcept = default;
  Doorbell& operator=(Doorbell&&) noexcept = default;

  // Adds one to the counter, waking the owner if it waits. Never blocks.
  void Ring() const;

  // Blocks until the counter is non-zero or `deadline` passes, then resets the
  // counter. Returns true when rung, false on timeout. When `also_fd` >= 0,
  // also returns (true) as soon as that fd is readable, so a caller can park
  // on its doorbell and, say, a control socket at once.
  bool Wait(absl::Time deadline, int also_fd = -1) const;

  // Resets the counter without blocking.
  void Clear() const;

  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  absl::StatusOr<UniqueFd> DupFd() const;

 private:
  explicit Doorbell(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace shmlane::dataplane
