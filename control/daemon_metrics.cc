#include "control/daemon_metrics.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"

namespace shmlane::control {

void DurationHistogram::Observe(absl::Duration d) {
  const double seconds = std::max(0.0, absl::ToDoubleSeconds(d));
  const double* end = std::end(kDurationBucketsSeconds);
  // The first bucket whose upper bound is >= the value (le semantics).
  const double* at = std::lower_bound(std::begin(kDurationBucketsSeconds), end, seconds);
  ++buckets[at - std::begin(kDurationBucketsSeconds)];
  ++count;
  sum_seconds += seconds;
}

void DaemonMetrics::CountAttach(const std::string& result) {
  absl::MutexLock lock(&mu_);
  ++counters_.attach_results[result];
}

void DaemonMetrics::ObserveAttachHandshake(const std::string& result, absl::Duration d) {
  absl::MutexLock lock(&mu_);
  counters_.attach_handshakes[result].Observe(d);
}

void DaemonMetrics::CountControlRequest(const std::string& method, const std::string& code) {
  absl::MutexLock lock(&mu_);
  ++counters_.control_requests[{method, code}];
}

void DaemonMetrics::ObserveControlRequest(const std::string& method, const std::string& code,
                                          absl::Duration d) {
  absl::MutexLock lock(&mu_);
  counters_.control_durations[{method, code}].Observe(d);
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

void DaemonMetrics::CountControlConnectionRefused() {
  absl::MutexLock lock(&mu_);
  ++counters_.control_connections_refused;
}

DaemonMetrics::Snapshot DaemonMetrics::Read() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

std::string ControlMethodLabel(const char* path) {
  absl::string_view p = path == nullptr ? "" : path;
  if (!absl::ConsumePrefix(&p, "/")) return "other";
  const size_t slash = p.find('/');
  if (slash == absl::string_view::npos) return "other";
  const absl::string_view service = p.substr(0, slash);
  const absl::string_view method = p.substr(slash + 1);
  if (service == "grpc.health.v1.Health" && (method == "Check" || method == "Watch")) {
    return std::string(p);
  }
  if (!absl::StartsWith(service, "shmlane.v1.")) return "other";
  // Only methods that exist: a caller cannot mint label values.
  const google::protobuf::ServiceDescriptor* sd =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(std::string(service));
  if (sd == nullptr || sd->FindMethodByName(std::string(method)) == nullptr) return "other";
  return std::string(method);
}

namespace {

namespace gx = ::grpc::experimental;

class RequestTimer final : public gx::Interceptor {
 public:
  RequestTimer(gx::ServerRpcInfo* info, DaemonMetrics* metrics)
      : metrics_(metrics),
        method_(ControlMethodLabel(info->method())),
        unary_(info->type() == gx::ServerRpcInfo::Type::UNARY),
        start_(absl::Now()) {}

  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (unary_ &&
        methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_STATUS)) {
      // grpc::StatusCode and absl::StatusCode share their numbering.
      const auto code = static_cast<absl::StatusCode>(methods->GetSendStatus().error_code());
      metrics_->ObserveControlRequest(method_, absl::StatusCodeToString(code),
                                      absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  DaemonMetrics* const metrics_;
  const std::string method_;
  const bool unary_;
  const absl::Time start_;
};

class RequestTimerFactory final : public gx::ServerInterceptorFactoryInterface {
 public:
  explicit RequestTimerFactory(DaemonMetrics* metrics) : metrics_(metrics) {}
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    return new RequestTimer(info, metrics_);
  }

 private:
  DaemonMetrics* const metrics_;
};

}  // namespace

std::unique_ptr<gx::ServerInterceptorFactoryInterface> NewRequestTimer(DaemonMetrics* metrics) {
  return std::make_unique<RequestTimerFactory>(metrics);
}

}  // namespace shmlane::control
