// ShmLedger: how much lane memory the daemon holds on each uid's behalf,
// for the max_shm_bytes quota. A lane's memory is charged to the uid whose
// attachment created it from creation until the daemon lets go of the last
// thing that keeps it alive: its own mapping (the Lane) and every copy of its
// memfd still waiting in an outbound queue for a peer that does not read.
// Each of those holds a shared ShmCharge; the last one released gives the
// bytes back. So a consumer that never reads cannot pin memory beyond its
// producers' quota.
//
// Thread safety: all methods may be called from any thread; mu_ is a leaf
// lock (taken after Registry::mu_ and OutboundQueues::mu_, calls nothing).
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace shmlane::control {

class ShmLedger;

// One lane's bytes on the ledger; released when destroyed.
class ShmCharge {
 public:
  ShmCharge(ShmLedger* ledger, uint32_t uid, uint64_t bytes);
  ~ShmCharge();
  ShmCharge(const ShmCharge&) = delete;
  ShmCharge& operator=(const ShmCharge&) = delete;
  uint32_t uid() const { return uid_; }
  uint64_t bytes() const { return bytes_; }

 private:
  ShmLedger* const ledger_;
  const uint32_t uid_;
  const uint64_t bytes_;
};

class ShmLedger {
 public:
  // A new charge; the ledger must outlive it.
  std::shared_ptr<const ShmCharge> Charge(uint32_t uid, uint64_t bytes);
  uint64_t HeldBy(uint32_t uid) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class ShmCharge;
  void Add(uint32_t uid, uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void Release(uint32_t uid, uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::map<uint32_t, uint64_t> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmlane::control
