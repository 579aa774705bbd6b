// shmlane-bench's command line (CLI11, see bench/cli.h), turned into the
// runs to do: one RunSpec for a single run, or a suite's. A command line
// that parses is fully validated (ranges, names, the spec's own checks).
//
// Thread safety: ParseCommandLine is called once, from main.
#pragma once

#include <optional>
#include <vector>

#include "bench/loadgen/spec.h"
#include "bench/loadgen/suite.h"

namespace shmlane::bench {

struct Invocation {
  SuiteOptions options;
  std::vector<RunSpec> specs;
};

struct ParseOutcome {
  std::optional<Invocation> invocation;  // set when runs are to be done
  int exit_code = 0;                     // otherwise: 0 after --help, else kExitUsage
};

// Parses argv. --help prints the grouped options with their defaults to
// stdout; a usage error prints one line naming the offending argument to
// stderr.
ParseOutcome ParseCommandLine(int argc, const char* const* argv);

}  // namespace shmlane::bench
