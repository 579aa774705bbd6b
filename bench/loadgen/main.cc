// shmlane-bench: the load generator. One run, or a suite of runs, of
// transports x patterns x clients x frame sizes; see docs/benchmarks.md.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "bench/loadgen/harness.h"
#include "bench/loadgen/spec.h"
#include "bench/loadgen/suite.h"

namespace shmlane::bench {
namespace {

constexpr char kUsage[] = R"(usage: shmlane-bench [options]

One run (default) or a suite of runs of a transport and a traffic pattern,
with every client a separate process and one server process.

  --transport T     shm | uds | pipe | tcp | grpc (default uds); with --suite,
                    a comma-separated list restricts the suite
  --pattern P       stream | pingpong | openloop (default stream)
  --clients N       client processes, 1..512 (default 1)
  --frame-bytes B   payload bytes per frame (default 64; openloop >= 16)
  --duration D      measurement window, e.g. 5, 5s, 500ms (default 5s)
  --warmup D        traffic before the window (default 1s)
  --rate R          openloop: frames/s summed over all clients (default 100000
                    for a single run, 20000 in suites)
  --wait W          spin | park | adaptive (default adaptive)
  --spin D          adaptive: spin this long before parking (default 50us)
  --pin             pin the server to CPU 0 and client i to CPU i+1 (mod CPUs)
  --json            print one JSON object per run on stdout (text goes to stderr)
  --suite S         quick (~2 min) | full | smoke (the bench-smoke gate, ~30 s)
  --out DIR         where a suite writes HOST-DATE.{json,md,png} (default
                    bench/results); a single run writes files only with --out
  --targets FILE    ratio targets (default bench/targets.json)
  --gate            exit 1 when a target fails or its runs are missing
  --no-plots        skip gnuplot
  --ring-bytes N    shm: ring size of every lane (power of two; default
                    max(256 KiB, 8 frames rounded up to a power of two))
  --shmlaned PATH   the daemon for the shm transport (default: next to this
                    binary in ../control/, else shmlaned on PATH)
  --help
)";

absl::StatusOr<absl::Duration> ParseSeconds(absl::string_view s) {
  double seconds;
  if (absl::SimpleAtod(s, &seconds)) return absl::Seconds(seconds);
  absl::Duration d;
  if (absl::ParseDuration(s, &d)) return d;
  return absl::InvalidArgumentError(absl::StrCat("not a duration: '", s, "'"));
}

std::string DefaultShmlaned() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto candidate = self.parent_path().parent_path() / "control" / "shmlaned";
    if (std::filesystem::exists(candidate, ec)) return candidate.string();
  }
  return "shmlaned";
}

int Main(int argc, char** argv) {
  SuiteOptions options;
  options.base.shmlaned = DefaultShmlaned();
  std::string transports_arg;
  bool out_given = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::string value;
    const size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    auto need_value = [&]() -> bool {
      if (eq != absl::string_view::npos) {
        value = std::string(arg.substr(eq + 1));
        return true;
      }
      if (i + 1 >= argc) return false;
      value = argv[++i];
      return true;
    };
    auto bad = [&](absl::string_view why) {
      std::fprintf(stderr, "shmlane-bench: %.*s: %.*s\n(--help lists the options)\n",
                   static_cast<int>(name.size()), name.data(), static_cast<int>(why.size()),
                   why.data());
      return 2;
    };
    if (name == "--help" || name == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (name == "--pin") {
      options.base.pin = true;
    } else if (name == "--json") {
      options.json = true;
    } else if (name == "--gate") {
      options.gate = true;
    } else if (name == "--no-plots") {
      options.plots = false;
    } else if (!need_value()) {
      return bad("needs a value");
    } else if (name == "--transport") {
      transports_arg = value;
    } else if (name == "--pattern") {
      auto p = ParsePattern(value);
      if (!p) return bad("expected stream, pingpong or openloop");
      options.base.pattern = *p;
    } else if (name == "--clients") {
      if (!absl::SimpleAtoi(value, &options.base.clients)) return bad("expected an integer");
    } else if (name == "--frame-bytes") {
      if (!absl::SimpleAtoi(value, &options.base.frame_bytes)) return bad("expected an integer");
    } else if (name == "--duration" || name == "--warmup" || name == "--spin") {
      auto d = ParseSeconds(value);
      if (!d.ok()) return bad(d.status().message());
      if (name == "--duration") options.duration = *d;
      if (name == "--warmup") options.warmup = *d;
      if (name == "--spin") options.base.spin = *d;
    } else if (name == "--rate") {
      if (!absl::SimpleAtod(value, &options.base.rate)) return bad("expected frames/s");
      options.rate = options.base.rate;
    } else if (name == "--wait") {
      auto w = ParseWaitMode(value);
      if (!w) return bad("expected spin, park or adaptive");
      options.base.wait = *w;
    } else if (name == "--suite") {
      options.name = value;
    } else if (name == "--out") {
      options.out_dir = value;
      out_given = true;
    } else if (name == "--targets") {
      options.targets = value;
    } else if (name == "--ring-bytes") {
      if (!absl::SimpleAtoi(value, &options.base.ring_bytes)) return bad("expected bytes");
    } else if (name == "--shmlaned") {
      options.base.shmlaned = value;
    } else {
      return bad("unknown option");
    }
  }
  if (!transports_arg.empty()) {
    for (absl::string_view t : absl::StrSplit(transports_arg, ',', absl::SkipEmpty())) {
      auto kind = ParseTransport(std::string_view(t.data(), t.size()));
      if (!kind) {
        std::fprintf(stderr, "shmlane-bench: --transport: unknown '%.*s'\n",
                     static_cast<int>(t.size()), t.data());
        return 2;
      }
      options.transports.push_back(*kind);
    }
  }

  std::vector<RunSpec> specs;
  if (options.name.empty()) {
    if (options.transports.size() > 1) {
      std::fprintf(stderr, "shmlane-bench: one --transport per single run (or use --suite)\n");
      return 2;
    }
    RunSpec spec = options.base;
    if (!options.transports.empty()) spec.transport = options.transports[0];
    if (options.duration) spec.duration = *options.duration;
    if (options.warmup) spec.warmup = *options.warmup;
    if (absl::Status s = ValidateSpec(spec); !s.ok()) {
      std::fprintf(stderr, "shmlane-bench: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    specs.push_back(spec);
    options.write_files = out_given;
  } else {
    auto suite = SuiteSpecs(options);
    if (!suite.ok()) {
      std::fprintf(stderr, "shmlane-bench: %s\n", std::string(suite.status().message()).c_str());
      return 2;
    }
    specs = std::move(*suite);
  }
  return RunSuite(options, specs);
}

}  // namespace
}  // namespace shmlane::bench

int main(int argc, char** argv) { return shmlane::bench::Main(argc, argv); }
