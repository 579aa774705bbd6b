// The gate of the reports (report.h): bench/targets.json's ratio targets
// checked against a result set, as JSON and as a table.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/loadgen/report.h"
#include "bench/loadgen/report_format.h"

namespace shmlane::bench {

using namespace report_format;  // NOLINT(build/namespaces): the shared helpers

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

}  // namespace shmlane::bench
