#include "control/fd_closer.h"

#include <unistd.h>

namespace shmlane::control {

FdCloser::FdCloser() : thread_([this] { Loop(); }) {}

FdCloser::~FdCloser() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void FdCloser::Close(int fd) {
  if (fd < 0) return;
  absl::MutexLock lock(&mu_);
  queue_.push_back(fd);
}

size_t FdCloser::pending() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void FdCloser::Loop() {
  while (true) {
    int fd = -1;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](FdCloser* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping, nothing left
      fd = queue_.front();
      queue_.pop_front();
    }
    ::close(fd);  // may block: that is why it is here
  }
}

}  // namespace shmlane::control
