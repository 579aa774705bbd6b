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
#include "absl/strings/str_split.h"
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

// What a run's fields say, with the defaults of files written before
// batching and touch existed (one write per frame, counting-only receiver).
int BatchOf(const Json& run) {
  const double b = Num(run, "batch");
  return std::isnan(b) ? 1 : static_cast<int>(b);
}
std::string TouchOf(const Json& run) {
  const std::string t = Str(run, "touch");
  return t.empty() ? "none" : t;
}
bool IsKernel(const std::string& transport) {
  return transport == "uds" || transport == "pipe" || transport == "tcp";
}
bool LowerIsBetter(std::string_view metric) {
  return metric.rfind("latency", 0) == 0 || metric.find("cpu") != std::string_view::npos;
}

// The channel wait preference the shm transport uses for a wait mode.
const char* ShmPreference(WaitMode w) {
  switch (w) {
    case WaitMode::kSpin:
      return "latency, bench polls";
    case WaitMode::kAdaptive:
      return "latency";
    case WaitMode::kPark:
      return "efficiency";
    case WaitMode::kBalanced:
      return "balanced";
  }
  return "?";
}

// CPU seconds per million frames (round trips for pingpong) in the window.
double CpuPerMillion(const Json& run, std::string_view field) {
  const double frames = Num(run, "frames");
  const double cpu = Num(run, "resources." + std::string(field));
  if (!(frames > 0) || std::isnan(cpu)) return std::nan("");
  return cpu / (frames / 1e6);
}

// The run among `candidates` with the best `metric` (NaN-valued runs never win).
const Json* Best(const std::vector<const Json*>& candidates, std::string_view metric) {
  const Json* best = nullptr;
  const bool lower = LowerIsBetter(metric);
  for (const Json* run : candidates) {
    const double v = Num(*run, metric);
    if (!(v > 0)) continue;
    if (best == nullptr || (lower ? v < Num(*best, metric) : v > Num(*best, metric))) best = run;
  }
  return best;
}

// A row of a table: touch, pattern, frame_bytes, clients, batch.
using RowKey = std::tuple<std::string, std::string, int, int, int>;
// A cell of comparisons: touch, pattern, frame_bytes, clients (every batch).
using CellKey = std::tuple<std::string, std::string, int, int>;

struct Grouped {
  std::map<RowKey, std::map<std::string, const Json*>> rows;  // -> transport -> run
  std::map<CellKey, std::vector<const Json*>> cells;          // every run of the cell
};

Grouped Group(const std::vector<Json>& runs) {
  Grouped g;
  for (const auto& run : runs) {
    const std::string touch = TouchOf(run), pattern = Str(run, "pattern");
    const int frame = static_cast<int>(Num(run, "frame_bytes"));
    const int clients = static_cast<int>(Num(run, "clients"));
    auto& slot = g.rows[{touch, pattern, frame, clients, BatchOf(run)}][Str(run, "transport")];
    if (slot == nullptr) slot = &run;  // the first of repeated runs
    g.cells[{touch, pattern, frame, clients}].push_back(&run);
  }
  return g;
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

std::string Cpu(double v) {
  if (std::isnan(v)) return "-";
  if (v >= 10) return absl::StrFormat("%.0f", v);
  if (v >= 1) return absl::StrFormat("%.1f", v);
  return absl::StrFormat("%.2f", v);
}

// "0.05 / 0.04": clients / server CPU seconds per million frames.
std::string CpuPair(const Json& run) {
  return absl::StrCat(Cpu(CpuPerMillion(run, "clients_cpu_s")), " / ",
                      Cpu(CpuPerMillion(run, "server_cpu_s")));
}

// "uds b256" (or "uds" for pingpong, which never batches).
std::string RunName(const Json& run) {
  if (Str(run, "pattern") == "pingpong") return Str(run, "transport");
  return absl::StrCat(Str(run, "transport"), " b", BatchOf(run));
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
  v["batch"] = s.pattern == Pattern::kPingPong ? 1 : s.batch;
  v["batch_bytes"] = s.batch_bytes;
  v["touch"] = ToString(s.touch);
  if (s.transport == TransportKind::kShm) v["wait_preference"] = ShmPreference(s.wait);
  v["cpu_limit"] = JsonNumber(s.cpu_limit);
  if (s.pattern == Pattern::kOpenLoop) {
    v["rate"] = JsonNumber(s.rate);
    v["client_timing"] = ToString(s.client_timing);
  }
  v["window_s"] = JsonNumber(std::round(run.window_s * 1e6) / 1e6);
  v["frames"] = run.frames;
  v["frames_per_s"] = JsonNumber(std::round(run.frames_per_s));
  v["mb_per_s"] = JsonNumber(std::round(run.mb_per_s * 100) / 100);
  if (run.latency != nullptr) {
    v["latency_kind"] = s.pattern == Pattern::kPingPong ? "round_trip"
                        : s.pattern == Pattern::kFanout ? "one_way_from_send_sampled"
                                                        : "one_way_from_intended";
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
  // Per million frames delivered (round trips for pingpong) in the window.
  Json per = Json::object();
  const double mframes = run.frames / 1e6;
  auto per_million = [&](const CpuUsage& u) {
    return mframes > 0 ? JsonNumber(Seconds(u.user_ns + u.sys_ns) / mframes) : Json(nullptr);
  };
  per["clients"] = per_million(r.clients);
  per["server"] = per_million(r.server);
  per["daemon"] = per_million(r.daemon);
  v["cpu_s_per_mframe"] = std::move(per);
  // The figure the waiting suite compares: what the receiving side pays.
  v["server_cpu_s_per_mframe"] = per_million(r.server);
  if (r.cpu_limited) {
    Json th = Json::object();
    th["cgroup"] = r.cgroup_version;
    th["periods"] = r.throttle.periods;
    th["throttled_periods"] = r.throttle.throttled;
    th["throttled_s"] = JsonNumber(Seconds(static_cast<int64_t>(r.throttle.throttled_ns)));
    th["share"] = r.throttle.periods > 0
                      ? JsonNumber(std::round(1000.0 * static_cast<double>(r.throttle.throttled) /
                                              static_cast<double>(r.throttle.periods)) /
                                   1000.0)
                      : JsonNumber(0);
    v["throttle"] = std::move(th);
  }
  if (run.spec.pattern != Pattern::kPingPong) {
    v["frames_sent_total"] = run.total_sent;
    v["frames_received_total"] = run.total_received;
    v["client_flushes"] = run.client_flushes;
    v["frames_per_flush"] = run.client_flushes > 0
                                ? JsonNumber(static_cast<double>(run.total_sent) /
                                             static_cast<double>(run.client_flushes))
                                : Json(nullptr);
  }
  if (s.pattern == Pattern::kFanout) v["fanout"] = FanoutJson(run);
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
  if (s.transport == TransportKind::kShm) {
    absl::StrAppend(&wait, " (wait preference ", ShmPreference(s.wait), ")");
  }
  absl::FPrintF(out, "== %s ==\n", Label(s));
  std::string batch = "1 frame per call (pingpong never batches)";
  if (s.pattern != Pattern::kPingPong) {
    batch = s.batch == 1 ? "1 (one write / publish per frame)"
                         : absl::StrCat(s.batch, " frames or ", s.batch_bytes, " B per ",
                                        s.transport == TransportKind::kShm    ? "publish"
                                        : s.transport == TransportKind::kGrpc ? "flushing write"
                                                                              : "write");
  }
  const char* touch = s.touch == Touch::kRead ? "read (server checksums every payload byte)"
                                              : "none (server only counts frames: a ceiling)";
  absl::FPrintF(out,
                "method:    %s, %s, %d cpus, %s; transport %s, pattern %s, %d client process(es) "
                "+ 1 server, frame %u B, warmup %s, duration %s, wait %s, pin %s, batch %s, "
                "touch %s",
                m.host, m.cpu_model, m.cpus, m.kernel, ToString(s.transport), ToString(s.pattern),
                s.clients, s.frame_bytes, absl::FormatDuration(s.warmup),
                absl::FormatDuration(s.duration), wait, s.pin ? "yes" : "no", batch, touch);
  if (s.pattern == Pattern::kOpenLoop) {
    absl::FPrintF(out, ", rate %s frames/s, client timing %s", Si(s.rate),
                  s.client_timing == ClientTiming::kSleep
                      ? "sleep (clock_nanosleep to each send time)"
                      : "wait (as --wait)");
  }
  if (s.cpu_limit > 0) absl::FPrintF(out, ", cpu limit %g CPUs (CFS quota)", s.cpu_limit);
  absl::FPrintF(out, "\n");
  absl::FPrintF(out, "result:    %s frames/s, %.1f MB/s (%d frames in %.3f s%s)\n",
                Si(run.frames_per_s), run.mb_per_s, run.frames, run.window_s,
                s.pattern == Pattern::kPingPong ? ", round trips" : ", delivered");
  if (s.pattern == Pattern::kFanout) {
    const FanoutResult& f = run.fanout;
    const double published = static_cast<double>(f.total_published);
    absl::FPrintF(
        out,
        "fanout:    %d subscribers: %s frames/s each (slowest %s), publisher %s frames/s; "
        "per frame published: %.0f B copied into the transport, %.0f B passed to "
        "write(); per delivery: %.0f B from read()\n",
        f.subscribers, Si(f.per_subscriber_frames_per_s), Si(f.min_subscriber_frames_per_s),
        Si(f.published_per_s), published > 0 ? f.publisher_copied_bytes / published : 0.0,
        published > 0 ? f.publisher_io_written / published : 0.0,
        published > 0 ? f.subscribers_io_read / (published * f.subscribers) : 0.0);
  }
  if (s.pattern != Pattern::kPingPong && run.client_flushes > 0) {
    absl::FPrintF(out, "batching:  %.1f frames per %s on average (%d frames, %d batches)\n",
                  static_cast<double>(run.total_sent) / static_cast<double>(run.client_flushes),
                  s.transport == TransportKind::kShm ? "publish" : "write", run.total_sent,
                  run.client_flushes);
  }
  auto print_latency = [&](const char* what, const Histogram& h) {
    absl::FPrintF(out, "%-10s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)\n", what,
                  Ns(h.ValueAtQuantile(0.5)), Ns(h.ValueAtQuantile(0.9)),
                  Ns(h.ValueAtQuantile(0.99)), Ns(h.ValueAtQuantile(0.999)), Ns(h.max()),
                  h.count());
  };
  if (run.latency != nullptr) {
    print_latency(s.pattern == Pattern::kPingPong ? "rtt:"
                  : s.pattern == Pattern::kFanout ? "one-way:"
                                                  : "intended:",
                  *run.latency);
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
  if (run.frames > 0) {
    const double mframes = run.frames / 1e6;
    absl::FPrintF(out, "           cpu s per million %s: clients %.3f, server %.3f, daemon %.3f\n",
                  s.pattern == Pattern::kPingPong ? "round trips" : "frames",
                  Seconds(r.clients.user_ns + r.clients.sys_ns) / mframes,
                  Seconds(r.server.user_ns + r.server.sys_ns) / mframes,
                  Seconds(r.daemon.user_ns + r.daemon.sys_ns) / mframes);
  }
  absl::FPrintF(out,
                "           rss: daemon %s, server %s, client %s; shm: daemon memfds %s, "
                "system Shmem %+d KiB\n",
                r.daemon_rss_kb > 0 ? Kb(r.daemon_rss_kb) : "-", Kb(r.server_rss_kb),
                Kb(r.client_rss_kb), Kb(r.daemon_memfd_bytes / 1024), r.shmem_delta_kb);
  if (r.cpu_limited) {
    absl::FPrintF(out,
                  "cpu limit: %g CPUs (cgroup %s): throttled %d of %d periods (%.0f%%), "
                  "throttled time %.3f s in the window\n",
                  s.cpu_limit, r.cgroup_version, r.throttle.throttled, r.throttle.periods,
                  r.throttle.periods > 0 ? 100.0 * static_cast<double>(r.throttle.throttled) /
                                               static_cast<double>(r.throttle.periods)
                                         : 0.0,
                  Seconds(static_cast<int64_t>(r.throttle.throttled_ns)));
  }
}

std::string MarkdownTables(const std::vector<Json>& runs) {
  const Grouped g = Group(runs);
  const std::vector<std::string> transports = TransportsIn(runs);
  const bool have_shm = std::find(transports.begin(), transports.end(), "shm") != transports.end();
  std::string md;
  for (const char* touch : {"read", "none"}) {
    for (const char* pattern_name : {"stream", "pingpong", "openloop"}) {
      const std::string pattern = pattern_name;
      std::vector<const RowKey*> keys;
      for (const auto& [key, by_transport] : g.rows) {
        if (std::get<0>(key) == touch && std::get<1>(key) == pattern) keys.push_back(&key);
      }
      if (keys.empty()) continue;
      const bool stream = pattern == "stream";
      const bool batched = pattern != "pingpong";
      const std::string metric = stream ? "frames_per_s" : "latency_ns.p99";
      const std::string receiver =
          std::string(touch) == "read"
              ? "the server reads every payload byte (`--touch read`)"
              : "**counting-only server** (`--touch none`): a zero-copy ceiling, not a comparison";
      if (stream) {
        absl::StrAppend(&md, "### stream: delivered frames/s (higher is better); ", receiver,
                        "\n\n");
        absl::StrAppend(
            &md,
            "batch: frames per write (uds, pipe, tcp), per publish (shm), per flushing write "
            "(grpc). *best*: the best of uds, pipe and tcp over every batch setting of this set "
            "at that frame size and client count; *naive*: the best of them at batch 1 (one "
            "write per frame). cpu: clients / server CPU seconds per million frames.\n\n");
      } else if (pattern == "pingpong") {
        absl::StrAppend(&md, "### pingpong: round-trip time p50 / p99 (lower is better); ",
                        receiver, "\n\n");
        absl::StrAppend(&md,
                        "No batching: one frame per round trip. *best*: the uds, pipe or tcp run "
                        "with the lowest p99. cpu: clients / server CPU seconds per million "
                        "round trips.\n\n");
      } else {
        absl::StrAppend(&md,
                        "### openloop: one-way latency from intended send time p50 / p99 (lower "
                        "is better); ",
                        receiver, "\n\n");
        absl::StrAppend(&md,
                        "batch: as for stream, but a sender on schedule flushes every frame (a "
                        "batch fills only while it is behind). *best*: the uds, pipe or tcp run "
                        "with the lowest p99 over every batch setting. cpu: clients / server CPU "
                        "seconds per million frames.\n\n");
      }
      absl::StrAppend(&md, "| frame B | clients |", batched ? " batch |" : "");
      for (const auto& t : transports) absl::StrAppend(&md, " ", t, " |");
      absl::StrAppend(&md, " best kernel |");
      if (have_shm) {
        absl::StrAppend(&md, stream ? " shm/best | naive (b1) | shm/naive |" : " best/shm p99 |",
                        " shm cpu | best cpu |");
      }
      absl::StrAppend(&md, "\n| ---: | ---: |", batched ? " ---: |" : "");
      const size_t extra = 1 + (have_shm ? (stream ? 5 : 3) : 0);
      for (size_t i = 0; i < transports.size() + extra; ++i) absl::StrAppend(&md, " ---: |");
      absl::StrAppend(&md, "\n");

      auto value = [&](const Json& run) {
        if (stream) return Si(Num(run, "frames_per_s"));
        return absl::StrCat(Ns(Num(run, "latency_ns.p50")), " / ", Ns(Num(run, "latency_ns.p99")));
      };
      for (const RowKey* key : keys) {
        const auto& by_transport = g.rows.at(*key);
        const auto& [t_, p_, frame, clients, batch] = *key;
        absl::StrAppend(&md, "| ", frame, " | ", clients, " |");
        if (batched) absl::StrAppend(&md, " ", batch, " |");
        for (const auto& t : transports) {
          auto it = by_transport.find(t);
          absl::StrAppend(&md, " ", it == by_transport.end() ? "-" : value(*it->second), " |");
        }
        std::vector<const Json*> kernel, kernel_b1;
        for (const Json* run : g.cells.at({t_, p_, frame, clients})) {
          if (!IsKernel(Str(*run, "transport"))) continue;
          kernel.push_back(run);
          if (BatchOf(*run) == 1) kernel_b1.push_back(run);
        }
        const Json* best = Best(kernel, metric);
        absl::StrAppend(&md, " ",
                        best == nullptr ? "-"
                                        : absl::StrCat(RunName(*best), ": ",
                                                       stream ? Si(Num(*best, metric))
                                                              : Ns(Num(*best, metric))),
                        " |");
        if (!have_shm) {
          absl::StrAppend(&md, "\n");
          continue;
        }
        auto shm_it = by_transport.find("shm");
        const Json* shm = shm_it == by_transport.end() ? nullptr : shm_it->second;
        const double shm_v = shm == nullptr ? std::nan("") : Num(*shm, metric);
        const double best_v = best == nullptr ? std::nan("") : Num(*best, metric);
        if (stream) {
          const Json* naive = Best(kernel_b1, metric);
          const double naive_v = naive == nullptr ? std::nan("") : Num(*naive, metric);
          absl::StrAppend(&md, " ", Ratio(shm_v, best_v), " | ",
                          naive == nullptr ? "-" : absl::StrCat(RunName(*naive), ": ", Si(naive_v)),
                          " | ", Ratio(shm_v, naive_v), " |");
        } else {
          absl::StrAppend(&md, " ", Ratio(best_v, shm_v), " |");
        }
        absl::StrAppend(&md, " ", shm == nullptr ? "-" : CpuPair(*shm), " | ",
                        best == nullptr ? "-" : CpuPair(*best), " |\n");
      }
      absl::StrAppend(&md, "\n");

      // What every run cost.
      absl::StrAppend(&md, "#### ", pattern, " cost: clients / server CPU seconds per million ",
                      pattern == "pingpong" ? "round trips" : "frames",
                      batched ? " (x mean frames per write or publish)" : "", "\n\n");
      absl::StrAppend(&md, "| frame B | clients |", batched ? " batch |" : "");
      for (const auto& t : transports) absl::StrAppend(&md, " ", t, " |");
      absl::StrAppend(&md, "\n| ---: | ---: |", batched ? " ---: |" : "");
      for (size_t i = 0; i < transports.size(); ++i) absl::StrAppend(&md, " ---: |");
      absl::StrAppend(&md, "\n");
      for (const RowKey* key : keys) {
        const auto& by_transport = g.rows.at(*key);
        absl::StrAppend(&md, "| ", std::get<2>(*key), " | ", std::get<3>(*key), " |");
        if (batched) absl::StrAppend(&md, " ", std::get<4>(*key), " |");
        for (const auto& t : transports) {
          auto it = by_transport.find(t);
          if (it == by_transport.end()) {
            absl::StrAppend(&md, " - |");
            continue;
          }
          absl::StrAppend(&md, " ", CpuPair(*it->second));
          const double per_flush = Num(*it->second, "frames_per_flush");
          if (batched && per_flush > 0) absl::StrAppend(&md, absl::StrFormat(" x%.1f", per_flush));
          absl::StrAppend(&md, " |");
        }
        absl::StrAppend(&md, "\n");
      }
      absl::StrAppend(&md, "\n");
    }
  }
  absl::StrAppend(&md, FanoutTables(runs));
  return md;
}

absl::Status WritePlots(const std::string& prefix, const std::vector<Json>& runs) {
  const std::vector<std::string> transports = TransportsIn(runs);
  // Runs of the plotted receiver: touch read when the set has any.
  std::string touch = "none";
  for (const auto& run : runs) {
    if (TouchOf(run) == "read") touch = "read";
  }
  std::vector<const Json*> set;
  for (const auto& run : runs) {
    if (TouchOf(run) == touch) set.push_back(&run);
  }
  // The frame size of the clients and latency plots: 64 bytes when present,
  // else the smallest; the batch plots: the smallest and largest stream
  // frame sizes.
  int frame = 0, small = 0, large = 0;
  int fewest_pingpong_clients = 0;
  for (const Json* run : set) {
    const int f = static_cast<int>(Num(*run, "frame_bytes"));
    if (frame == 0 || f == 64 || (frame != 64 && f < frame)) frame = f;
    if (Str(*run, "pattern") == "stream") {
      if (small == 0 || f < small) small = f;
      if (f > large) large = f;
    }
  }
  for (const Json* run : set) {
    if (Str(*run, "pattern") == "pingpong" && static_cast<int>(Num(*run, "frame_bytes")) == frame) {
      const int c = static_cast<int>(Num(*run, "clients"));
      if (fewest_pingpong_clients == 0 || c < fewest_pingpong_clients) fewest_pingpong_clients = c;
    }
  }
  std::ofstream throughput(prefix + "-throughput.dat");
  std::ofstream latency(prefix + "-latency.dat");
  std::ofstream cdf(prefix + "-cdf.dat");
  // gnuplot's "index" counts blocks, so every transport gets one in each file,
  // with a dummy point when it has no data (gnuplot skips the "?" row).
  for (const auto& t : transports) {
    std::map<int, const Json*> stream;  // clients -> the best batch's run
    std::vector<std::pair<int, const Json*>> pingpong;
    const Json* cdf_run = nullptr;
    for (const Json* run : set) {
      if (Str(*run, "transport") != t || static_cast<int>(Num(*run, "frame_bytes")) != frame)
        continue;
      const int clients = static_cast<int>(Num(*run, "clients"));
      if (Str(*run, "pattern") == "stream") {
        const Json*& best = stream[clients];
        if (best == nullptr || Num(*run, "frames_per_s") > Num(*best, "frames_per_s")) best = run;
      }
      if (Str(*run, "pattern") == "pingpong") {
        pingpong.emplace_back(clients, run);
        if (clients == fewest_pingpong_clients) cdf_run = run;
      }
    }
    std::sort(pingpong.begin(), pingpong.end());
    throughput << "\"" << t << "\"\n";
    if (stream.empty()) throughput << "? ? ?\n";
    for (const auto& [c, run] : stream) {
      throughput << c << " " << Num(*run, "frames_per_s") << " " << BatchOf(*run) << "\n";
    }
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
  // Stream frames/s against the batch setting, shm and uds, one block per
  // transport and client count, for the smallest and the largest frame.
  for (const auto& [suffix, f] : {std::pair<const char*, int>{"small", small}, {"large", large}}) {
    std::ofstream batch(absl::StrCat(prefix, "-batch-", suffix, ".dat"));
    std::map<std::pair<std::string, int>, std::map<int, double>> series;
    for (const Json* run : set) {
      const std::string t = Str(*run, "transport");
      if (Str(*run, "pattern") != "stream" || static_cast<int>(Num(*run, "frame_bytes")) != f ||
          (t != "shm" && t != "uds"))
        continue;
      series[{t, static_cast<int>(Num(*run, "clients"))}][BatchOf(*run)] =
          Num(*run, "frames_per_s");
    }
    if (series.empty()) batch << "\"none\"\n? ?\n\n\n";
    for (const auto& [name, points] : series) {
      batch << "\"" << name.first << " " << f << " B, " << name.second << " client"
            << (name.second == 1 ? "" : "s") << "\"\n";
      for (const auto& [b, v] : points) batch << b << " " << v << "\n";
      batch << "\n\n";
    }
  }
  // Fanout: deliveries/s against subscribers at 64 B and 64 KiB (or the
  // smallest and largest fanout frames).
  int fan_small = 0, fan_large = 0;
  for (const Json* run : set) {
    if (Str(*run, "pattern") != "fanout") continue;
    const int f = static_cast<int>(Num(*run, "frame_bytes"));
    if (fan_small == 0 || f < fan_small) fan_small = f;
    if (f > fan_large) fan_large = f;
  }
  WriteFanoutData(prefix, runs, fan_small, fan_large);
  const std::string gp_path = prefix + ".gp";
  {
    std::ofstream gp(gp_path);
    gp << "prefix = \"" << prefix << "\"\nframe = \"" << frame << "\"\nsmall = \"" << small
       << "\"\nlarge = \"" << large << "\"\nfanout_small = \"" << fan_small
       << "\"\nfanout_large = \"" << fan_large << "\"\nhas_stream = " << (small > 0 ? 1 : 0)
       << "\nhas_pingpong = " << (fewest_pingpong_clients > 0 ? 1 : 0)
       << "\nhas_fanout = " << (fan_small > 0 ? 1 : 0) << "\ntouch = \"" << touch << "\"\n"
       << kPlotsGp;
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
                                                       std::string_view suite) {
  const bool smoke_only = suite == "smoke";
  const Json* list = FindPath(targets, "targets");
  if (list == nullptr || !list->is_array()) {
    return absl::InvalidArgumentError("targets file: expected {\"targets\": [...]}");
  }
  std::vector<GateCheck> checks;
  for (const auto& t : *list) {
    const Json* smoke = FindPath(t, "smoke");
    if (smoke_only && (smoke == nullptr || !smoke->is_boolean() || !smoke->get<bool>())) continue;
    const std::string target_suite = Str(t, "suite");
    // Targets of a named suite (waiting, fanout) are checked only there.
    const bool own = suite == "waiting" || suite == "fanout";
    if (!smoke_only && target_suite != (own ? std::string(suite) : std::string())) continue;
    const double rate = Num(t, "rate");
    const double cpu_limit = Num(t, "cpu_limit");
    GateCheck check;
    check.name = Str(t, "name");
    check.description = Str(t, "description");
    const std::string metric = Str(t, "metric");
    const std::string pattern = Str(t, "pattern");
    const std::string numerator = Str(t, "numerator");
    const std::string denominator = Str(t, "denominator");
    const double clients = Num(t, "clients");
    const double frame = Num(t, "frame_bytes");
    const std::string touch = Str(t, "touch").empty() ? "read" : Str(t, "touch");
    check.min_ratio = Num(t, "min_ratio");
    if (check.name.empty() || metric.empty() || pattern.empty() || numerator.empty() ||
        denominator.empty() || std::isnan(clients) || std::isnan(frame) ||
        std::isnan(check.min_ratio)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets file: target '", check.name,
          "' needs name, metric, pattern, clients, frame_bytes, numerator, denominator, "
          "min_ratio"));
    }
    if (touch != "read" && touch != "none") {
      return absl::InvalidArgumentError(
          absl::StrCat("targets file: target '", check.name, "': touch is read or none"));
    }
    // A side is a transport, or best-kernel (uds, pipe, tcp); among its runs
    // the best over the batch settings wins, unless SIDE_batch names one.
    auto pick = [&](const std::string& side, const char* batch_key,
                    const char* wait_key) -> const Json* {
      const double batch = Num(t, batch_key);
      const std::string wait = Str(t, wait_key);
      std::vector<const Json*> candidates;
      for (const auto& run : runs) {
        const std::string transport = Str(run, "transport");
        if (side == "best-kernel" ? !IsKernel(transport) : transport != side) continue;
        if (Str(run, "pattern") != pattern || Num(run, "clients") != clients ||
            Num(run, "frame_bytes") != frame || TouchOf(run) != touch)
          continue;
        if (!std::isnan(batch) && BatchOf(run) != batch) continue;
        if (!wait.empty() && Str(run, "wait") != wait) continue;
        if (!std::isnan(rate) && Num(run, "rate") != rate) continue;
        if (!std::isnan(cpu_limit)) {
          const double limit = Num(run, "cpu_limit");
          if ((std::isnan(limit) ? 0.0 : limit) != cpu_limit) continue;
        }
        candidates.push_back(&run);
      }
      if (candidates.empty()) return nullptr;
      const Json* best = Best(candidates, metric);
      return best != nullptr ? best : candidates.front();
    };
    const Json* num = pick(numerator, "numerator_batch", "numerator_wait");
    const Json* den = pick(denominator, "denominator_batch", "denominator_wait");
    if (num != nullptr && den != nullptr) {
      check.found = true;
      check.numerator_run = suite == "waiting" ? VariantOf(*num) : RunName(*num);
      check.denominator_run = suite == "waiting" ? VariantOf(*den) : RunName(*den);
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
    if (c.found) {
      v["ratio"] = JsonNumber(std::round(c.ratio * 1000) / 1000);
      v["runs"] = absl::StrCat(c.numerator_run, " / ", c.denominator_run);
    }
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
      absl::FPrintF(out, "  %-7s %-34s %8.2fx (target >= %.2fx, %s / %s)  %s\n",
                    c.passed ? "PASS" : "FAIL", c.name, c.ratio, c.min_ratio, c.numerator_run,
                    c.denominator_run, c.description);
    }
  }
}

Json LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  in >> a >> b >> c;
  return Json::array({JsonNumber(a), JsonNumber(b), JsonNumber(c)});
}

std::string VariantOf(const Json& run) {
  const std::string t = Str(run, "transport");
  const std::string pref = Str(run, "wait_preference");
  return absl::StrCat(t, " ", t == "shm" && !pref.empty() ? pref : Str(run, "wait"));
}

namespace {

double CpuLimitOf(const Json& run) {
  const double l = Num(run, "cpu_limit");
  return std::isnan(l) ? 0.0 : l;
}

// A cell of the waiting suite: variant, pattern, clients, rate, limit, batch.
using WaitKey = std::tuple<double, std::string, double, int, std::string, int>;
WaitKey WaitKeyOf(const Json& run) {
  const double rate = Num(run, "rate");
  return {CpuLimitOf(run),
          Str(run, "pattern"),
          std::isnan(rate) ? 0.0 : rate,
          static_cast<int>(Num(run, "clients")),
          VariantOf(run),
          BatchOf(run)};
}

void SetPath(Json* v, std::string_view dotted, double value) {
  Json* at = v;
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(dotted.data(), dotted.size()), '.')) {
    at = &(*at)[std::string(part)];
  }
  *at = JsonNumber(value);
}

}  // namespace

std::vector<Json> MedianRuns(const std::vector<Json>& runs) {
  std::map<WaitKey, std::vector<const Json*>> cells;
  std::vector<WaitKey> order;
  for (const Json& run : runs) {
    auto& cell = cells[WaitKeyOf(run)];
    if (cell.empty()) order.push_back(WaitKeyOf(run));
    cell.push_back(&run);
  }
  std::vector<Json> out;
  for (const WaitKey& key : order) {
    const std::vector<const Json*>& cell = cells[key];
    Json m = *cell.front();
    m["repeats"] = cell.size();
    for (const char* path : {"frames_per_s", "latency_ns.p50", "latency_ns.p99",
                             "server_cpu_s_per_mframe", "throttle.share"}) {
      std::vector<double> v;
      for (const Json* r : cell) {
        const double x = Num(*r, path);
        if (!std::isnan(x)) v.push_back(x);
      }
      if (v.empty()) continue;
      std::sort(v.begin(), v.end());
      const double median =
          v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
      SetPath(&m, path, median);
      m[absl::StrReplaceAll(path, {{".", "_"}}) + std::string("_range")] =
          Json::array({JsonNumber(v.front()), JsonNumber(v.back())});
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::string WaitingTables(const std::vector<Json>& runs) {
  // Variants in a fixed order; columns only for those present.
  const std::vector<std::string> order = {"shm balanced", "shm latency", "shm efficiency",
                                          "uds park", "uds adaptive"};
  std::set<std::string> present;
  for (const Json& r : runs) present.insert(VariantOf(r));
  std::vector<std::string> variants;
  for (const auto& v : order) {
    if (present.count(v)) variants.push_back(v);
  }
  std::map<WaitKey, const Json*> by_key;
  std::set<std::tuple<double, std::string>> sections;
  std::map<std::tuple<double, std::string>, std::set<std::pair<double, int>>> rows;
  for (const Json& r : runs) {
    const WaitKey k = WaitKeyOf(r);
    by_key[k] = &r;
    sections.insert({std::get<0>(k), std::get<1>(k)});
    rows[{std::get<0>(k), std::get<1>(k)}].insert({std::get<2>(k), std::get<3>(k)});
  }
  auto find = [&](double limit, const std::string& pattern, double rate, int clients,
                  const std::string& variant) -> const Json* {
    for (int batch : {1, 64}) {
      auto it = by_key.find({limit, pattern, rate, clients, variant, batch});
      if (it != by_key.end()) return it->second;
    }
    return nullptr;
  };
  std::string md;
  // Sections: no limit first, then tighter limits.
  std::vector<std::tuple<double, std::string>> ordered(sections.begin(), sections.end());
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
    const double la = std::get<0>(a) == 0 ? 1e9 : std::get<0>(a);
    const double lb = std::get<0>(b) == 0 ? 1e9 : std::get<0>(b);
    if (la != lb) return la > lb;
    return std::get<1>(a) < std::get<1>(b);
  });
  for (const auto& [limit, pattern] : ordered) {
    const bool stream = pattern == "stream";
    absl::StrAppend(&md, "### ", pattern,
                    limit == 0 ? ", no CPU limit" : absl::StrFormat(", --cpu-limit %g", limit),
                    stream ? " (frames/s; server CPU-s per million frames)"
                    : pattern == "pingpong"
                        ? " (round trip p50 / p99; server CPU-s per million round trips)"
                        : " (latency from the intended send time p50 / p99; server "
                          "CPU-s per million frames)",
                    "\n\n| rate | clients |");
    for (const auto& v : variants) absl::StrAppend(&md, " ", v, " |");
    absl::StrAppend(
        &md,
        " balanced vs uds park (p99, CPU) | throttled (balanced / uds park) |\n| ---: | ---: |");
    for (size_t i = 0; i < variants.size(); ++i) md += " ---: |";
    md += " ---: | ---: |\n";
    for (const auto& [rate, clients] : rows[{limit, pattern}]) {
      absl::StrAppend(&md, "| ", rate > 0 ? Si(rate) : "-", " | ", clients, " |");
      for (const auto& v : variants) {
        const Json* r = find(limit, pattern, rate, clients, v);
        if (r == nullptr) {
          md += " - |";
          continue;
        }
        const std::string cpu = Cpu(Num(*r, "server_cpu_s_per_mframe"));
        if (stream) {
          absl::StrAppend(&md, " ", Si(Num(*r, "frames_per_s")), "; ", cpu, " |");
        } else {
          absl::StrAppend(&md, " ", Ns(Num(*r, "latency_ns.p50")), " / ",
                          Ns(Num(*r, "latency_ns.p99")), "; ", cpu, " |");
        }
      }
      const Json* bal = find(limit, pattern, rate, clients, "shm balanced");
      const Json* park = find(limit, pattern, rate, clients, "uds park");
      if (bal != nullptr && park != nullptr && !stream) {
        absl::StrAppend(
            &md, " ", Ratio(Num(*bal, "latency_ns.p99"), Num(*park, "latency_ns.p99")), ", ",
            Ratio(Num(*bal, "server_cpu_s_per_mframe"), Num(*park, "server_cpu_s_per_mframe")),
            " |");
      } else {
        md += " - |";
      }
      auto share = [](const Json* r) {
        const double s = r == nullptr ? std::nan("") : Num(*r, "throttle.share");
        return std::isnan(s) ? std::string("-") : absl::StrFormat("%.0f%%", 100 * s);
      };
      absl::StrAppend(&md, " ", share(bal), " / ", share(park), " |\n");
    }
    md += "\n";
  }
  md +=
      "Ratios are balanced / uds park (lower is better for shm: below 1.00x shm is faster or "
      "cheaper). Throttled: the share of CFS periods in the window in which the run's cgroup ran "
      "out of quota.\n\n";
  return md;
}

absl::Status WriteWaitingPlots(const std::string& prefix, const std::vector<Json>& runs) {
  const std::vector<std::string> variants = {"shm balanced", "shm latency", "shm efficiency",
                                             "uds park", "uds adaptive"};
  const double limits[] = {0, 1, 0.5};
  std::ofstream dat(prefix + "-waiting.dat");
  // One block per (limit, variant): rate, p99 (us), server CPU us per frame.
  for (double limit : limits) {
    for (const std::string& v : variants) {
      dat << "\"" << v << "\"\n";
      std::vector<const Json*> points;
      for (const Json& r : runs) {
        if (Str(r, "pattern") == "openloop" && Num(r, "clients") == 1 && CpuLimitOf(r) == limit &&
            VariantOf(r) == v) {
          points.push_back(&r);
        }
      }
      std::sort(points.begin(), points.end(),
                [](const Json* a, const Json* b) { return Num(*a, "rate") < Num(*b, "rate"); });
      if (points.empty()) dat << "? ? ?\n";
      for (const Json* r : points) {
        // CPU-s per million frames is also microseconds per frame.
        dat << Num(*r, "rate") << " " << Num(*r, "latency_ns.p99") / 1e3 << " "
            << Num(*r, "server_cpu_s_per_mframe") << "\n";
      }
      dat << "\n\n";
    }
  }
  dat.close();
  const std::string gp_path = prefix + "-waiting.gp";
  {
    std::ofstream gp(gp_path);
    gp << "prefix = \"" << prefix << "\"\n"
       << "set terminal pngcairo size 1500,800 noenhanced font \"sans,9\"\n"
          "set output prefix.\"-waiting.png\"\n"
          "set datafile missing \"?\"\n"
          "set grid\n"
          "set logscale xy\n"
          "set multiplot layout 2,3 title \"openloop, 1 client, 64 B: p99 latency from the "
          "intended send time (top) and server CPU per frame (bottom) against the rate, per "
          "wait strategy\"\n"
          "titles = \"no_limit cpu-limit_1 cpu-limit_0.5\"\n"
          "do for [l=0:2] {\n"
          "  set title word(titles, l+1)\n"
          "  set xlabel \"frames/s\"\n"
          "  set ylabel \"p99 (us)\"\n"
          "  if (l == 0) { set key top left font \",8\" } else { unset key }\n"
          "  plot for [i=0:4] prefix.\"-waiting.dat\" index (l*5+i) using 1:2 with linespoints "
          "pt 7 title columnheader(1)\n"
          "}\n"
          "do for [l=0:2] {\n"
          "  set title word(titles, l+1)\n"
          "  set ylabel \"server CPU us per frame\"\n"
          "  unset key\n"
          "  plot for [i=0:4] prefix.\"-waiting.dat\" index (l*5+i) using 1:3 with linespoints "
          "pt 7 title columnheader(1)\n"
          "}\n"
          "unset multiplot\n";
  }
  const std::string command = absl::StrCat("gnuplot '", gp_path, "' 2>&1");
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::FailedPreconditionError("cannot run gnuplot");
  std::string output;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  if (pclose(pipe) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("gnuplot failed (install gnuplot-nox, or pass --no-plots): ", output));
  }
  return absl::OkStatus();
}

}  // namespace shmlane::bench
