// DaemonMetrics: the daemon's own counters and duration histograms (attach
// results and handshake durations, control requests and their durations,
// peer deaths, quota rejections, attach send overflows), read by the
// Prometheus exporter at scrape time. Lane counters are not here: they live
// in shared memory and are read through the Registry.
//
// Every label value is bounded: attach results are "ok" or a status code
// name, control methods are the RPC names of the shmlane.v1 services (and
// the gRPC health methods), anything else is "other".
//
// Thread safety: every method may be called from any thread; mu_ is a leaf
// lock (taken after Registry::mu_ and OutboundQueues::mu_, never before).
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace shmlane::control {

// Upper bounds (seconds) of the duration histograms' buckets; +Inf follows.
inline constexpr double kDurationBucketsSeconds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                     1,      2.5,     5,      10};
inline constexpr size_t kDurationBuckets = std::size(kDurationBucketsSeconds) + 1;

struct DurationHistogram {
  uint64_t buckets[kDurationBuckets] = {};  // per bucket (not cumulative); last is +Inf
  uint64_t count = 0;
  double sum_seconds = 0;
  void Observe(absl::Duration d);
};

class DaemonMetrics {
 public:
  // `result` is a bounded label value: "ok" or a lower-case status code name.
  void CountAttach(const std::string& result);
  // From an accepted attach connection to the end of its AttachRequest's
  // handling; `result` as for CountAttach.
  void ObserveAttachHandshake(const std::string& result, absl::Duration d);
  // `method` is a bounded RPC name, `code` a canonical code name.
  void CountControlRequest(const std::string& method, const std::string& code);
  // A unary control call from its arrival to its status (RequestTimer).
  void ObserveControlRequest(const std::string& method, const std::string& code, absl::Duration d);
  void CountPeerDeath();
  void CountQuotaRejection();
  // An attach connection whose outbound queue overflowed (peer disconnected).
  void CountAttachSendOverflow();
  // A control.sock connection closed at accept: its uid held its
  // --max-control-connections-per-uid.
  void CountControlConnectionRefused();

  struct Snapshot {
    std::map<std::string, uint64_t> attach_results;
    std::map<std::string, DurationHistogram> attach_handshakes;  // by result
    std::map<std::pair<std::string, std::string>, uint64_t> control_requests;
    std::map<std::pair<std::string, std::string>, DurationHistogram> control_durations;
    uint64_t peer_deaths = 0;
    uint64_t quota_rejections = 0;
    uint64_t attach_send_overflows = 0;
    uint64_t control_connections_refused = 0;
  };
  Snapshot Read() const;

 private:
  mutable absl::Mutex mu_;
  Snapshot counters_ ABSL_GUARDED_BY(mu_);
};

// The bounded `method` label of a gRPC method path ("/shmlane.v1.ChannelService/
// CreateChannel" -> "CreateChannel"; the health service's "Check"/"Watch" ->
// "grpc.health.v1.Health/Check"; anything else -> "other").
std::string ControlMethodLabel(const char* path);

// A gRPC server interceptor factory that times every unary call, from its
// arrival to the status sent, into `metrics` (ObserveControlRequest).
// Register with ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRequestTimer(
    DaemonMetrics* metrics);

}  // namespace shmlane::control
