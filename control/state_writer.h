// StateWriter: writes the daemon's state file with group commit. Every
// change (CreateChannel, AddGrant, SetQuota, ...) is applied to the Registry
// first and then asks for a write; requests that arrive while a write is in
// flight are served together by the next one, so N concurrent changes cost
// about two writes (temp file, fsync, rename, fsync dir) instead of N. Each
// requester is told only after a write that began after its request, hence
// one that contains its change, is durable (or failed).
//
// The state is read by `snapshot` on the writer thread at the start of each
// write, never earlier, which is what makes one write cover every change
// made before it started.
//
// Thread safety: Persist and PersistAndWait from any thread except the
// writer's own (a `done` callback must not call them). `done` callbacks run
// on the writer thread, one batch at a time, in request order. mu_ guards
// the queue and is never held during a write or a callback (a leaf lock).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace shmlane::control {

class StateWriter {
 public:
  // Serializes the current state (called on the writer thread).
  using SnapshotFn = std::function<absl::StatusOr<std::string>()>;
  // Told the outcome of the write that covers a change.
  using DoneFn = std::function<void(absl::Status)>;

  // Makes one write durable (WriteFileAtomically of the state file).
  using WriteFn = std::function<absl::Status(const std::string& bytes)>;

  // Starts the writer thread; every write goes through `write`.
  StateWriter(WriteFn write, SnapshotFn snapshot);
  // The same, replacing the file `path` atomically (its directory opened by
  // path at each write).
  StateWriter(std::string path, SnapshotFn snapshot);
  // Serves what is queued, then stops the thread.
  ~StateWriter();
  StateWriter(const StateWriter&) = delete;
  StateWriter& operator=(const StateWriter&) = delete;

  // Asks for a write covering every change made before this call; `done`
  // runs once it is durable (OK) or failed (the write's error).
  void Persist(DoneFn done) ABSL_LOCKS_EXCLUDED(mu_);
  // The same, waiting for the outcome.
  absl::Status PersistAndWait() ABSL_LOCKS_EXCLUDED(mu_);

  // Writes done and requests served so far (requests / writes is the batch
  // size achieved).
  uint64_t writes() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t requests() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WriteFn write_;
  const SnapshotFn snapshot_;
  mutable absl::Mutex mu_;
  std::vector<DoneFn> queued_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace shmlane::control
