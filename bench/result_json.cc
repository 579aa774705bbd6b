#include "bench/result_json.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace shmlane::bench {

Json JsonNumber(double d) {
  if (!std::isfinite(d)) return nullptr;
  if (d == std::floor(d) && std::fabs(d) < 9.007199254740992e15) return static_cast<int64_t>(d);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", d);
  return std::strtod(buf, nullptr);
}

const Json* FindPath(const Json& value, std::string_view dotted) {
  const Json* at = &value;
  while (true) {
    const size_t dot = dotted.find('.');
    const std::string_view key = dotted.substr(0, dot);
    if (!at->is_object()) return nullptr;
    const auto it = at->find(std::string(key));
    if (it == at->end()) return nullptr;
    at = &*it;
    if (dot == std::string_view::npos) return at;
    dotted.remove_prefix(dot + 1);
  }
}

double NumberAt(const Json& value, std::string_view dotted) {
  const Json* v = FindPath(value, dotted);
  return v != nullptr && v->is_number() ? v->get<double>() : NAN;
}

std::string StringAt(const Json& value, std::string_view dotted) {
  const Json* v = FindPath(value, dotted);
  return v != nullptr && v->is_string() ? v->get<std::string>() : "";
}

absl::StatusOr<Json> ParseJson(std::string_view text) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

std::string DumpJson(const Json& value, bool pretty) {
  return value.dump(pretty ? 2 : -1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace shmlane::bench
