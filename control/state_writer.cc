#include "control/state_writer.h"

#include <utility>

#include "absl/synchronization/notification.h"
#include "control/runtime_dir.h"

namespace shmlane::control {

StateWriter::StateWriter(std::string path, SnapshotFn snapshot)
    : StateWriter(
          [path = std::move(path)](const std::string& bytes) -> absl::Status {
            absl::StatusOr<FileInDir> file = LocateFile(-1, "", path);
            if (!file.ok()) return file.status();
            return WriteFileAtomically(*file, bytes);
          },
          std::move(snapshot)) {}

StateWriter::StateWriter(WriteFn write, SnapshotFn snapshot)
    : write_(std::move(write)), snapshot_(std::move(snapshot)) {
  thread_ = std::thread([this] { Loop(); });
}

StateWriter::~StateWriter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void StateWriter::Persist(DoneFn done) {
  absl::MutexLock lock(&mu_);
  queued_.push_back(std::move(done));
}

absl::Status StateWriter::PersistAndWait() {
  absl::Notification written;
  absl::Status result;
  Persist([&](absl::Status s) {
    result = std::move(s);
    written.Notify();
  });
  written.WaitForNotification();
  return result;
}

uint64_t StateWriter::writes() const {
  absl::MutexLock lock(&mu_);
  return writes_;
}

uint64_t StateWriter::requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

bool StateWriter::HasWorkLocked() const { return stopping_ || !queued_.empty(); }

void StateWriter::Loop() {
  for (;;) {
    std::vector<DoneFn> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &StateWriter::HasWorkLocked));
      if (queued_.empty()) return;  // stopping, and nothing left to serve
      batch.swap(queued_);
    }
    // Every change in `batch` was applied before its request was queued,
    // hence before this snapshot: one write covers them all.
    absl::StatusOr<std::string> bytes = snapshot_();
    const absl::Status status = bytes.ok() ? write_(*bytes) : bytes.status();
    {
      absl::MutexLock lock(&mu_);
      ++writes_;
      requests_ += batch.size();
    }
    for (DoneFn& done : batch) done(status);
  }
}

}  // namespace shmlane::control
