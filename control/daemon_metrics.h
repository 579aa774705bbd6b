// DaemonMetrics: the daemon's own counters (attach results, control requests,
// peer deaths, quota rejections), read by the Prometheus exporter.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace shmlane::control {

class DaemonMetrics {
 public:
  // `result` is a bounded label value: "ok" or a lower-case status code name.
  void CountAttach(const std::string& result);
  // `method` is a bounded RPC name, `code` a canonical code name.
  void CountControlRequest(const std::string& method, const std::string& code);
  void CountPeerDeath();
  void CountQuotaRejection();
  // An attach connection whose outbound queue overflowed (peer disconnected).
  void CountAttachSendOverflow();

  struct Snapshot {
    std::map<std::string, uint64_t> attach_results;
    std::map<std::pair<std::string, std::string>, uint64_t> control_requests;
    uint64_t peer_deaths = 0;
    uint64_t quota_rejections = 0;
    uint64_t attach_send_overflows = 0;
  };
  Snapshot Read() const;

 private:
  mutable absl::Mutex mu_;
  Snapshot counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmlane::control
