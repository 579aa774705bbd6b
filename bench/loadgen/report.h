// Reporting: one run as text (method, results, resources) and as a JSON
// object; a result set as a Markdown table with shm/baseline ratios and as
// gnuplot data plus PNG plots; the ratio gate of bench/targets.json.
//
// Thread safety: functions without shared state; WritePlots runs gnuplot.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
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
// batch, batch_bytes, touch, frames_per_s, mb_per_s, latency_ns {p50, p90,
// p99, p999, max, mean, count} when measured, resources, cpu_s_per_mframe
// {clients, server, daemon}, frames_per_flush, and the method's parameters.
Json RunJson(const RunResult& run);

// Human-readable method, result and resources lines.
void PrintRun(std::FILE* out, const RunResult& run, const MachineInfo& machine);

// Markdown tables for a set of run objects (from RunJson), per receiver
// (touch read, then none) and pattern: one row per frame size, client count
// and batch, with the best kernel baseline over every batch of the set,
// shm/best and (stream) shm/naive ratios, and CPU per million frames; then
// each run's CPU cost. Runs from files without batch/touch read as batch 1,
// touch none.
std::string MarkdownTables(const std::vector<Json>& runs);

// Writes PREFIX-{throughput,latency,cdf,batch-small,batch-large}.dat and
// PREFIX.gp, then runs gnuplot to draw PREFIX-*.png. FailedPrecondition when gnuplot is missing or
// fails.
absl::Status WritePlots(const std::string& prefix, const std::vector<Json>& runs);

// Fanout (report_fanout.cc). The run's "fanout" object: subscribers,
// deliveries_per_s, per_subscriber_frames_per_s, min_subscriber_frames_per_s,
// published_frames_per_s, the bytes the publisher copied and passed to
// write() per frame, the subscribers' read() bytes per delivery, and CPU per
// million frames published / delivered.
Json FanoutJson(const RunResult& run);
// One run object per fanout cell (touch, frame, subscribers, batch,
// transport, wait) with the medians of repeated runs ("repeats": n,
// "frames_per_s_range": [min, max]); other patterns are left out.
std::vector<Json> FanoutMedians(const std::vector<Json>& runs);
// The fanout table (from run objects; medians of repeats), or "" when the
// set has no fanout runs.
std::string FanoutTables(const std::vector<Json>& runs);
// PREFIX-fanout-{small,large}.dat: deliveries/s against subscribers, one
// block per transport, for frames of `small` and `large` bytes.
void WriteFanoutData(const std::string& prefix, const std::vector<Json>& runs, int small,
                     int large);

// One target of bench/targets.json checked against a result set:
// metric(numerator) / metric(denominator) >= min_ratio among the runs of the
// target's pattern, clients, frame_bytes and touch (default "read"). A side
// is a transport name or "best-kernel" (the best of uds, pipe and tcp); of
// its runs the best over the batch settings in the set is taken (highest
// value, or lowest for latency_* metrics) unless "numerator_batch" /
// "denominator_batch" names one.
struct GateCheck {
  std::string name;
  std::string description;
  bool found = false;  // both runs were in the set
  bool passed = false;
  std::string numerator_run;  // which runs were compared ("shm b64", "uds b256")
  std::string denominator_run;
  double ratio = 0;
  double min_ratio = 0;
};

// Checks every target (or only those with "smoke": true) against run
// objects (from RunJson, or the "runs" of a result file). InvalidArgument
// when the targets file is malformed.
//
// `suite` selects: "smoke" checks only smoke targets; a target with a
// "suite" key is checked only in that suite, and the "waiting" and "fanout"
// suites check only theirs. Optional selectors: "rate", "cpu_limit" (0: none) and
// "numerator_wait" / "denominator_wait". Metrics whose name starts with
// latency or contains cpu are lower-is-better (pick the lowest).
absl::StatusOr<std::vector<GateCheck>> EvaluateTargets(const Json& targets,
                                                       const std::vector<Json>& runs,
                                                       std::string_view suite);
// (A string literal must not pick the bool overload below.)
inline absl::StatusOr<std::vector<GateCheck>> EvaluateTargets(const Json& targets,
                                                              const std::vector<Json>& runs,
                                                              const char* suite) {
  return EvaluateTargets(targets, runs, std::string_view(suite));
}
inline absl::StatusOr<std::vector<GateCheck>> EvaluateTargets(const Json& targets,
                                                              const std::vector<Json>& runs,
                                                              bool smoke_only) {
  return EvaluateTargets(targets, runs, std::string_view(smoke_only ? "smoke" : ""));
}

// [1, 5, 15] minute load averages from /proc/loadavg.
Json LoadAverage();

// "shm balanced", "shm latency", "shm efficiency", "uds park", ...: the
// transport and its wait (for shm, the channel's wait preference).
std::string VariantOf(const Json& run);

// One run object per cell (transport, wait, pattern, clients, rate,
// cpu_limit, batch) of repeated runs: the first run's fields, with the
// medians of frames_per_s, latency_ns.{p50,p99}, server_cpu_s_per_mframe and
// throttle.share over the repeats, "repeats": n and "*_range": [min, max].
std::vector<Json> MedianRuns(const std::vector<Json>& runs);

// The waiting suite's tables (from MedianRuns): per CPU limit and pattern,
// one row per rate and client count, per variant p50 / p99 latency and
// server CPU seconds per million frames, and the throttled share of periods.
std::string WaitingTables(const std::vector<Json>& runs);

// PREFIX-waiting.dat, PREFIX-waiting.gp and PREFIX-waiting.png: p99 latency
// and server CPU per frame against the open-loop rate, one line per
// variant, one column per CPU limit (1 client).
absl::Status WriteWaitingPlots(const std::string& prefix, const std::vector<Json>& runs);
Json GateJson(const std::vector<GateCheck>& checks);
void PrintGate(std::FILE* out, const std::vector<GateCheck>& checks);

}  // namespace shmlane::bench
