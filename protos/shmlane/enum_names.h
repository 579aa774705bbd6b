// Short, user-facing names for the protocol enums, derived from protobuf's
// generated descriptors instead of hand-written tables: the value
// CHANNEL_PATTERN_REQUEST_REPLY of enum ChannelPattern is "request-reply".
// The prefix is the enum's `*_UNSPECIFIED` value name without UNSPECIFIED
// (every shmlane.v1 enum starts with one, see protos/README.md).
//
// Thread safety: pure functions over immutable descriptors.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"

namespace shmlane {

namespace internal {
std::string ShortEnumName(const google::protobuf::EnumDescriptor* descriptor, int value);
absl::StatusOr<int> ParseShortEnumName(const google::protobuf::EnumDescriptor* descriptor,
                                       absl::string_view name);
}  // namespace internal

// "request-reply" for CHANNEL_PATTERN_REQUEST_REPLY; "unspecified" for 0; the
// number for a value this build does not know.
template <typename Enum>
std::string ShortName(Enum value) {
  return internal::ShortEnumName(google::protobuf::GetEnumDescriptor<Enum>(),
                                 static_cast<int>(value));
}

// The inverse of ShortName, case-insensitive, also taking '_' for '-' and the
// full generated name. InvalidArgument lists the accepted names. The
// UNSPECIFIED value is not accepted.
template <typename Enum>
absl::StatusOr<Enum> ParseShortName(absl::string_view name) {
  absl::StatusOr<int> v =
      internal::ParseShortEnumName(google::protobuf::GetEnumDescriptor<Enum>(), name);
  if (!v.ok()) return v.status();
  return static_cast<Enum>(*v);
}

// The accepted names of Enum, "a|b|c", for help texts.
template <typename Enum>
std::string ShortNames() {
  const google::protobuf::EnumDescriptor* d = google::protobuf::GetEnumDescriptor<Enum>();
  std::string out;
  for (int i = 0; i < d->value_count(); ++i) {
    if (d->value(i)->number() == 0) continue;
    if (!out.empty()) out += '|';
    out += internal::ShortEnumName(d, d->value(i)->number());
  }
  return out;
}

}  // namespace shmlane
