// shmlane-bench: the load generator. One run, or a suite of runs, of
// transports x patterns x clients x frame sizes; see docs/benchmarks.md and
// `shmlane-bench --help`.
#include "bench/loadgen/flags.h"
#include "bench/loadgen/suite.h"

int main(int argc, char** argv) {
  shmlane::bench::ParseOutcome parsed = shmlane::bench::ParseCommandLine(argc, argv);
  if (!parsed.invocation) return parsed.exit_code;
  return shmlane::bench::RunSuite(parsed.invocation->options, parsed.invocation->specs);
}
