#include "bench/loadgen/report.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "bench/loadgen/plots_gp.h"

namespace shmlane::bench {
namespace {

constexpr const char* kTransportOrder[] = {"shm", "uds", "pipe", "tcp", "grpc"};

// Quantiles stored for the CDF plot.
constexpr double kCdfQuantiles[] = {0.001, 0.01,  0.05,   0.1,    0.2,     0.3,  0.4,
                                    0.5,   0.6,   0.7,    0.8,    0.9,     0.95, 0.99,
                                    0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0};

Json LatencyJson(const Histogram& h) {
  Json v = Json::object();
  v["p50"] = h.ValueAtQuantile(0.50);
  v["p90"] = h.ValueAtQuantile(0.90);
  v["p99"] = h.ValueAtQuantile(0.99);
  v["p999"] = h.ValueAtQuantile(0.999);
  v["max"] = h.max();
  v["mean"] = JsonNumber(std::round(h.mean()));
  v["count"] = h.count();
  return v;
}

double Seconds(int64_t ns) { return ns / 1e9; }

std::string Si(double v) {
  if (v >= 1e9) return absl::StrFormat("%.2fG", v / 1e9);
  if (v >= 1e6) return absl::StrFormat("%.2fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

std::string Ns(double ns) {
  if (ns >= 1e9) return absl::StrFormat("%.2f s", ns / 1e9);
  if (ns >= 1e6) return absl::StrFormat("%.2f ms", ns / 1e6);
  if (ns >= 1e3) return absl::StrFormat("%.1f us", ns / 1e3);
  return absl::StrFormat("%.0f ns", ns);
}

std::string Kb(int64_t kb) {
  if (kb >= 1024) return absl::StrFormat("%.1f MiB", kb / 1024.0);
  return absl::StrCat(kb, " KiB");
}

double Num(const Json& run, std::string_view path) { return NumberAt(run, path); }
std::string Str(const Json& run, std::string_view key) { return StringAt(run, key); }

// Runs keyed by (pattern, frame_bytes, clients) and transport.
using Key = std::tuple<std::string, int, int>;
std::map<Key, std::map<std::string, const Json*>> Group(const std::vector<Json>& runs) {
  std::map<Key, std::map<std::string, const Json*>> groups;
  for (const auto& run : runs) {
    groups[{Str(run, "pattern"), static_cast<int>(Num(run, "frame_bytes")),
            static_cast<int>(Num(run, "clients"))}][Str(run, "transport")] = &run;
  }
  return groups;
}

std::vector<std::string> TransportsIn(const std::vector<Json>& runs) {
  std::set<std::string> present;
  for (const auto& run : runs) present.insert(Str(run, "transport"));
  std::vector<std::string> out;
  for (const char* t : kTransportOrder) {
    if (present.count(t)) out.push_back(t);
  }
  return out;
}

std::string Ratio(double num, double den) {
  if (!(num > 0) || !(den > 0)) return "-";
  return absl::StrFormat("%.2fx", num / den);
}

}  // namespace

Json MachineJson(const MachineInfo& m) {
  Json v = Json::object();
  v["host"] = m.host;
  v["cpu_model"] = m.cpu_model;
  v["cpus"] = m.cpus;
  v["kernel"] = m.kernel;
  return v;
}

Json RunJson(const RunResult& run) {
  const RunSpec& s = run.spec;
  Json v = Json::object();
  v["transport"] = ToString(s.transport);
  v["pattern"] = ToString(s.pattern);
  v["clients"] = s.clients;
  v["frame_bytes"] = s.frame_bytes;
  v["duration_s"] = JsonNumber(absl::ToDoubleSeconds(s.duration));
  v["warmup_s"] = JsonNumber(absl::ToDoubleSeconds(s.warmup));
  v["wait"] = ToString(s.wait);
  v["spin_us"] = JsonNumber(absl::ToDoubleMicroseconds(s.spin));
  v["pin"] = s.pin;
  if (s.pattern == Pattern::kOpenLoop) v["rate"] = JsonNumber(s.rate);
  v["window_s"] = JsonNumber(std::round(run.window_s * 1e6) / 1e6);
  v["frames"] = run.frames;
  v["frames_per_s"] = JsonNumber(std::round(run.frames_per_s));
  v["mb_per_s"] = JsonNumber(std::round(run.mb_per_s * 100) / 100);
  if (run.latency != nullptr) {
    v["latency_kind"] = s.pattern == Pattern::kPingPong ? "round_trip" : "one_way_from_intended";
    v["latency_ns"] = LatencyJson(*run.latency);
    Json cdf = Json::array();
    for (double q : kCdfQuantiles) {
      cdf.push_back(Json::array({JsonNumber(q), run.latency->ValueAtQuantile(q)}));
    }
    v["latency_cdf"] = std::move(cdf);
  }
  if (run.latency_actual != nullptr) {
    v["latency_actual_ns"] = LatencyJson(*run.latency_actual);
    v["openloop_unsent"] = run.openloop_unsent;
  }
  const Resources& r = run.resources;
  Json res = Json::object();
  res["clients_cpu_s"] = JsonNumber(Seconds(r.clients.user_ns + r.clients.sys_ns));
  res["clients_user_s"] = JsonNumber(Seconds(r.clients.user_ns));
  res["clients_sys_s"] = JsonNumber(Seconds(r.clients.sys_ns));
  res["server_cpu_s"] = JsonNumber(Seconds(r.server.user_ns + r.server.sys_ns));
  res["daemon_cpu_s"] = JsonNumber(Seconds(r.daemon.user_ns + r.daemon.sys_ns));
  res["clients_ctx_switches"] = r.clients.voluntary_switches + r.clients.involuntary_switches;
  res["server_ctx_switches"] = r.server.voluntary_switches + r.server.involuntary_switches;
  res["daemon_ctx_switches"] = r.daemon.voluntary_switches + r.daemon.involuntary_switches;
  res["daemon_rss_kb"] = r.daemon_rss_kb;
  res["server_rss_kb"] = r.server_rss_kb;
  res["client_rss_kb"] = r.client_rss_kb;
  res["daemon_memfd_bytes"] = r.daemon_memfd_bytes;
  res["shmem_delta_kb"] = r.shmem_delta_kb;
  v["resources"] = std::move(res);
  if (run.spec.pattern != Pattern::kPingPong) {
    v["frames_sent_total"] = run.total_sent;
    v["frames_received_total"] = run.total_received;
  }
  v["setup_s"] = JsonNumber(std::round(run.setup_s * 1000) / 1000);
  return v;
}

void PrintRun(std::FILE* out, const RunResult& run, const MachineInfo& m) {
  const RunSpec& s = run.spec;
  std::string wait = ToString(s.wait);
  if (s.wait == WaitMode::kAdaptive) {
    absl::StrAppend(&wait, " (spin ", absl::FormatDuration(s.spin), ")");
  }
  if (s.transport == TransportKind::kGrpc) wait = "n/a (gRPC polls itself)";
  absl::FPrintF(out, "== %s ==\n", Label(s));
  absl::FPrintF(out,
                "method:    %s, %s, %d cpus, %s; transport %s, pattern %s, %d client process(es) "
                "+ 1 server, frame %u B, warmup %s, duration %s, wait %s, pin %s",
                m.host, m.cpu_model, m.cpus, m.kernel, ToString(s.transport), ToString(s.pattern),
                s.clients, s.frame_bytes, absl::FormatDuration(s.warmup),
                absl::FormatDuration(s.duration), wait, s.pin ? "yes" : "no");
  if (s.pattern == Pattern::kOpenLoop) absl::FPrintF(out, ", rate %s frames/s", Si(s.rate));
  absl::FPrintF(out, "\n");
  absl::FPrintF(out, "result:    %s frames/s, %.1f MB/s (%d frames in %.3f s%s)\n",
                Si(run.frames_per_s), run.mb_per_s, run.frames, run.window_s,
                s.pattern == Pattern::kPingPong ? ", round trips" : ", delivered");
  auto print_latency = [&](const char* what, const Histogram& h) {
    absl::FPrintF(out, "%-10s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)\n", what,
                  Ns(h.ValueAtQuantile(0.5)), Ns(h.ValueAtQuantile(0.9)),
                  Ns(h.ValueAtQuantile(0.99)), Ns(h.ValueAtQuantile(0.999)), Ns(h.max()),
                  h.count());
  };
  if (run.latency != nullptr) {
    print_latency(s.pattern == Pattern::kPingPong ? "rtt:" : "intended:", *run.latency);
  }
  if (run.latency_actual != nullptr) {
    print_latency("actual:", *run.latency_actual);
    if (run.openloop_unsent > 0) {
      absl::FPrintF(out, "           %d scheduled frames were never sent (behind schedule)\n",
                    run.openloop_unsent);
    }
  }
  const Resources& r = run.resources;
  absl::FPrintF(out,
                "resources: cpu s: clients %.2f (user %.2f sys %.2f), server %.2f, daemon %.2f; "
                "ctx switches: clients %d vol + %d invol, server %d + %d, daemon %d\n",
                Seconds(r.clients.user_ns + r.clients.sys_ns), Seconds(r.clients.user_ns),
                Seconds(r.clients.sys_ns), Seconds(r.server.user_ns + r.server.sys_ns),
                Seconds(r.daemon.user_ns + r.daemon.sys_ns), r.clients.voluntary_switches,
                r.clients.involuntary_switches, r.server.voluntary_switches,
                r.server.involuntary_switches,
                r.daemon.voluntary_switches + r.daemon.involuntary_switches);
  absl::FPrintF(out,
                "           rss: daemon %s, server %s, client %s; shm: daemon memfds %s, "
                "system Shmem %+d KiB\n",
                r.daemon_rss_kb > 0 ? Kb(r.daemon_rss_kb) : "-", Kb(r.server_rss_kb),
                Kb(r.client_rss_kb), Kb(r.daemon_memfd_bytes / 1024), r.shmem_delta_kb);
}

std::string MarkdownTables(const std::vector<Json>& runs) {
  const auto groups = Group(runs);
  const std::vector<std::string> transports = TransportsIn(runs);
  std::vector<std::string> baselines;
  for (const auto& t : transports) {
    if (t != "shm") baselines.push_back(t);
  }
  const bool have_shm = std::find(transports.begin(), transports.end(), "shm") != transports.end();
  std::string md;

  auto header = [&](const std::string& title, const std::string& cell, const std::string& ratio) {
    absl::StrAppend(&md, "### ", title, "\n\n| frame B | clients |");
    for (const auto& t : transports) absl::StrAppend(&md, " ", t, cell, " |");
    if (have_shm) {
      for (const auto& b : baselines)
        absl::StrAppend(&md, " ", absl::StrReplaceAll(ratio, {{"%s", b}}), " |");
    }
    absl::StrAppend(&md, "\n| ---: | ---: |");
    for (size_t i = 0; i < transports.size(); ++i) absl::StrAppend(&md, " ---: |");
    if (have_shm) {
      for (size_t i = 0; i < baselines.size(); ++i) absl::StrAppend(&md, " ---: |");
    }
    absl::StrAppend(&md, "\n");
  };

  for (const char* pattern : {"stream", "pingpong", "openloop"}) {
    bool any = false;
    for (const auto& [key, by_transport] : groups) {
      if (std::get<0>(key) != pattern) continue;
      if (!any) {
        any = true;
        if (std::string(pattern) == "stream") {
          header("stream: delivered frames/s (higher is better)", "", "shm/%s");
        } else if (std::string(pattern) == "pingpong") {
          header("pingpong: round-trip time p50 / p99 (lower is better)", "", "%s/shm p99");
        } else {
          header("openloop: one-way latency from intended send time p50 / p99 (lower is better)",
                 "", "%s/shm p99");
        }
      }
      absl::StrAppend(&md, "| ", std::get<1>(key), " | ", std::get<2>(key), " |");
      const bool stream = std::string(pattern) == "stream";
      for (const auto& t : transports) {
        auto it = by_transport.find(t);
        if (it == by_transport.end()) {
          absl::StrAppend(&md, " - |");
        } else if (stream) {
          absl::StrAppend(&md, " ", Si(Num(*it->second, "frames_per_s")), " |");
        } else {
          absl::StrAppend(&md, " ", Ns(Num(*it->second, "latency_ns.p50")), " / ",
                          Ns(Num(*it->second, "latency_ns.p99")), " |");
        }
      }
      if (have_shm) {
        auto shm = by_transport.find("shm");
        for (const auto& b : baselines) {
          auto it = by_transport.find(b);
          if (shm == by_transport.end() || it == by_transport.end()) {
            absl::StrAppend(&md, " - |");
          } else if (stream) {
            absl::StrAppend(
                &md, " ",
                Ratio(Num(*shm->second, "frames_per_s"), Num(*it->second, "frames_per_s")), " |");
          } else {
            absl::StrAppend(
                &md, " ",
                Ratio(Num(*it->second, "latency_ns.p99"), Num(*shm->second, "latency_ns.p99")),
                " |");
          }
        }
      }
      absl::StrAppend(&md, "\n");
    }
    if (any) absl::StrAppend(&md, "\n");
  }
  return md;
}

absl::Status WritePlots(const std::string& prefix, const std::vector<Json>& runs) {
  const std::vector<std::string> transports = TransportsIn(runs);
  // The plotted frame size: 64 bytes when present, else the smallest.
  int frame = 0;
  int fewest_pingpong_clients = 0;
  for (const auto& run : runs) {
    const int f = static_cast<int>(Num(run, "frame_bytes"));
    if (frame == 0 || f == 64 || (frame != 64 && f < frame)) frame = f;
  }
  for (const auto& run : runs) {
    if (Str(run, "pattern") == "pingpong" && static_cast<int>(Num(run, "frame_bytes")) == frame) {
      const int c = static_cast<int>(Num(run, "clients"));
      if (fewest_pingpong_clients == 0 || c < fewest_pingpong_clients) fewest_pingpong_clients = c;
    }
  }
  std::ofstream throughput(prefix + "-throughput.dat");
  std::ofstream latency(prefix + "-latency.dat");
  std::ofstream cdf(prefix + "-cdf.dat");
  // gnuplot's "index" counts blocks, so every transport gets one in each file,
  // with a dummy point when it has no data (gnuplot skips the "?" row).
  for (const auto& t : transports) {
    std::vector<std::pair<int, const Json*>> stream, pingpong;
    const Json* cdf_run = nullptr;
    for (const auto& run : runs) {
      if (Str(run, "transport") != t || static_cast<int>(Num(run, "frame_bytes")) != frame)
        continue;
      const int clients = static_cast<int>(Num(run, "clients"));
      if (Str(run, "pattern") == "stream") stream.emplace_back(clients, &run);
      if (Str(run, "pattern") == "pingpong") {
        pingpong.emplace_back(clients, &run);
        if (clients == fewest_pingpong_clients) cdf_run = &run;
      }
    }
    std::sort(stream.begin(), stream.end());
    std::sort(pingpong.begin(), pingpong.end());
    throughput << "\"" << t << "\"\n";
    if (stream.empty()) throughput << "? ?\n";
    for (const auto& [c, run] : stream) throughput << c << " " << Num(*run, "frames_per_s") << "\n";
    throughput << "\n\n";
    latency << "\"" << t << "\"\n";
    if (pingpong.empty()) latency << "? ? ?\n";
    for (const auto& [c, run] : pingpong) {
      latency << c << " " << Num(*run, "latency_ns.p50") << " " << Num(*run, "latency_ns.p99")
              << "\n";
    }
    latency << "\n\n";
    cdf << "\"" << t << "\"\n";
    const Json* points = cdf_run != nullptr ? FindPath(*cdf_run, "latency_cdf") : nullptr;
    if (points == nullptr || !points->is_array() || points->empty()) cdf << "? ?\n";
    if (points != nullptr && points->is_array()) {
      for (const auto& p : *points) {
        if (p.is_array() && p.size() == 2 && p[0].is_number() && p[1].is_number())
          cdf << p[0].get<double>() << " " << p[1].get<double>() << "\n";
      }
    }
    cdf << "\n\n";
  }
  throughput.close();
  latency.close();
  cdf.close();
  const std::string gp_path = prefix + ".gp";
  {
    std::ofstream gp(gp_path);
    gp << "prefix = \"" << prefix << "\"\n" << kPlotsGp;
  }
  const std::string command = absl::StrCat("gnuplot '", gp_path, "' 2>&1");
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::FailedPreconditionError("cannot run gnuplot");
  std::string output;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  const int status = pclose(pipe);
  if (status != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("gnuplot failed (install gnuplot-nox, or pass --no-plots): ", output));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GateCheck>> EvaluateTargets(const Json& targets,
                                                       const std::vector<Json>& runs,
                                                       bool smoke_only) {
  const Json* list = FindPath(targets, "targets");
  if (list == nullptr || !list->is_array()) {
    return absl::InvalidArgumentError("targets file: expected {\"targets\": [...]}");
  }
  std::vector<GateCheck> checks;
  for (const auto& t : *list) {
    const Json* smoke = FindPath(t, "smoke");
    if (smoke_only && (smoke == nullptr || !smoke->is_boolean() || !smoke->get<bool>())) continue;
    GateCheck check;
    check.name = Str(t, "name");
    check.description = Str(t, "description");
    const std::string metric = Str(t, "metric");
    const std::string pattern = Str(t, "pattern");
    const std::string numerator = Str(t, "numerator");
    const std::string denominator = Str(t, "denominator");
    const double clients = Num(t, "clients");
    const double frame = Num(t, "frame_bytes");
    check.min_ratio = Num(t, "min_ratio");
    if (check.name.empty() || metric.empty() || pattern.empty() || numerator.empty() ||
        denominator.empty() || std::isnan(clients) || std::isnan(frame) ||
        std::isnan(check.min_ratio)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets file: target '", check.name,
          "' needs name, metric, pattern, clients, frame_bytes, numerator, denominator, "
          "min_ratio"));
    }
    auto find = [&](const std::string& transport) -> const Json* {
      for (const auto& run : runs) {
        if (Str(run, "transport") == transport && Str(run, "pattern") == pattern &&
            Num(run, "clients") == clients && Num(run, "frame_bytes") == frame) {
          return &run;
        }
      }
      return nullptr;
    };
    const Json* num = find(numerator);
    const Json* den = find(denominator);
    if (num != nullptr && den != nullptr) {
      check.found = true;
      const double a = Num(*num, metric);
      const double b = Num(*den, metric);
      check.ratio = b > 0 ? a / b : 0;
      check.passed = check.ratio >= check.min_ratio;
    }
    checks.push_back(std::move(check));
  }
  return checks;
}

Json GateJson(const std::vector<GateCheck>& checks) {
  Json list = Json::array();
  for (const auto& c : checks) {
    Json v = Json::object();
    v["name"] = c.name;
    v["result"] = !c.found ? "missing" : c.passed ? "pass" : "fail";
    if (c.found) v["ratio"] = JsonNumber(std::round(c.ratio * 1000) / 1000);
    v["min_ratio"] = JsonNumber(c.min_ratio);
    list.push_back(std::move(v));
  }
  return list;
}

void PrintGate(std::FILE* out, const std::vector<GateCheck>& checks) {
  absl::FPrintF(out, "gate (ratios within this run, bench/targets.json):\n");
  for (const auto& c : checks) {
    if (!c.found) {
      absl::FPrintF(out, "  MISSING %-34s (its runs are not in this set)\n", c.name);
    } else {
      absl::FPrintF(out, "  %-7s %-34s %8.2fx (target >= %.2fx)  %s\n", c.passed ? "PASS" : "FAIL",
                    c.name, c.ratio, c.min_ratio, c.description);
    }
  }
}

}  // namespace shmlane::bench
