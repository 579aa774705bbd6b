#include "bench/loadgen/flags.h"

#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "bench/cli.h"
#include "bench/loadgen/harness.h"

namespace shmlane::bench {
namespace {

std::string DefaultShmlaned() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto candidate = self.parent_path().parent_path() / "control" / "shmlaned";
    if (std::filesystem::exists(candidate, ec)) return candidate.string();
  }
  return "shmlaned";
}

template <typename E, size_t N>
std::vector<std::string> Names(const E (&values)[N]) {
  std::vector<std::string> names;
  for (E v : values) names.push_back(ToString(v));
  return names;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "shmlane-bench: %s (--help lists the options)\n", message.c_str());
  return kExitUsage;
}

}  // namespace

ParseOutcome ParseCommandLine(int argc, const char* const* argv) {
  const RunSpec defaults;
  CLI::App app(
      "One run (default) or a suite of runs of a transport and a traffic pattern, with every "
      "client a separate process and one server process; fanout: one publisher process and N "
      "subscriber processes (docs/benchmarks.md).",
      "shmlane-bench");
  ConfigureApp(app);

  std::vector<std::string> transports;
  std::string pattern = ToString(defaults.pattern);
  std::string wait = ToString(defaults.wait);
  std::string touch = ToString(defaults.touch);
  std::string client_timing = ToString(defaults.client_timing);
  double cpu_limit = 0;
  std::vector<int> batches;
  uint64_t batch_bytes = defaults.batch_bytes;
  int clients = defaults.clients;
  uint32_t frame_bytes = defaults.frame_bytes;
  double duration_s = absl::ToDoubleSeconds(defaults.duration);
  double warmup_s = absl::ToDoubleSeconds(defaults.warmup);
  double spin_s = absl::ToDoubleSeconds(defaults.spin);
  double rate = defaults.rate;
  uint64_t ring_bytes = 0;
  bool pin = false;
  std::string shmlaned = DefaultShmlaned();
  SuiteOptions suite;

  const std::string run = "Run";
  app.add_option("--transport", transports,
                 "transport; default uds; with --suite, a comma-separated list restricts the "
                 "suite")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(CLI::IsMember(Names(kAllTransports)))
      ->default_str("uds")
      ->type_name("T[,T...]")
      ->group(run);
  app.add_option("--pattern", pattern, "traffic pattern")
      ->check(CLI::IsMember(Names(kAllPatterns)))
      ->type_name("P")
      ->group(run);
  app.add_option("--clients", clients, "client processes")
      ->check(CLI::Range(1, kMaxClients))
      ->type_name("N")
      ->group(run);
  int subscribers = 0;
  CLI::Option* subscribers_opt =
      app.add_option("--subscribers", subscribers,
                     "fanout: subscriber processes, each receiving every frame of the one "
                     "publisher (default 1; the same as --clients for fanout)")
          ->check(CLI::Range(1, kMaxClients))
          ->type_name("N")
          ->group(run);
  app.add_option("--frame-bytes", frame_bytes,
                 "payload bytes per frame (openloop and fanout: >= 16)")
      ->check(CLI::Range(uint32_t{1}, kMaxFrameBytes))
      ->type_name("B")
      ->group(run);
  CLI::Option* duration_opt =
      app.add_option("--duration", duration_s,
                     "measurement window: seconds or e.g. 500ms, 5s (suites: the suite's)")
          ->transform(Duration())
          ->default_str(absl::FormatDuration(defaults.duration))
          ->type_name("D")
          ->group(run);
  CLI::Option* warmup_opt =
      app.add_option("--warmup", warmup_s, "traffic before the window (suites: the suite's)")
          ->transform(Duration(/*zero_ok=*/true))
          ->default_str(absl::FormatDuration(defaults.warmup))
          ->type_name("D")
          ->group(run);
  CLI::Option* rate_opt =
      app.add_option("--rate", rate, "openloop: frames/s summed over all clients (suites: 20000)")
          ->check(CLI::PositiveNumber)
          ->type_name("R")
          ->group(run);
  CLI::Option* wait_opt =
      app.add_option("--wait", wait,
                     "what an idle side does (default: park, i.e. blocking calls, for the kernel "
                     "transports and gRPC; balanced for shm). For shm these are the channel's "
                     "wait preferences: adaptive = latency (spin up to --spin, then park), park = "
                     "efficiency, balanced = spin only when it pays (shm only)")
          ->check(CLI::IsMember(Names(kAllWaitModes)))
          ->default_str("")
          ->type_name("W")
          ->group(run);
  app.add_option("--batch", batches,
                 "frames a client hands the transport at once (one write / one publish); "
                 "pingpong never batches; with --suite, a comma-separated list replaces the "
                 "suite's")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(CLI::Range(1, kMaxBatch))
      ->default_str("1")
      ->type_name("N[,N...]")
      ->group(run);
  app.add_option("--batch-bytes", batch_bytes,
                 "a batch also ends at this many bytes (a larger frame goes alone)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 30))
      ->type_name("B")
      ->group(run);
  app.add_option("--touch", touch,
                 "read: the server reads every payload byte once (a checksum the sender put in "
                 "the frame; a mismatch fails the run); none: it only counts frames (a ceiling)")
      ->check(CLI::IsMember(Names(kAllTouches)))
      ->type_name("T")
      ->group(run);
  app.add_option("--spin", spin_s, "adaptive: spin this long before parking")
      ->transform(Duration(/*zero_ok=*/true))
      ->default_str(absl::FormatDuration(defaults.spin))
      ->type_name("D")
      ->group(run);
  app.add_option("--client-timing", client_timing,
                 "openloop: how clients wait for each send time; sleep: clock_nanosleep to it "
                 "(the same client cost for every transport); wait: as --wait says (adaptive: "
                 "sleep, then spin --spin before it, as runs before this option did)")
      ->check(CLI::IsMember(Names(kAllClientTimings)))
      ->type_name("T")
      ->group(run);
  app.add_option("--cpu-limit", cpu_limit,
                 "run the server, the clients and the daemon in a fresh cgroup with a CFS quota "
                 "of this many CPUs (v1 cpu.cfs_quota_us or v2 cpu.max; needs root or a "
                 "delegated cgroup); reports throttled periods and time")
      ->check(CLI::Range(0.01, 4096.0))
      ->type_name("CPUS")
      ->group(run);
  app.add_flag("--pin", pin, "pin the server to CPU 0 and client i to CPU i+1 (mod CPUs)")
      ->group(run);
  app.add_option("--ring-bytes", ring_bytes,
                 "shm: ring size of every lane (default: max(256 KiB, 8 frames) rounded up to a "
                 "power of two)")
      ->check(PowerOfTwo())
      ->default_str("")
      ->type_name("N")
      ->group(run);
  app.add_option("--shmlaned", shmlaned,
                 "the daemon for the shm transport (default: ../control/shmlaned beside this "
                 "binary, else shmlaned on PATH)")
      ->type_name("PATH")
      ->group(run);

  const std::string suites = "Suites and result files";
  app.add_option("--suite", suite.name,
                 "quick (~5 min) | full (~30 min) | smoke (the bench-smoke gate, ~30 s) | "
                 "fanout (1, 8, 32 subscribers at 64 B and 64 KiB, every transport; ~2 min) | "
                 "waiting (wait strategies at open-loop rates and ping-pong, each with no CPU "
                 "limit, --cpu-limit 1 and 0.5; ~7 min)")
      ->check(CLI::IsMember({"quick", "full", "smoke", "fanout", "waiting"}))
      ->type_name("S")
      ->group(suites);
  CLI::Option* out_opt =
      app.add_option("--out", suite.out_dir,
                     "where a suite writes HOST-DATE.{json,md,png}; a single run writes files "
                     "only with --out")
          ->type_name("DIR")
          ->group(suites);
  app.add_option("--targets", suite.targets, "ratio targets for the gate")
      ->type_name("FILE")
      ->group(suites);
  app.add_option("--repeat", suite.repeat,
                 "run the suite's runs this many times in interleaved passes (the waiting "
                 "suite's tables and gate take the median of each cell)")
      ->check(CLI::Range(1, 100))
      ->type_name("N")
      ->group(suites);
  app.add_flag("--gate", suite.gate, "exit 1 when a target fails or its runs are missing")
      ->group(suites);
  bool no_plots = false;
  app.add_flag("--no-plots", no_plots, "skip gnuplot")->group(suites);

  app.add_flag("--json", suite.json, "print one JSON object per run on stdout (text to stderr)")
      ->group("Output");

  ParseOutcome outcome;
  if (std::optional<int> exit = Parse(app, argc, argv)) {
    outcome.exit_code = *exit;
    return outcome;
  }

  suite.plots = !no_plots;
  suite.base.pattern = *ParsePattern(pattern);
  if (subscribers_opt->count() > 0) {
    if (suite.base.pattern != Pattern::kFanout && suite.name.empty()) {
      outcome.exit_code = UsageError("--subscribers needs --pattern fanout");
      return outcome;
    }
    clients = subscribers;
  }
  suite.base.wait = *ParseWaitMode(wait);
  suite.wait_given = wait_opt->count() > 0;
  suite.base.touch = *ParseTouch(touch);
  suite.base.client_timing = *ParseClientTiming(client_timing);
  suite.base.cpu_limit = cpu_limit;
  suite.base.batch_bytes = batch_bytes;
  suite.batches = batches;
  suite.base.clients = clients;
  suite.base.frame_bytes = frame_bytes;
  suite.base.spin = absl::Seconds(spin_s);
  suite.base.rate = rate;
  suite.base.pin = pin;
  suite.base.ring_bytes = ring_bytes;
  suite.base.shmlaned = shmlaned;
  if (duration_opt->count() > 0) suite.duration = absl::Seconds(duration_s);
  if (warmup_opt->count() > 0) suite.warmup = absl::Seconds(warmup_s);
  if (rate_opt->count() > 0) suite.rate = rate;
  for (const std::string& t : transports) suite.transports.push_back(*ParseTransport(t));

  Invocation invocation;
  if (suite.name.empty()) {
    if (suite.transports.size() > 1) {
      outcome.exit_code = UsageError("one --transport per single run (or use --suite)");
      return outcome;
    }
    if (suite.batches.size() > 1) {
      outcome.exit_code = UsageError("one --batch per single run (or use --suite)");
      return outcome;
    }
    RunSpec spec = suite.base;
    if (!suite.transports.empty()) spec.transport = suite.transports[0];
    if (!suite.batches.empty()) spec.batch = suite.batches[0];
    if (!suite.wait_given) spec.wait = DefaultWait(spec.transport);
    if (suite.duration) spec.duration = *suite.duration;
    if (suite.warmup) spec.warmup = *suite.warmup;
    if (absl::Status s = ValidateSpec(spec); !s.ok()) {
      outcome.exit_code = UsageError(std::string(s.message()));
      return outcome;
    }
    invocation.specs.push_back(spec);
    suite.write_files = out_opt->count() > 0;
  } else {
    absl::StatusOr<std::vector<RunSpec>> specs = SuiteSpecs(suite);
    if (!specs.ok()) {
      outcome.exit_code = UsageError(std::string(specs.status().message()));
      return outcome;
    }
    invocation.specs = std::move(*specs);
  }
  invocation.options = std::move(suite);
  outcome.invocation = std::move(invocation);
  return outcome;
}

}  // namespace shmlane::bench
