// The waiting suite's part of the reports (report.h): the variant names,
// the medians of repeated runs per cell, the tables per CPU limit and
// pattern, and the plot of p99 and CPU per frame against rate.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "bench/loadgen/report.h"
#include "bench/loadgen/report_format.h"

namespace shmlane::bench {

using namespace report_format;  // NOLINT(build/namespaces): the shared helpers

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
      const std::optional<ValueRange> v = MedianOf(cell, path);
      if (!v.has_value()) continue;
      SetPath(&m, path, v->median);
      m[absl::StrReplaceAll(path, {{".", "_"}}) + std::string("_range")] =
          Json::array({JsonNumber(v->lo), JsonNumber(v->hi)});
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
  return RunGnuplot(gp_path);
}

}  // namespace shmlane::bench
