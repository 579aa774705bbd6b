// Json: a small JSON value with a serializer and a strict parser, enough for
// the bench's result files and bench/targets.json (no external JSON library
// is packaged for the build).
//
// Objects keep their keys in insertion order so that result files diff well.
// Numbers are doubles; integers up to 2^53 round-trip exactly.
//
// Thread safety: a JsonValue is a value type; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace shmlane::bench {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  JsonValue() = default;
  static JsonValue Bool(bool b);
  static JsonValue Number(double d);
  static JsonValue String(std::string s);
  static JsonValue Array();
  static JsonValue Object();

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }
  const std::string& as_string() const { return string_; }
  const std::vector<JsonValue>& items() const { return items_; }
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }

  // Arrays: appends. Objects: sets (replacing an existing key). Both return *this.
  JsonValue& Append(JsonValue v);
  JsonValue& Set(std::string_view key, JsonValue v);
  JsonValue& Set(std::string_view key, double d) { return Set(key, Number(d)); }
  JsonValue& Set(std::string_view key, std::string_view s) {
    return Set(key, String(std::string(s)));
  }
  JsonValue& Set(std::string_view key, const char* s) { return Set(key, String(s)); }
  JsonValue& SetBool(std::string_view key, bool b) { return Set(key, Bool(b)); }

  // Object member lookup; nullptr when absent or not an object. A dotted path
  // ("latency_ns.p99") descends into nested objects.
  const JsonValue* Find(std::string_view key) const;
  const JsonValue* FindPath(std::string_view dotted) const;

  // Compact (one line) or indented by two spaces.
  std::string Serialize(bool pretty = false) const;

 private:
  void SerializeTo(std::string* out, bool pretty, int depth) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<JsonValue> items_;
  std::vector<std::pair<std::string, JsonValue>> members_;
};

// Parses one JSON document (RFC 8259, no extensions). InvalidArgument names
// the byte offset of the first error.
absl::StatusOr<JsonValue> ParseJson(std::string_view text);

}  // namespace shmlane::bench
