// Exporter: a prometheus::Collectable that turns lane counters (read from
// shared memory at scrape time via the Registry), the daemon's own counters
// and histograms (DaemonMetrics) and the daemon process's resource usage
// (/proc/self, read at scrape time) into metric families. Served by a
// prometheus::Exposer (pull). Nothing here runs on the data path.
//
// Metric names, types, labels and units are listed in docs/observability.md.
// Labels are bounded: channel (at most kMaxChannels), direction, state,
// result, method/code, version, and lane only with per-lane metrics on.
//
// Thread safety: Collect() may run on any thread, concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "control/daemon_metrics.h"
#include "control/registry.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace shmlane::control {

// The daemon process's resources, as the standard process_* metrics report
// them. Fields that could not be read are unset.
struct ProcessStats {
  std::optional<double> cpu_seconds;  // user + system
  std::optional<double> resident_bytes;
  std::optional<double> virtual_bytes;
  std::optional<double> start_time_seconds;  // since the Unix epoch
  std::optional<double> open_fds;
  std::optional<double> max_fds;  // soft RLIMIT_NOFILE
};
// Reads /proc/self/stat, /proc/stat (boot time), /proc/self/fd and
// RLIMIT_NOFILE.
ProcessStats ReadProcessStats();

class Exporter final : public prometheus::Collectable {
 public:
  Exporter(const Registry* registry, const DaemonMetrics* metrics, bool per_lane);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Registry* const registry_;
  const DaemonMetrics* const metrics_;
  const bool per_lane_;
};

}  // namespace shmlane::control
