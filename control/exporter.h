// Exporter: a prometheus::Collectable that turns lane counters (read from
// shared memory at scrape time via the Registry) and the daemon's own
// counters into metric families. Served by a prometheus::Exposer (pull).
//
// Metric names and labels are listed in docs/operations.md. Labels are
// bounded: channel (at most kMaxChannels), direction, result, method/code,
// and lane only with per-lane metrics on.
//
// Thread safety: Collect() may run on any thread, concurrently.
#pragma once

#include <vector>

#include "control/daemon_metrics.h"
#include "control/registry.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace shmlane::control {

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
