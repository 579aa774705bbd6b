// Suites: fixed matrices of runs (quick, full, smoke) and the driver that
// runs a list of specs, prints each, and writes the result set:
// OUT/HOST-DATE.json (method, runs, gate), OUT/HOST-DATE.md (tables with
// shm/baseline ratios) and OUT/HOST-DATE-*.png (gnuplot).
//
// Thread safety: RunSuite forks (see harness.h); one at a time.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/loadgen/spec.h"

namespace shmlane::bench {

struct SuiteOptions {
  std::string name;                        // quick, full, smoke, waiting, or "" for a single run
  RunSpec base;                            // wait, pin, rate, shmlaned, ... for every run
  std::optional<absl::Duration> duration;  // overrides the suite's
  std::optional<absl::Duration> warmup;
  std::optional<double> rate;             // openloop; overrides the suite's
  std::vector<TransportKind> transports;  // restricts the suite; empty: all built in
  std::vector<int> batches;               // replaces the suite's batch settings; empty: its own
  bool wait_given = false;                // base.wait for every run; else DefaultWait()
  bool json = false;                      // one JSON object per run on stdout
  std::string out_dir = "bench/results";
  std::string targets = "bench/targets.json";
  bool gate = false;  // exit status reflects the targets
  bool plots = true;
  bool write_files = true;  // false for a single run without --out
  // Every spec this many times, in interleaved passes (all specs, then all
  // again); the waiting suite's tables and gate use the median per cell.
  int repeat = 1;
};

// The runs of a named suite; InvalidArgument for an unknown name.
absl::StatusOr<std::vector<RunSpec>> SuiteSpecs(const SuiteOptions& options);

// Runs `specs`, reports, writes the result set. Returns the process exit
// status: 0, or 1 when a run failed or (with gate) a target failed or is missing.
int RunSuite(const SuiteOptions& options, const std::vector<RunSpec>& specs);

}  // namespace shmlane::bench
