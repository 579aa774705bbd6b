#include "bench/loadgen/suite.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/loadgen/harness.h"
#include "bench/loadgen/report.h"
#include "bench/loadgen/transport.h"

namespace shmlane::bench {
namespace {

bool Built(TransportKind t) { return MakeTransport(t).ok(); }

std::string UtcStamp(const char* format) {
  const time_t now = time(nullptr);
  tm utc;
  gmtime_r(&now, &utc);
  char buf[64];
  strftime(buf, sizeof(buf), format, &utc);
  return buf;
}

// The waiting suite: how each wait strategy pays at open-loop rates from
// rare (1k frames/s: 1 ms apart) to busy (200k/s: 5 us apart), with 1 and 8
// clients, and in ping-pong, each with no CPU limit and with a 1- and a
// half-CPU CFS quota; shm in each preference against uds with blocking
// calls (what socket programs do) and adaptive. Openloop clients sleep to
// their send times (equal client cost). Plus 64-byte streaming at 1 and 32
// producers, balanced against latency (the saturation target). Cells are
// adjacent so every comparison is between runs minutes apart at most.
absl::StatusOr<std::vector<RunSpec>> WaitingSpecs(const SuiteOptions& options) {
  struct Variant {
    TransportKind transport;
    WaitMode wait;
  };
  const Variant variants[] = {{TransportKind::kShm, WaitMode::kBalanced},
                              {TransportKind::kShm, WaitMode::kAdaptive},
                              {TransportKind::kShm, WaitMode::kPark},
                              {TransportKind::kUds, WaitMode::kPark},
                              {TransportKind::kUds, WaitMode::kAdaptive}};
  const absl::Duration duration = options.duration.value_or(absl::Seconds(2));
  const absl::Duration warmup = options.warmup.value_or(absl::Milliseconds(500));
  std::vector<RunSpec> specs;
  auto add = [&](const Variant& v, Pattern p, int clients, double rate, double limit, int batch) {
    if (!options.transports.empty() &&
        std::find(options.transports.begin(), options.transports.end(), v.transport) ==
            options.transports.end()) {
      return;
    }
    RunSpec s = options.base;
    s.transport = v.transport;
    s.wait = v.wait;
    s.pattern = p;
    s.clients = clients;
    s.frame_bytes = 64;
    s.batch = batch;
    s.duration = duration;
    s.warmup = warmup;
    s.rate = rate;
    s.cpu_limit = limit;
    s.client_timing = ClientTiming::kSleep;
    // Ping-pong pinned (as the smoke suite): two spinning peers sharing a
    // CPU measure the scheduler, not the transport.
    s.pin = p == Pattern::kPingPong;
    specs.push_back(s);
  };
  for (double limit : {0.0, 1.0, 0.5}) {
    for (double rate : {1000.0, 20000.0, 200000.0}) {
      for (int clients : {1, 8}) {
        for (const Variant& v : variants) add(v, Pattern::kOpenLoop, clients, rate, limit, 1);
      }
    }
    for (const Variant& v : variants) add(v, Pattern::kPingPong, 1, 0, limit, 1);
  }
  for (int clients : {1, 32}) {
    for (const Variant& v : {variants[0], variants[1]}) {
      add(v, Pattern::kStream, clients, 0, 0, 1);
    }
  }
  return specs;
}

}  // namespace

absl::StatusOr<std::vector<RunSpec>> SuiteSpecs(const SuiteOptions& options) {
  struct Axis {
    std::vector<Pattern> patterns;
    std::vector<int> clients;
    std::vector<uint32_t> frames;
    std::vector<TransportKind> transports;
    std::vector<int> batches;  // pingpong: always {1}
    std::optional<bool> pin;   // unset: the command line's --pin
    // Unset: the suite's. Fanout's runs are bounded to a short window: 32
    // subscribers on a small machine are heavily oversubscribed, and a
    // window longer than a second measures the same thing.
    std::optional<absl::Duration> duration = std::nullopt;
    std::optional<absl::Duration> warmup = std::nullopt;
  };
  // Fanout: 1, 8 and 32 subscribers at 64 B and 64 KiB, every transport,
  // batched 64 frames per write / publish (flushing write for grpc).
  const Axis fanout_axis = {
      {Pattern::kFanout},
      {1, 8, 32},
      {64, 65536},
      std::vector<TransportKind>(std::begin(kAllTransports), std::end(kAllTransports)),
      {64},
      false,
      absl::Seconds(1),
      absl::Milliseconds(250)};
  const std::vector<TransportKind> all(std::begin(kAllTransports), std::end(kAllTransports));
  const std::vector<TransportKind> shm_uds = {TransportKind::kShm, TransportKind::kUds};
  std::vector<Axis> axes;
  absl::Duration duration, warmup;
  // Openloop's total rate: one that every transport sustains with one client
  // on a small machine, so that latency rather than backlog is measured.
  double rate = 20000;
  bool pin = options.base.pin;
  if (options.name == "quick") {
    // ~5 minutes: 64-byte streaming across client counts (the gate's runs)
    // and 64 KiB at 1 and 32 clients, each unbatched and 64 per batch; the
    // batch curve (8, 256) of shm and uds at 1 client; latency at 1 and 8
    // clients, unbatched (ping-pong cannot batch; openloop on schedule
    // flushes every frame anyway); fanout at 1, 8 and 32 subscribers (1 s
    // windows).
    duration = absl::Seconds(2);
    warmup = absl::Milliseconds(500);
    axes = {{{Pattern::kStream}, {1, 8, 32}, {64}, all, {1, 64}, {}},
            {{Pattern::kStream}, {1, 32}, {65536}, all, {1, 64}, {}},
            {{Pattern::kStream}, {1}, {64, 65536}, shm_uds, {8, 256}, {}},
            {{Pattern::kPingPong, Pattern::kOpenLoop}, {1, 8}, {64}, all, {1}, {}},
            fanout_axis};
  } else if (options.name == "fanout") {
    // ~2 minutes per pass: only the fanout matrix (use --repeat 3).
    duration = absl::Seconds(1);
    warmup = absl::Milliseconds(250);
    axes = {fanout_axis};
  } else if (options.name == "full") {
    duration = absl::Seconds(5);
    warmup = absl::Seconds(1);
    const std::vector<int> clients = {1, 8, 32, 128, 512};
    const std::vector<uint32_t> frames = {64, 1024, 65536};
    axes = {{{Pattern::kStream}, clients, frames, all, {1, 8, 64, 256}, {}},
            {{Pattern::kPingPong}, clients, frames, all, {1}, {}},
            {{Pattern::kOpenLoop}, clients, frames, all, {1, 64}, {}},
            {{Pattern::kFanout}, {1, 8, 32, 128}, frames, all, {1, 64}, false}};
  } else if (options.name == "waiting") {
    return WaitingSpecs(options);
  } else if (options.name == "smoke") {
    // The bench-smoke ctest (~20 s): only what the smoke targets compare.
    // Ping-pong is pinned so that the server and its client never share a
    // CPU (on a small, busy machine two spinning peers on one CPU measure
    // the scheduler, and the tail flips between modes). Streaming is not:
    // pinned next to other work, a spinning shm side yields its CPU to that
    // work and loses half its throughput (and uds a third), while unpinned
    // the scheduler moves it. Streaming runs batched only: the gate compares
    // shm with the batched socket.
    duration = absl::Seconds(2);
    warmup = absl::Milliseconds(500);
    axes = {{{Pattern::kStream}, {1}, {64, 65536}, shm_uds, {64}, false},
            {{Pattern::kPingPong}, {1}, {64}, shm_uds, {1}, true},
            {{Pattern::kFanout},
             {8},
             {65536},
             shm_uds,
             {64},
             false,
             absl::Seconds(1),
             absl::Milliseconds(250)}};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown suite '", options.name, "' (quick, full, smoke, fanout, waiting)"));
  }
  if (options.duration) duration = *options.duration;
  if (options.warmup) warmup = *options.warmup;
  if (options.rate) rate = *options.rate;
  std::vector<RunSpec> specs;
  for (const Axis& axis : axes) {
    for (Pattern p : axis.patterns) {
      std::vector<int> batches = axis.batches;
      if (p == Pattern::kPingPong) {
        batches = {1};
      } else if (!options.batches.empty()) {
        batches = options.batches;
      }
      for (uint32_t f : axis.frames) {
        for (int c : axis.clients) {
          for (int b : batches) {
            for (TransportKind t : axis.transports) {
              if (!options.transports.empty() &&
                  std::find(options.transports.begin(), options.transports.end(), t) ==
                      options.transports.end()) {
                continue;
              }
              if (!Built(t)) {
                if (options.name == "smoke") {
                  return absl::FailedPreconditionError(absl::StrCat(
                      "the smoke suite needs the ", ToString(t), " transport, not built in"));
                }
                continue;
              }
              RunSpec s = options.base;
              s.transport = t;
              s.pattern = p;
              s.clients = c;
              s.frame_bytes = f;
              s.batch = b;
              // --duration / --warmup override every axis's own.
              s.duration = options.duration ? duration : axis.duration.value_or(duration);
              s.warmup = options.warmup ? warmup : axis.warmup.value_or(warmup);
              s.rate = rate;
              s.pin = axis.pin.value_or(pin);
              if (!options.wait_given) s.wait = DefaultWait(t);
              // A --batch list may repeat what an axis already has.
              bool dup = false;
              for (const RunSpec& o : specs) {
                dup |= o.transport == t && o.pattern == p && o.clients == c && o.frame_bytes == f &&
                       o.batch == b;
              }
              if (!dup) specs.push_back(s);
            }
          }
        }
      }
    }
  }
  return specs;
}

int RunSuite(const SuiteOptions& options, const std::vector<RunSpec>& specs) {
  const MachineInfo machine = GetMachineInfo();
  const Json load_at_start = LoadAverage();
  const std::string started = UtcStamp("%Y-%m-%dT%H:%M:%SZ");
  std::FILE* text = options.json ? stderr : stdout;
  std::vector<Json> runs;
  Json failures = Json::array();
  int exit_code = 0;
  const int repeat = std::max(1, options.repeat);
  const size_t total = specs.size() * static_cast<size_t>(repeat);
  for (size_t k = 0; k < total; ++k) {
    const size_t i = k % specs.size();
    if (total > 1) absl::FPrintF(stderr, "[%d/%d] %s\n", k + 1, total, Label(specs[i]));
    absl::StatusOr<RunResult> result = RunOne(specs[i]);
    if (!result.ok()) {
      absl::FPrintF(stderr, "FAILED %s: %s\n", Label(specs[i]), result.status().ToString());
      Json f = Json::object();
      f["run"] = Label(specs[i]);
      f["error"] = result.status().ToString();
      failures.push_back(std::move(f));
      exit_code = 1;
      continue;
    }
    PrintRun(text, *result, machine);
    std::fflush(text);
    Json json = RunJson(*result);
    if (options.json) {
      std::printf("%s\n", DumpJson(json).c_str());
      std::fflush(stdout);
    }
    runs.push_back(std::move(json));
  }

  std::vector<GateCheck> checks;
  bool gate_ok = true;
  {
    std::ifstream in(options.targets);
    if (!in) {
      if (options.gate) {
        absl::FPrintF(stderr, "cannot read targets file %s\n", options.targets);
        return 1;
      }
    } else {
      std::stringstream ss;
      ss << in.rdbuf();
      absl::StatusOr<Json> targets = ParseJson(ss.str());
      // The waiting and fanout suites gate on the median of each cell's
      // repeats.
      const std::vector<Json> gated = options.name == "waiting"  ? MedianRuns(runs)
                                      : options.name == "fanout" ? FanoutMedians(runs)
                                                                 : runs;
      absl::StatusOr<std::vector<GateCheck>> evaluated =
          targets.ok() ? EvaluateTargets(*targets, gated, options.name)
                       : absl::StatusOr<std::vector<GateCheck>>(targets.status());
      if (!evaluated.ok()) {
        absl::FPrintF(stderr, "%s: %s\n", options.targets, evaluated.status().ToString());
        return 1;
      }
      checks = std::move(*evaluated);
      bool any_found = false;
      for (const auto& c : checks) {
        any_found |= c.found;
        if (!c.found || !c.passed) gate_ok = false;
      }
      if (options.gate || any_found) PrintGate(text, checks);
    }
  }
  if (options.gate && !gate_ok) exit_code = 1;

  if (!options.write_files) return exit_code;
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  const std::string prefix =
      absl::StrCat(options.out_dir, "/", machine.host, "-", UtcStamp("%Y%m%d-%H%M%S"));
  Json method = Json::object();
  method["machine"] = MachineJson(machine);
  method["suite"] = options.name.empty() ? "single" : options.name;
  method["started"] = started;
  method["wait"] = options.wait_given ? ToString(options.base.wait)
                                      : "default: park (blocking calls) for uds, pipe, tcp and "
                                        "grpc; balanced for shm";
  method["touch"] = ToString(options.base.touch);
  method["batch_bytes"] = options.base.batch_bytes;
  method["spin_us"] = JsonNumber(absl::ToDoubleMicroseconds(options.base.spin));
  method["pin"] = options.base.pin;
  method["repeat"] = repeat;
  method["client_timing"] =
      options.name == "waiting" ? "sleep" : ToString(options.base.client_timing);
  method["load_average_start"] = load_at_start;
  method["notes"] =
      "each client is a process; one server process reads all connections; frames/s "
      "counts frames delivered to the server (stream, openloop) or round trips "
      "completed (pingpong) inside the window; MB = 10^6 payload bytes; batch = frames "
      "per write (kernel transports), per publish (shm), per flushing write (grpc: "
      "buffer-hinted writes); pingpong never batches; touch read = the server "
      "checksums every payload byte, none = it only counts (a ceiling)";
  Json doc = Json::object();
  doc["method"] = std::move(method);
  doc["runs"] = runs;
  doc["failures"] = std::move(failures);
  doc["gate"] = GateJson(checks);
  doc["method"]["load_average_end"] = LoadAverage();
  {
    std::ofstream out(prefix + ".json");
    out << DumpJson(doc, /*pretty=*/true) << "\n";
    if (!out) {
      absl::FPrintF(stderr, "cannot write %s.json\n", prefix);
      return 1;
    }
  }
  {
    std::ofstream md(prefix + ".md");
    md << "# shmlane-bench " << (options.name.empty() ? "run" : options.name) << " on "
       << machine.host << ", " << started << "\n\n";
    md << "Machine: " << machine.cpu_model << ", " << machine.cpus << " CPUs, " << machine.kernel
       << ". Wait mode "
       << (options.wait_given ? ToString(options.base.wait)
                              : "park (blocking calls) for uds, pipe, tcp and grpc, balanced "
                                "for shm")
       << ", pin " << (options.base.pin ? "yes" : "no") << ", batches end at "
       << options.base.batch_bytes
       << " bytes. Ratios compare runs of this set only; every ratio names the batching of "
          "both sides.\n\n";
    if (options.name == "waiting") {
      md << "Open-loop clients sleep to each send time (clock_nanosleep, client timing `sleep`). "
            "Each cell is the median of "
         << repeat << " interleaved runs. Load average at start / end: " << DumpJson(load_at_start)
         << " / " << DumpJson(doc["method"]["load_average_end"]) << ".\n\n";
      md << WaitingTables(MedianRuns(runs));
    } else {
      md << MarkdownTables(runs);
    }
    if (!checks.empty()) {
      md << "### gate (bench/targets.json)\n\n| target | runs | ratio | min | result |\n| --- | "
            "--- | ---: | ---: | --- |\n";
      for (const auto& c : checks) {
        md << "| " << c.name << " | "
           << (c.found ? absl::StrCat(c.numerator_run, " / ", c.denominator_run) : "-") << " | "
           << (c.found ? absl::StrFormat("%.2fx", c.ratio) : "-") << " | "
           << absl::StrFormat("%.2fx", c.min_ratio) << " | "
           << (!c.found   ? "missing"
               : c.passed ? "pass"
                          : "**fail**")
           << " |\n";
      }
      md << "\n";
    }
    if (options.plots && options.name == "waiting") {
      const std::string base = std::filesystem::path(prefix).filename().string();
      md << "![waiting](" << base << "-waiting.png)\n";
    } else if (options.plots) {
      const std::string base = std::filesystem::path(prefix).filename().string();
      // The plots of the patterns this set has (WritePlots draws only those).
      std::set<std::string> patterns;
      for (const Json& r : runs) patterns.insert(StringAt(r, "pattern"));
      if (patterns.count("stream")) {
        md << "![throughput](" << base << "-throughput.png)\n![batch](" << base << "-batch.png)\n";
      }
      if (patterns.count("pingpong")) {
        md << "![latency](" << base << "-latency.png)\n![cdf](" << base << "-cdf.png)\n";
      }
      if (patterns.count("fanout")) md << "![fanout](" << base << "-fanout.png)\n";
    }
  }
  if (options.plots && !runs.empty()) {
    if (absl::Status s = options.name == "waiting" ? WriteWaitingPlots(prefix, MedianRuns(runs))
                                                   : WritePlots(prefix, runs);
        !s.ok()) {
      absl::FPrintF(stderr, "plots: %s\n", s.ToString());
    }
  }
  absl::FPrintF(stderr, "wrote %s.json and %s.md%s\n", prefix, prefix,
                options.plots ? " and plots" : "");
  return exit_code;
}

}  // namespace shmlane::bench
