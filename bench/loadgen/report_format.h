// The formatting and field helpers the report files share (report.cc,
// report_fanout.cc, report_waiting.cc): numbers with SI or time units,
// ratios, CPU figures, and reading a run's JSON fields. Internal to
// bench/loadgen.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/loadgen/report.h"

namespace shmlane::bench::report_format {

// The transports in the order every table shows them.
inline constexpr const char* kTransportOrder[] = {"shm", "uds", "pipe", "tcp", "grpc"};

// 1.23M, 45.6k, ...; "-" for a missing or negative value.
inline std::string Si(double v) {
  if (!(v >= 0)) return "-";
  if (v >= 1e9) return absl::StrFormat("%.2fG", v / 1e9);
  if (v >= 1e6) return absl::StrFormat("%.2fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

// Nanoseconds as ns, us, ms or s; "-" for a missing value.
inline std::string Ns(double ns) {
  if (std::isnan(ns)) return "-";
  if (ns >= 1e9) return absl::StrFormat("%.2f s", ns / 1e9);
  if (ns >= 1e6) return absl::StrFormat("%.2f ms", ns / 1e6);
  if (ns >= 1e3) return absl::StrFormat("%.1f us", ns / 1e3);
  return absl::StrFormat("%.0f ns", ns);
}

inline std::string Kb(int64_t kb) {
  if (kb >= 1024) return absl::StrFormat("%.1f MiB", kb / 1024.0);
  return absl::StrCat(kb, " KiB");
}

inline std::string Fixed(double v, int digits) {
  return std::isnan(v) ? "-" : absl::StrFormat("%.*f", digits, v);
}

// "2.50x"; "-" unless both sides are positive.
inline std::string Ratio(double num, double den) {
  if (!(num > 0) || !(den > 0)) return "-";
  return absl::StrFormat("%.2fx", num / den);
}

// CPU seconds per million frames, with the digits that matter.
inline std::string Cpu(double v) {
  if (std::isnan(v)) return "-";
  if (v >= 10) return absl::StrFormat("%.0f", v);
  if (v >= 1) return absl::StrFormat("%.1f", v);
  return absl::StrFormat("%.2f", v);
}

inline double Num(const Json& run, std::string_view path) { return NumberAt(run, path); }
inline std::string Str(const Json& run, std::string_view key) { return StringAt(run, key); }

// A run's batch; 1 in files written before batching existed.
inline int BatchOf(const Json& run) {
  const double b = Num(run, "batch");
  return std::isnan(b) ? 1 : static_cast<int>(b);
}

// Sets the number at a dotted path ("latency_ns.p99"), creating objects.
inline void SetPath(Json* v, std::string_view dotted, double value) {
  Json* at = v;
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(dotted.data(), dotted.size()), '.')) {
    at = &(*at)[std::string(part)];
  }
  *at = JsonNumber(value);
}

// A run's receiver work; "none" in files written before --touch existed.
inline std::string TouchOf(const Json& run) {
  const std::string t = Str(run, "touch");
  return t.empty() ? "none" : t;
}

inline bool IsKernel(const std::string& transport) {
  return transport == "uds" || transport == "pipe" || transport == "tcp";
}

inline bool LowerIsBetter(std::string_view metric) {
  return metric.rfind("latency", 0) == 0 || metric.find("cpu") != std::string_view::npos;
}

// The run among `candidates` with the best `metric` (NaN-valued runs never win).
inline const Json* Best(const std::vector<const Json*>& candidates, std::string_view metric) {
  const Json* best = nullptr;
  const bool lower = LowerIsBetter(metric);
  for (const Json* run : candidates) {
    const double v = Num(*run, metric);
    if (!(v > 0)) continue;
    if (best == nullptr || (lower ? v < Num(*best, metric) : v > Num(*best, metric))) best = run;
  }
  return best;
}

// "uds b256" (or "uds" for pingpong, which never batches).
inline std::string RunName(const Json& run) {
  if (Str(run, "pattern") == "pingpong") return Str(run, "transport");
  return absl::StrCat(Str(run, "transport"), " b", BatchOf(run));
}

// The median and range of a field over repeated runs of one cell (runs
// without the field are left out; nothing when none has it).
struct ValueRange {
  double median, lo, hi;
};
std::optional<ValueRange> MedianOf(const std::vector<const Json*>& runs, std::string_view path);

// Runs gnuplot on a script the report wrote (report.cc); a clear error when
// gnuplot is missing or fails.
absl::Status RunGnuplot(const std::string& gp_path);

}  // namespace shmlane::bench::report_format
