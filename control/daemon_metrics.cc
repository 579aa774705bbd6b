#include "control/daemon_metrics.h"

namespace shmlane::control {

void DaemonMetrics::CountAttach(const std::string& result) {
  absl::MutexLock lock(&mu_);
  ++counters_.attach_results[result];
}

void DaemonMetrics::CountControlRequest(const std::string& method, const std::string& code) {
  absl::MutexLock lock(&mu_);
  ++counters_.control_requests[{method, code}];
}

void DaemonMetrics::CountPeerDeath() {
  absl::MutexLock lock(&mu_);
  ++counters_.peer_deaths;
}

void DaemonMetrics::CountQuotaRejection() {
  absl::MutexLock lock(&mu_);
  ++counters_.quota_rejections;
}

void DaemonMetrics::CountAttachSendOverflow() {
  absl::MutexLock lock(&mu_);
  ++counters_.attach_send_overflows;
}

DaemonMetrics::Snapshot DaemonMetrics::Read() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace shmlane::control
