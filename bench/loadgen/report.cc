#include "bench/loadgen/report.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "bench/loadgen/plots_gp.h"
#include "bench/loadgen/report_format.h"

namespace shmlane::bench {
namespace {

using namespace report_format;  // NOLINT(build/namespaces): the shared helpers

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

// "0.05 / 0.04": clients / server CPU seconds per million frames.
std::string CpuPair(const Json& run) {
  return absl::StrCat(Cpu(CpuPerMillion(run, "clients_cpu_s")), " / ",
                      Cpu(CpuPerMillion(run, "server_cpu_s")));
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
  return report_format::RunGnuplot(gp_path);
}

namespace report_format {

absl::Status RunGnuplot(const std::string& gp_path) {
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

std::optional<ValueRange> MedianOf(const std::vector<const Json*>& runs, std::string_view path) {
  std::vector<double> v;
  for (const Json* r : runs) {
    const double x = Num(*r, path);
    if (!std::isnan(x)) v.push_back(x);
  }
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return ValueRange{.median = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2,
                    .lo = v.front(),
                    .hi = v.back()};
}

}  // namespace report_format

Json LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  in >> a >> b >> c;
  return Json::array({JsonNumber(a), JsonNumber(b), JsonNumber(c)});
}

}  // namespace shmlane::bench
