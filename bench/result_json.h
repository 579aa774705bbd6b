// The bench's JSON (result files, --json lines, bench/targets.json) on
// nlohmann-json, and the few conventions its files keep:
//
// - objects keep their keys in the order written (nlohmann::ordered_json),
//   so that result files diff well;
// - a measured number is stored as the files have always had it
//   (JsonNumber): an integer when integral, else 6 significant digits, null
//   when not finite (JSON has no NaN or infinity);
// - readers address nested fields with dotted paths ("latency_ns.p99", the
//   `metric` of a target).
//
// Thread safety: functions without shared state.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace shmlane::bench {

using Json = nlohmann::ordered_json;

// See above: null, an integer (|d| < 2^53, integral) or d to 6 significant
// digits.
Json JsonNumber(double d);

// The member at a dotted path; nullptr when absent or when a step is not an
// object.
const Json* FindPath(const Json& value, std::string_view dotted);
// The number at a dotted path, or NaN. The string at a dotted path, or "".
double NumberAt(const Json& value, std::string_view dotted);
std::string StringAt(const Json& value, std::string_view dotted);

// One JSON document (RFC 8259). InvalidArgument with the parser's message,
// which names the line and column of the error.
absl::StatusOr<Json> ParseJson(std::string_view text);

// Compact (one line), or indented by two spaces. Invalid UTF-8 in strings is
// replaced (U+FFFD) rather than thrown on.
std::string DumpJson(const Json& value, bool pretty = false);

}  // namespace shmlane::bench
