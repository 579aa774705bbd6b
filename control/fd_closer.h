// FdCloser: closes file descriptors on a thread of its own. A client may
// send the daemon fds whose close() blocks for as long as the sender likes
// (a TCP socket with SO_LINGER and unsent data, a FUSE file); closing them
// on the attach loop would freeze every other client. Where the kernel has
// SO_PASSRIGHTS (Linux 6.16+) the attach socket refuses fds outright and
// this is only the fallback.
//
// Thread safety: Close() may be called from any thread. mu_ guards the queue.
#pragma once

#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace shmlane::control {

class FdCloser {
 public:
  FdCloser();
  // Closes what is still queued (this may block; at exit that is fine).
  ~FdCloser();
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

  // Takes ownership of `fd` and closes it soon, never on the caller's thread.
  void Close(int fd) ABSL_LOCKS_EXCLUDED(mu_);
  // How many fds wait to be closed (for tests and metrics).
  size_t pending() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop();

  mutable absl::Mutex mu_;
  std::deque<int> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace shmlane::control
