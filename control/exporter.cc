#include "control/exporter.h"

#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace shmlane::control {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

ClientMetric Metric(std::vector<ClientMetric::Label> labels, MetricType type, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

ClientMetric Histogram(std::vector<ClientMetric::Label> labels, const LaneTotals& t) {
  ClientMetric m;
  m.label = std::move(labels);
  uint64_t cumulative = 0;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    cumulative += t.latency_buckets[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    const uint64_t upper_ns = dataplane::LatencyBucketUpperNs(i);
    b.upper_bound = upper_ns == UINT64_MAX ? std::numeric_limits<double>::infinity()
                                           : static_cast<double>(upper_ns) / 1e9;
    m.histogram.bucket.push_back(b);
  }
  // The +Inf bucket must equal the count; use the bucket sum so that a torn
  // read of the shared counters cannot make them disagree.
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = static_cast<double>(t.latency_sum_ns) / 1e9;
  return m;
}

}  // namespace

Exporter::Exporter(const Registry* registry, const DaemonMetrics* metrics, bool per_lane)
    : registry_(registry), metrics_(metrics), per_lane_(per_lane) {}

std::vector<MetricFamily> Exporter::Collect() const {
  const MetricsSnapshot snap = registry_->SnapshotMetrics(per_lane_);
  const DaemonMetrics::Snapshot daemon = metrics_->Read();

  MetricFamily frames =
      Family("shmlane_frames_total", "Frames written to (sent) or read from (received) lanes.",
             MetricType::Counter);
  MetricFamily bytes = Family("shmlane_bytes_total", "Payload bytes sent or received on lanes.",
                              MetricType::Counter);
  MetricFamily occupancy =
      Family("shmlane_ring_occupancy_bytes", "Bytes written but not yet consumed in live lanes.",
             MetricType::Gauge);
  MetricFamily capacity =
      Family("shmlane_ring_capacity_bytes", "Ring bytes of live lanes.", MetricType::Gauge);
  MetricFamily backpressure = Family("shmlane_backpressure_events_total",
                                     "Writes that found the ring full.", MetricType::Counter);
  MetricFamily dropped =
      Family("shmlane_dropped_frames_total", "Frames dropped on a full ring under the DROP policy.",
             MetricType::Counter);
  MetricFamily wakeups =
      Family("shmlane_wakeups_total", "Doorbell (eventfd) writes by producers and consumers.",
             MetricType::Counter);
  MetricFamily latency =
      Family("shmlane_latency_seconds",
             "Sampled delay from a frame's send to its consumer seeing it.", MetricType::Histogram);
  MetricFamily attached = Family("shmlane_attached_clients",
                                 "Processes attached to the channel (producers, consumer, clients, "
                                 "server).",
                                 MetricType::Gauge);

  auto add_lane_series = [&](std::vector<ClientMetric::Label> labels, const LaneTotals& t,
                             uint64_t occ, uint64_t cap) {
    auto with = [&](const char* name, const char* value) {
      auto l = labels;
      l.push_back({name, value});
      return l;
    };
    frames.metric.push_back(
        Metric(with("direction", "sent"), MetricType::Counter, static_cast<double>(t.frames_sent)));
    frames.metric.push_back(Metric(with("direction", "received"), MetricType::Counter,
                                   static_cast<double>(t.frames_received)));
    bytes.metric.push_back(
        Metric(with("direction", "sent"), MetricType::Counter, static_cast<double>(t.bytes_sent)));
    bytes.metric.push_back(Metric(with("direction", "received"), MetricType::Counter,
                                  static_cast<double>(t.bytes_received)));
    occupancy.metric.push_back(Metric(labels, MetricType::Gauge, static_cast<double>(occ)));
    capacity.metric.push_back(Metric(labels, MetricType::Gauge, static_cast<double>(cap)));
    backpressure.metric.push_back(
        Metric(labels, MetricType::Counter, static_cast<double>(t.backpressure_events)));
    dropped.metric.push_back(
        Metric(labels, MetricType::Counter, static_cast<double>(t.dropped_frames)));
    wakeups.metric.push_back(Metric(labels, MetricType::Counter, static_cast<double>(t.wakeups)));
    latency.metric.push_back(Histogram(labels, t));
  };

  for (const MetricsSnapshot::Channel& c : snap.channels) {
    add_lane_series({{"channel", c.name}}, c.totals, c.occupancy_bytes, c.capacity_bytes);
    attached.metric.push_back(
        Metric({{"channel", c.name}}, MetricType::Gauge, static_cast<double>(c.attached_clients)));
    for (const MetricsSnapshot::Lane& l : c.lanes) {
      add_lane_series({{"channel", c.name}, {"lane", absl::StrCat(l.lane_id)}}, l.counters,
                      l.occupancy_bytes, l.capacity_bytes);
    }
  }

  MetricFamily attach_total =
      Family("shmlane_attach_total", "Attach attempts by result (ok or the error code).",
             MetricType::Counter);
  for (const auto& [result, n] : daemon.attach_results) {
    attach_total.metric.push_back(
        Metric({{"result", result}}, MetricType::Counter, static_cast<double>(n)));
  }
  MetricFamily requests =
      Family("shmlane_control_requests_total", "Control API requests by method and status code.",
             MetricType::Counter);
  for (const auto& [key, n] : daemon.control_requests) {
    requests.metric.push_back(Metric({{"method", key.first}, {"code", key.second}},
                                     MetricType::Counter, static_cast<double>(n)));
  }
  MetricFamily deaths =
      Family("shmlane_peer_deaths_total",
             "Attached processes whose connection hung up without Detach.", MetricType::Counter);
  deaths.metric.push_back(Metric({}, MetricType::Counter, static_cast<double>(daemon.peer_deaths)));
  MetricFamily quota = Family("shmlane_quota_rejections_total",
                              "Attach or create requests refused by a quota.", MetricType::Counter);
  quota.metric.push_back(
      Metric({}, MetricType::Counter, static_cast<double>(daemon.quota_rejections)));

  MetricFamily overflows =
      Family("shmlane_attach_send_overflows_total",
             "Attach connections dropped because they left too many daemon messages unread.",
             MetricType::Counter);
  overflows.metric.push_back(
      Metric({}, MetricType::Counter, static_cast<double>(daemon.attach_send_overflows)));

  std::vector<MetricFamily> out;
  for (MetricFamily* f :
       {&frames, &bytes, &occupancy, &capacity, &backpressure, &dropped, &wakeups, &latency,
        &attached, &attach_total, &requests, &deaths, &quota, &overflows}) {
    out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace shmlane::control
