// Fanout's part of the reports (report.h): the run's "fanout" object, the
// medians of repeated runs, the Markdown table and the plot data.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/loadgen/report.h"
#include "bench/loadgen/report_format.h"

namespace shmlane::bench {
namespace {

using namespace report_format;  // NOLINT(build/namespaces): the shared helpers

double Per(double value, double count) { return count > 0 ? value / count : std::nan(""); }

// A fanout cell: touch, frame_bytes, subscribers, batch, transport, wait.
using Cell = std::tuple<std::string, int, int, int, std::string, std::string>;
Cell CellOf(const Json& run) {
  return {Str(run, "touch"),
          static_cast<int>(Num(run, "frame_bytes")),
          static_cast<int>(Num(run, "clients")),
          BatchOf(run),
          Str(run, "transport"),
          Str(run, "wait")};
}

// The fields whose medians the fanout table shows.
constexpr const char* kMedianFields[] = {
    "frames_per_s",
    "latency_ns.p50",
    "latency_ns.p99",
    "fanout.per_subscriber_frames_per_s",
    "fanout.min_subscriber_frames_per_s",
    "fanout.publisher_copied_bytes_per_frame",
    "fanout.publisher_write_syscall_bytes_per_frame",
    "fanout.subscriber_read_syscall_bytes_per_delivery",
    "fanout.publisher_cpu_s_per_mframe",
    "fanout.subscribers_cpu_s_per_mdelivery",
};

}  // namespace

Json FanoutJson(const RunResult& run) {
  const FanoutResult& f = run.fanout;
  const Resources& r = run.resources;
  Json v = Json::object();
  const double published = static_cast<double>(f.total_published);
  v["subscribers"] = f.subscribers;
  v["deliveries_per_s"] = JsonNumber(std::round(run.frames_per_s));
  v["per_subscriber_frames_per_s"] = JsonNumber(std::round(f.per_subscriber_frames_per_s));
  v["min_subscriber_frames_per_s"] = JsonNumber(std::round(f.min_subscriber_frames_per_s));
  v["published_frames"] = f.published_frames;
  v["published_frames_per_s"] = JsonNumber(std::round(f.published_per_s));
  v["frames_published_total"] = f.total_published;
  v["delivered_bytes_per_frame"] = static_cast<uint64_t>(run.spec.frame_bytes) * f.subscribers;
  // What it took to get one frame to every subscriber (whole run).
  auto per_frame = [&](uint64_t bytes) {
    return published > 0 ? JsonNumber(std::round(10 * static_cast<double>(bytes) / published) / 10)
                         : Json(nullptr);
  };
  v["publisher_copied_bytes_per_frame"] = per_frame(f.publisher_copied_bytes);
  v["publisher_copies_per_frame"] =
      published > 0 ? JsonNumber(std::round(100 * static_cast<double>(f.publisher_copied_bytes) /
                                            published / run.spec.frame_bytes) /
                                 100)
                    : Json(nullptr);
  v["publisher_write_syscall_bytes_per_frame"] = per_frame(f.publisher_io_written);
  v["publisher_read_syscall_bytes_per_frame"] = per_frame(f.publisher_io_read);
  const double deliveries = published * f.subscribers;
  v["subscriber_read_syscall_bytes_per_delivery"] =
      deliveries > 0
          ? JsonNumber(std::round(10 * static_cast<double>(f.subscribers_io_read) / deliveries) /
                       10)
          : Json(nullptr);
  // CPU in the window: the publisher's per frame published, the
  // subscribers' (summed) per frame delivered.
  const double pub_cpu = (r.server.user_ns + r.server.sys_ns) / 1e9;
  const double sub_cpu = (r.clients.user_ns + r.clients.sys_ns) / 1e9;
  auto json_or_null = [](double x) { return std::isnan(x) ? Json(nullptr) : JsonNumber(x); };
  v["publisher_cpu_s_per_mframe"] =
      json_or_null(Per(pub_cpu, static_cast<double>(f.published_frames) / 1e6));
  v["subscribers_cpu_s_per_mdelivery"] =
      json_or_null(Per(sub_cpu, static_cast<double>(run.frames) / 1e6));
  return v;
}

std::vector<Json> FanoutMedians(const std::vector<Json>& runs) {
  std::map<Cell, std::vector<const Json*>> cells;
  std::vector<Cell> order;
  for (const Json& run : runs) {
    if (Str(run, "pattern") != "fanout") continue;
    auto& cell = cells[CellOf(run)];
    if (cell.empty()) order.push_back(CellOf(run));
    cell.push_back(&run);
  }
  std::vector<Json> out;
  for (const Cell& key : order) {
    const std::vector<const Json*>& cell = cells[key];
    Json m = *cell.front();
    m["repeats"] = cell.size();
    for (const char* path : kMedianFields) {
      const std::optional<ValueRange> v = MedianOf(cell, path);
      if (!v.has_value()) continue;
      SetPath(&m, path, v->median);
      if (std::string_view(path) == "frames_per_s") {
        m["frames_per_s_range"] = Json::array({JsonNumber(v->lo), JsonNumber(v->hi)});
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::string FanoutTables(const std::vector<Json>& runs) {
  const std::vector<Json> medians = FanoutMedians(runs);
  if (medians.empty()) return "";
  std::set<std::string> present;
  for (const Json& r : medians) present.insert(Str(r, "transport"));
  std::vector<std::string> transports;
  for (const char* t : kTransportOrder) {
    if (present.count(t)) transports.push_back(t);
  }
  // touch -> (frame, subscribers) -> transport -> best batch's median run.
  std::map<std::string, std::map<std::pair<int, int>, std::map<std::string, const Json*>>> rows;
  int repeats = 1;
  for (const Json& r : medians) {
    const std::string t = Str(r, "transport");
    const Json*& slot = rows[Str(r, "touch")][{static_cast<int>(Num(r, "frame_bytes")),
                                               static_cast<int>(Num(r, "clients"))}][t];
    if (slot == nullptr || Num(r, "frames_per_s") > Num(*slot, "frames_per_s")) slot = &r;
    repeats = std::max(repeats, static_cast<int>(Num(r, "repeats")));
  }
  std::string md;
  for (const auto& [touch, by_row] : rows) {
    absl::StrAppend(&md,
                    "### fanout: deliveries/s summed over the subscribers (higher is better); ",
                    touch == "read" ? "every subscriber reads every payload byte (`--touch read`)"
                                    : "**counting-only subscribers** (`--touch none`): a ceiling",
                    "\n\n");
    absl::StrAppend(
        &md,
        "One publisher process, N subscriber processes; every subscriber receives every frame. "
        "Each cell is the median of ",
        repeats,
        " run(s) at the transport's best batch in this set (shm: one BROADCAST ring, frames "
        "copied in once and read in place; uds, pipe, tcp: each batch written to every "
        "subscriber's socket; grpc: one server stream per subscriber). *best kernel*: the best "
        "of uds, pipe and tcp. The latency is one-way from the publisher's send time of every "
        "16th frame with the publisher saturated, so it is mostly queueing. *copied B/frame*: "
        "bytes the publisher copied into the transport per frame published (its write() bytes "
        "summed over the subscribers; shm: the payload copied into the ring); *sub read()* "
        "B/frame: /proc/self/io rchar per delivered frame at a subscriber. cpu: publisher CPU "
        "s per million frames published / subscribers' CPU s per million deliveries.\n\n");
    absl::StrAppend(&md, "| frame B | subscribers |");
    for (const auto& t : transports) absl::StrAppend(&md, " ", t, " |");
    absl::StrAppend(&md,
                    " best kernel | shm/best | shm/uds | per subscriber (shm / uds) | p50 / p99 "
                    "(shm) | p50 / p99 (uds) | copied B/frame (shm / uds) | sub read() B/frame "
                    "(shm / uds) | cpu shm | cpu uds |\n| ---: | ---: |");
    for (size_t i = 0; i < transports.size() + 10; ++i) absl::StrAppend(&md, " ---: |");
    absl::StrAppend(&md, "\n");
    for (const auto& [key, transport_runs] : by_row) {
      const auto& by_transport = transport_runs;  // a lambda cannot capture a binding
      absl::StrAppend(&md, "| ", key.first, " | ", key.second, " |");
      for (const auto& t : transports) {
        auto it = by_transport.find(t);
        if (it == by_transport.end()) {
          absl::StrAppend(&md, " - |");
          continue;
        }
        const Json& r = *it->second;
        absl::StrAppend(&md, " ", Si(Num(r, "frames_per_s")));
        const Json* range = FindPath(r, "frames_per_s_range");
        if (Num(r, "repeats") > 1 && range != nullptr && range->is_array() && range->size() == 2) {
          absl::StrAppend(&md, " [", Si((*range)[0].get<double>()), ", ",
                          Si((*range)[1].get<double>()), "]");
        }
        absl::StrAppend(&md, " b", BatchOf(r), " |");
      }
      const Json* best = nullptr;
      for (const char* k : {"uds", "pipe", "tcp"}) {
        auto it = by_transport.find(k);
        if (it != by_transport.end() &&
            (best == nullptr || Num(*it->second, "frames_per_s") > Num(*best, "frames_per_s"))) {
          best = it->second;
        }
      }
      auto get = [&](const char* t) -> const Json* {
        auto it = by_transport.find(t);
        return it == by_transport.end() ? nullptr : it->second;
      };
      const Json* shm = get("shm");
      const Json* uds = get("uds");
      auto num = [](const Json* r, const char* path) {
        return r == nullptr ? std::nan("") : Num(*r, path);
      };
      absl::StrAppend(
          &md, " ",
          best == nullptr
              ? "-"
              : absl::StrCat(Str(*best, "transport"), ": ", Si(Num(*best, "frames_per_s"))),
          " | ", Ratio(num(shm, "frames_per_s"), num(best, "frames_per_s")), " | ",
          Ratio(num(shm, "frames_per_s"), num(uds, "frames_per_s")), " | ",
          Si(num(shm, "fanout.per_subscriber_frames_per_s")), " / ",
          Si(num(uds, "fanout.per_subscriber_frames_per_s")), " | ", Ns(num(shm, "latency_ns.p50")),
          " / ", Ns(num(shm, "latency_ns.p99")), " | ", Ns(num(uds, "latency_ns.p50")), " / ",
          Ns(num(uds, "latency_ns.p99")), " | ",
          Fixed(num(shm, "fanout.publisher_copied_bytes_per_frame"), 0), " / ",
          Fixed(num(uds, "fanout.publisher_copied_bytes_per_frame"), 0), " | ",
          Fixed(num(shm, "fanout.subscriber_read_syscall_bytes_per_delivery"), 0), " / ",
          Fixed(num(uds, "fanout.subscriber_read_syscall_bytes_per_delivery"), 0), " | ",
          Fixed(num(shm, "fanout.publisher_cpu_s_per_mframe"), 2), " / ",
          Fixed(num(shm, "fanout.subscribers_cpu_s_per_mdelivery"), 2), " | ",
          Fixed(num(uds, "fanout.publisher_cpu_s_per_mframe"), 2), " / ",
          Fixed(num(uds, "fanout.subscribers_cpu_s_per_mdelivery"), 2), " |\n");
    }
    absl::StrAppend(&md, "\n");
  }
  return md;
}

void WriteFanoutData(const std::string& prefix, const std::vector<Json>& runs, int small,
                     int large) {
  const std::vector<Json> medians = FanoutMedians(runs);
  for (const auto& [suffix, f] : {std::pair<const char*, int>{"small", small}, {"large", large}}) {
    std::ofstream out(absl::StrCat(prefix, "-fanout-", suffix, ".dat"));
    bool any = false;
    for (const char* t : kTransportOrder) {
      std::map<int, double> points;  // subscribers -> best batch's deliveries/s
      for (const Json& r : medians) {
        if (Str(r, "transport") != t || static_cast<int>(Num(r, "frame_bytes")) != f ||
            Str(r, "touch") != "read")
          continue;
        double& best = points[static_cast<int>(Num(r, "clients"))];
        best = std::max(best, Num(r, "frames_per_s"));
      }
      if (points.empty()) continue;
      any = true;
      out << "\"" << t << "\"\n";
      for (const auto& [n, v] : points) out << n << " " << v << "\n";
      out << "\n\n";
    }
    if (!any) out << "\"none\"\n? ?\n\n\n";
  }
}

}  // namespace shmlane::bench
