#include "shmlane/enum_names.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace shmlane::internal {
namespace {

// "CHANNEL_PATTERN_" from CHANNEL_PATTERN_UNSPECIFIED (value 0).
std::string PrefixOf(const google::protobuf::EnumDescriptor* d) {
  const google::protobuf::EnumValueDescriptor* zero = d->FindValueByNumber(0);
  if (zero == nullptr) return "";
  const std::string& name = zero->name();
  constexpr absl::string_view kUnspecified = "UNSPECIFIED";
  return absl::EndsWith(name, kUnspecified) ? name.substr(0, name.size() - kUnspecified.size())
                                            : "";
}

}  // namespace

std::string ShortEnumName(const google::protobuf::EnumDescriptor* d, int value) {
  const google::protobuf::EnumValueDescriptor* v = d->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat(value);
  absl::string_view name = v->name();
  const std::string prefix = PrefixOf(d);
  if (absl::StartsWith(name, prefix)) name.remove_prefix(prefix.size());
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

absl::StatusOr<int> ParseShortEnumName(const google::protobuf::EnumDescriptor* d,
                                       absl::string_view name) {
  std::string wanted = absl::StrReplaceAll(absl::AsciiStrToUpper(name), {{"-", "_"}});
  const std::string prefix = PrefixOf(d);
  if (!absl::StartsWith(wanted, prefix)) wanted = prefix + wanted;
  const google::protobuf::EnumValueDescriptor* v = d->FindValueByName(wanted);
  if (v != nullptr && v->number() != 0) return v->number();
  std::string accepted;
  for (int i = 0; i < d->value_count(); ++i) {
    if (d->value(i)->number() == 0) continue;
    absl::StrAppend(&accepted, accepted.empty() ? "" : ", ",
                    ShortEnumName(d, d->value(i)->number()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", d->name(), " \"", name, "\"; use one of: ", accepted));
}

}  // namespace shmlane::internal
