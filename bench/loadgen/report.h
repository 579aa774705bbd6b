// Reporting: one run as text (method, results, resources) and as a JSON
// object; a result set as a Markdown table with shm/baseline ratios and as
// gnuplot data plus PNG plots; the ratio gate of bench/targets.json.
//
// Thread safety: functions without shared state; WritePlots runs gnuplot.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/loadgen/harness.h"
#include "bench/loadgen/sys.h"
#include "bench/result_json.h"

namespace shmlane::bench {

// {host, cpu_model, cpus, kernel}.
Json MachineJson(const MachineInfo& machine);

// The run as one JSON object: transport, pattern, clients, frame_bytes,
// frames_per_s, mb_per_s, latency_ns {p50, p90, p99, p999, max, mean, count}
// when measured, resources, and the method's parameters.
Json RunJson(const RunResult& run);

// Human-readable method, result and resources lines.
void PrintRun(std::FILE* out, const RunResult& run, const MachineInfo& machine);

// Markdown tables for a set of run objects (from RunJson): throughput with
// shm/baseline ratios, latency with baseline/shm ratios.
std::string MarkdownTables(const std::vector<Json>& runs);

// Writes PREFIX-{throughput,latency,cdf}.dat and PREFIX.gp, then runs gnuplot
// to draw PREFIX-*.png. FailedPrecondition when gnuplot is missing or fails.
absl::Status WritePlots(const std::string& prefix, const std::vector<Json>& runs);

// One target of bench/targets.json checked against a result set.
struct GateCheck {
  std::string name;
  std::string description;
  bool found = false;  // both runs were in the set
  bool passed = false;
  double ratio = 0;
  double min_ratio = 0;
};

// Checks every target (or only those with "smoke": true) against run
// objects (from RunJson, or the "runs" of a result file). InvalidArgument
// when the targets file is malformed.
absl::StatusOr<std::vector<GateCheck>> EvaluateTargets(const Json& targets,
                                                       const std::vector<Json>& runs,
                                                       bool smoke_only);
Json GateJson(const std::vector<GateCheck>& checks);
void PrintGate(std::FILE* out, const std::vector<GateCheck>& checks);

}  // namespace shmlane::bench
