// shmlanectl's output: aligned tables for people and JSON (proto field
// names, every field) for scripts. Enum values print as their short names
// from the generated descriptors (shmlane/enum_names.h), gRPC codes as
// their canonical names.
//
// Thread safety: stateless; each function writes whole lines to stdout.
#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "shmlane/v1/control.pb.h"

namespace shmlane::cli {

// Pretty-printed JSON with every field, proto field names.
std::string Json(const google::protobuf::Message& message);
// One line of JSON (set fields only), for streams of results such as watch.
std::string JsonLine(const google::protobuf::Message& message);

// "INVALID_ARGUMENT" for grpc::StatusCode::INVALID_ARGUMENT.
std::string CodeName(grpc::StatusCode code);
// "uid:1000", "gid:50" or "anyone".
std::string PrincipalName(const v1::Principal& principal);
// "-" for zero, else ns, us or ms with one decimal.
std::string DurationText(const google::protobuf::Duration& duration);

// `text` with every byte outside printable ASCII shown as \xNN, so that
// names and details from other processes cannot drive the terminal.
std::string Printable(absl::string_view text);

// Prints rows as left-aligned columns, two spaces apart.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

void PrintChannels(const std::vector<v1::Channel>& channels);
void PrintGrants(const v1::ListGrantsResponse& grants);
void PrintQuota(const v1::Quota& quota);
void PrintStats(const v1::ChannelStats& stats);
// A BROADCAST channel's stats: publisher, subscribers and their lag, laps.
void PrintBroadcastStats(const std::string& name, const v1::LaneStats& total,
                         const v1::BroadcastStats& broadcast);
void PrintEvent(const v1::Event& event);

}  // namespace shmlane::cli
