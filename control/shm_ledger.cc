#include "control/shm_ledger.h"

#include <algorithm>

namespace shmlane::control {

ShmCharge::ShmCharge(ShmLedger* ledger, uint32_t uid, uint64_t bytes)
    : ledger_(ledger), uid_(uid), bytes_(bytes) {
  ledger_->Add(uid_, bytes_);
}

ShmCharge::~ShmCharge() { ledger_->Release(uid_, bytes_); }

std::shared_ptr<const ShmCharge> ShmLedger::Charge(uint32_t uid, uint64_t bytes) {
  return std::make_shared<const ShmCharge>(this, uid, bytes);
}

uint64_t ShmLedger::HeldBy(uint32_t uid) const {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(uid);
  return it == held_.end() ? 0 : it->second;
}

void ShmLedger::Add(uint32_t uid, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  held_[uid] += bytes;
}

void ShmLedger::Release(uint32_t uid, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(uid);
  if (it == held_.end()) return;
  it->second -= std::min(it->second, bytes);
  if (it->second == 0) held_.erase(it);
}

}  // namespace shmlane::control
