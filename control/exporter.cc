#include "control/exporter.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"
#include "shmlane/version.h"

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

ClientMetric Histogram(std::vector<ClientMetric::Label> labels, const DurationHistogram& h) {
  ClientMetric m;
  m.label = std::move(labels);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kDurationBuckets; ++i) {
    cumulative += h.buckets[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    b.upper_bound = i < std::size(kDurationBucketsSeconds)
                        ? kDurationBucketsSeconds[i]
                        : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  m.histogram.sample_count = h.count;
  m.histogram.sample_sum = h.sum_seconds;
  return m;
}

std::string ReadSmall(const char* path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

ProcessStats ReadProcessStats() {
  ProcessStats out;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  // /proc/self/stat: "pid (comm) state ppid ..."; comm may hold spaces and
  // parentheses, so the fields start after the last ')'. Field numbers as in
  // proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24.
  const std::string stat = ReadSmall("/proc/self/stat");
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos && ticks > 0) {
    std::vector<absl::string_view> f =
        absl::StrSplit(absl::string_view(stat).substr(paren + 1), ' ', absl::SkipEmpty());
    // f[0] is field 3 (state).
    auto field = [&](size_t n, double* v) {
      return n - 3 < f.size() && absl::SimpleAtod(f[n - 3], v);
    };
    double utime, stime, start, vsize, rss;
    if (field(14, &utime) && field(15, &stime)) out.cpu_seconds = (utime + stime) / ticks;
    if (field(23, &vsize)) out.virtual_bytes = vsize;
    if (field(24, &rss)) out.resident_bytes = rss * page;
    if (field(22, &start)) {
      for (absl::string_view line : absl::StrSplit(ReadSmall("/proc/stat"), '\n')) {
        double btime;
        if (absl::ConsumePrefix(&line, "btime ") && absl::SimpleAtod(line, &btime)) {
          out.start_time_seconds = btime + start / ticks;
        }
      }
    }
  }
  if (DIR* d = ::opendir("/proc/self/fd")) {
    double n = 0;
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    out.open_fds = n - 1;  // not the one opendir holds
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.max_fds = lim.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                                : static_cast<double>(lim.rlim_cur);
  }
  return out;
}

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
  // What waiting costs, by side (producer: on a full ring; consumer: on an
  // empty one). The channel's wait preference decides the mix.
  MetricFamily spin_seconds = Family(
      "shmlane_wait_spin_seconds_total",
      "Time blocked calls spent spinning before parking (CPU burnt waiting).", MetricType::Counter);
  MetricFamily spins =
      Family("shmlane_wait_spins_total", "Waits that spun before parking.", MetricType::Counter);
  MetricFamily parks = Family("shmlane_wait_parks_total",
                              "Waits that parked on the eventfd doorbell.", MetricType::Counter);
  MetricFamily wakeups_received =
      Family("shmlane_wait_wakeups_total", "Returns from a park that found the doorbell rung.",
             MetricType::Counter);
  MetricFamily latency =
      Family("shmlane_latency_seconds",
             "Sampled delay from a frame's send to its consumer seeing it.", MetricType::Histogram);
  MetricFamily attached = Family("shmlane_attached_clients",
                                 "Processes attached to the channel (producers, consumer, clients, "
                                 "server).",
                                 MetricType::Gauge);
  MetricFamily broken =
      Family("shmlane_broken_lanes_total",
             "Lanes found corrupt (a side saw an invalid index or frame header in shared memory).",
             MetricType::Counter);
  MetricFamily lanes = Family("shmlane_lanes",
                              "Lanes of the channel: live, or draining (writer gone, the reader "
                              "still consuming what it left).",
                              MetricType::Gauge);
  // BROADCAST channels (from their first attachment on). Channel series
  // have no `subscriber` label; per-subscriber series (--per-lane-metrics)
  // carry subscriber="<attachment id>".
  MetricFamily bc_subscribers =
      Family("shmlane_broadcast_subscribers", "Subscribers attached to the BROADCAST channel.",
             MetricType::Gauge);
  MetricFamily bc_lag = Family("shmlane_broadcast_lag_bytes",
                               "Bytes published that a subscriber has not read yet (the slowest "
                               "one for the channel), at most the ring's size.",
                               MetricType::Gauge);
  MetricFamily bc_lapped =
      Family("shmlane_broadcast_lapped_frames_total",
             "Frames subscribers missed: overwritten by the publisher before they read them "
             "(drop-oldest policy); departed subscribers included.",
             MetricType::Counter);
  MetricFamily bc_laps = Family("shmlane_broadcast_laps_total",
                                "Times a subscriber was lapped (each may have missed many frames).",
                                MetricType::Counter);
  MetricFamily bc_detached = Family(
      "shmlane_broadcast_detached_subscribers_total",
      "Subscribers the publisher detached for lag (disconnect policy).", MetricType::Counter);
  MetricFamily bc_sub_frames =
      Family("shmlane_broadcast_subscriber_frames_total",
             "Frames one subscriber read intact (--per-lane-metrics).", MetricType::Counter);
  MetricFamily channels = Family("shmlane_channels", "Channels defined.", MetricType::Gauge);
  channels.metric.push_back(
      Metric({}, MetricType::Gauge, static_cast<double>(snap.channels.size())));

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
    for (int side = 0; side < 2; ++side) {
      const auto l = with("side", side == 0 ? "producer" : "consumer");
      spin_seconds.metric.push_back(
          Metric(l, MetricType::Counter, static_cast<double>(t.spin_ns[side]) / 1e9));
      spins.metric.push_back(
          Metric(l, MetricType::Counter, static_cast<double>(t.spin_waits[side])));
      parks.metric.push_back(Metric(l, MetricType::Counter, static_cast<double>(t.parks[side])));
      wakeups_received.metric.push_back(
          Metric(l, MetricType::Counter, static_cast<double>(t.wakeups_received[side])));
    }
    broken.metric.push_back(
        Metric(labels, MetricType::Counter, static_cast<double>(t.broken_lanes)));
    latency.metric.push_back(Histogram(labels, t));
  };

  for (const MetricsSnapshot::Channel& c : snap.channels) {
    add_lane_series({{"channel", c.name}}, c.totals, c.occupancy_bytes, c.capacity_bytes);
    attached.metric.push_back(
        Metric({{"channel", c.name}}, MetricType::Gauge, static_cast<double>(c.attached_clients)));
    lanes.metric.push_back(Metric({{"channel", c.name}, {"state", "live"}}, MetricType::Gauge,
                                  static_cast<double>(c.live_lanes)));
    lanes.metric.push_back(Metric({{"channel", c.name}, {"state", "draining"}}, MetricType::Gauge,
                                  static_cast<double>(c.draining_lanes)));
    for (const MetricsSnapshot::Lane& l : c.lanes) {
      add_lane_series({{"channel", c.name}, {"lane", absl::StrCat(l.lane_id)}}, l.counters,
                      l.occupancy_bytes, l.capacity_bytes);
    }
    if (!c.broadcast) continue;
    const std::vector<ClientMetric::Label> channel_label = {{"channel", c.name}};
    bc_subscribers.metric.push_back(
        Metric(channel_label, MetricType::Gauge, static_cast<double>(c.subscribers)));
    bc_lag.metric.push_back(
        Metric(channel_label, MetricType::Gauge, static_cast<double>(c.max_lag_bytes)));
    bc_lapped.metric.push_back(Metric(channel_label, MetricType::Counter,
                                      static_cast<double>(c.broadcast_totals.lapped_frames)));
    bc_laps.metric.push_back(
        Metric(channel_label, MetricType::Counter, static_cast<double>(c.broadcast_totals.laps)));
    bc_detached.metric.push_back(
        Metric(channel_label, MetricType::Counter,
               static_cast<double>(c.broadcast_totals.detached_subscribers)));
    for (const MetricsSnapshot::Subscriber& sub : c.subscriber_series) {
      const std::vector<ClientMetric::Label> l = {{"channel", c.name},
                                                  {"subscriber", absl::StrCat(sub.attachment_id)}};
      bc_lag.metric.push_back(Metric(l, MetricType::Gauge, static_cast<double>(sub.lag_bytes)));
      bc_lapped.metric.push_back(
          Metric(l, MetricType::Counter, static_cast<double>(sub.broadcast.lapped_frames)));
      bc_laps.metric.push_back(
          Metric(l, MetricType::Counter, static_cast<double>(sub.broadcast.laps)));
      bc_sub_frames.metric.push_back(
          Metric(l, MetricType::Counter, static_cast<double>(sub.counters.frames_received)));
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

  MetricFamily control_refused =
      Family("shmlane_control_connections_refused_total",
             "control.sock connections closed at accept because their uid held "
             "--max-control-connections-per-uid.",
             MetricType::Counter);
  control_refused.metric.push_back(
      Metric({}, MetricType::Counter, static_cast<double>(daemon.control_connections_refused)));

  MetricFamily handshakes =
      Family("shmlane_attach_handshake_duration_seconds",
             "From accepting an attach connection to the end of handling its AttachRequest "
             "(lanes created, reply sent or queued), by result.",
             MetricType::Histogram);
  for (const auto& [result, h] : daemon.attach_handshakes) {
    handshakes.metric.push_back(Histogram({{"result", result}}, h));
  }
  MetricFamily durations =
      Family("shmlane_control_request_duration_seconds",
             "Unary control and health requests from arrival to status, by method and code.",
             MetricType::Histogram);
  for (const auto& [key, h] : daemon.control_durations) {
    durations.metric.push_back(Histogram({{"method", key.first}, {"code", key.second}}, h));
  }

  MetricFamily build = Family("shmlane_build_info",
                              "Always 1; the version of the running shmlaned.", MetricType::Gauge);
  build.metric.push_back(Metric({{"version", SHMLANE_VERSION}}, MetricType::Gauge, 1));

  // The standard process metrics of Prometheus client libraries.
  const ProcessStats ps = ReadProcessStats();
  std::vector<MetricFamily> process;
  auto add_process = [&](const char* name, const char* help, MetricType type,
                         const std::optional<double>& value) {
    if (!value.has_value()) return;
    MetricFamily f = Family(name, help, type);
    f.metric.push_back(Metric({}, type, *value));
    process.push_back(std::move(f));
  };
  add_process("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
              MetricType::Counter, ps.cpu_seconds);
  add_process("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
              ps.resident_bytes);
  add_process("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
              ps.virtual_bytes);
  add_process("process_start_time_seconds",
              "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
              ps.start_time_seconds);
  add_process("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
              ps.open_fds);
  add_process("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
              ps.max_fds);

  std::vector<MetricFamily> out;
  for (MetricFamily* f :
       {&build,          &channels,     &frames,           &bytes,        &occupancy,
        &capacity,       &backpressure, &dropped,          &wakeups,      &spin_seconds,
        &spins,          &parks,        &wakeups_received, &latency,      &attached,
        &lanes,          &broken,       &bc_subscribers,   &bc_lag,       &bc_lapped,
        &bc_laps,        &bc_detached,  &bc_sub_frames,    &attach_total, &handshakes,
        &requests,       &durations,    &deaths,           &quota,        &overflows,
        &control_refused}) {
    out.push_back(std::move(*f));
  }
  for (MetricFamily& f : process) out.push_back(std::move(f));
  return out;
}

}  // namespace shmlane::control
