// shmlanectl's tables and JSON (see output.h).
#include "clients/cli/output.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "shmlane/enum_names.h"

namespace shmlane::cli {

using google::protobuf::util::TimeUtil;

std::string Json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string JsonLine(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string CodeName(grpc::StatusCode code) {
  // gRPC's codes are absl's canonical codes, number for number.
  const std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? absl::StrCat("CODE_", static_cast<int>(code)) : name;
}

std::string PrincipalName(const v1::Principal& principal) {
  switch (principal.kind_case()) {
    case v1::Principal::kUid:
      return absl::StrCat("uid:", principal.uid());
    case v1::Principal::kGid:
      return absl::StrCat("gid:", principal.gid());
    case v1::Principal::kAnyone:
      return "anyone";
    case v1::Principal::KIND_NOT_SET:
      break;
  }
  return "?";
}

std::string DurationText(const google::protobuf::Duration& duration) {
  const int64_t ns = TimeUtil::DurationToNanoseconds(duration);
  if (ns == 0) return "-";
  if (ns < 1000) return absl::StrCat(ns, "ns");
  if (ns < 1000000) return absl::StrFormat("%.1fus", static_cast<double>(ns) / 1e3);
  return absl::StrFormat("%.1fms", static_cast<double>(ns) / 1e6);
}

void PrintTable(const std::vector<std::vector<std::string>>& raw) {
  std::vector<std::vector<std::string>> rows = raw;
  for (auto& row : rows) {
    for (std::string& cell : row) cell = Printable(cell);
  }
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

void PrintChannels(const std::vector<v1::Channel>& channels) {
  std::vector<std::vector<std::string>> rows = {{"NAME", "PATTERN", "RING", "MAX_FRAME",
                                                 "PRODUCERS", "CONSUMER", "LANES", "OWNER",
                                                 "BACKPRESSURE", "WAIT"}};
  for (const v1::Channel& c : channels) {
    rows.push_back({c.spec().name(), ShortName(c.spec().pattern()),
                    absl::StrCat(c.spec().ring_bytes()), absl::StrCat(c.spec().max_frame_bytes()),
                    absl::StrCat(c.attached_producers(), "/", c.spec().max_producers()),
                    c.consumer_attached() ? "yes" : "no", absl::StrCat(c.lanes()),
                    absl::StrCat(c.owner_uid()), ShortName(c.spec().backpressure()),
                    ShortName(c.spec().wait_preference())});
  }
  PrintTable(rows);
}

void PrintGrants(const v1::ListGrantsResponse& grants) {
  std::vector<std::vector<std::string>> rows = {{"PRINCIPAL", "ROLE"}};
  rows.push_back({absl::StrCat("uid:", grants.owner_uid()), "admin (owner)"});
  for (const auto& g : grants.grants()) {
    rows.push_back({PrincipalName(g.principal()), ShortName(g.role())});
  }
  PrintTable(rows);
}

void PrintQuota(const v1::Quota& quota) {
  std::printf("uid %u%s\n", quota.uid(), quota.is_default() ? " (defaults)" : "");
  PrintTable({{"LIMIT", "USED", "MAX"},
              {"channels", absl::StrCat(quota.usage().channels()),
               absl::StrCat(quota.limits().max_channels())},
              {"shm_bytes", absl::StrCat(quota.usage().shm_bytes()),
               absl::StrCat(quota.limits().max_shm_bytes())},
              {"attachments", absl::StrCat(quota.usage().attachments()),
               absl::StrCat(quota.limits().max_attachments())},
              {"frame_bytes", "-", absl::StrCat(quota.limits().max_frame_bytes())}});
}

void PrintStats(const v1::ChannelStats& stats) {
  std::vector<std::vector<std::string>> rows = {
      {"LANE", "SENT", "RECEIVED", "BYTES_SENT", "OCCUPANCY", "CAPACITY", "BACKPRESSURE", "DROPPED",
       "WAKEUPS", "SPIN", "SPINS", "PARKS", "P50", "P90", "P99"}};
  auto row = [&](const std::string& id, const v1::LaneStats& l) {
    rows.push_back({id, absl::StrCat(l.frames_sent()), absl::StrCat(l.frames_received()),
                    absl::StrCat(l.bytes_sent()), absl::StrCat(l.occupancy_bytes()),
                    absl::StrCat(l.capacity_bytes()), absl::StrCat(l.backpressure_events()),
                    absl::StrCat(l.dropped_frames()), absl::StrCat(l.wakeups()),
                    DurationText(l.spin_time()), absl::StrCat(l.spin_waits()),
                    absl::StrCat(l.parks()), DurationText(l.latency_p50()),
                    DurationText(l.latency_p90()), DurationText(l.latency_p99())});
  };
  for (const auto& l : stats.lanes()) row(absl::StrCat(l.lane_id()), l);
  row("total", stats.total());
  if (stats.has_broadcast()) {
    PrintBroadcastStats(stats.name(), stats.total(), stats.broadcast());
    return;
  }
  std::printf("channel %s: %u live lanes\n", stats.name().c_str(), stats.live_lanes());
  PrintTable(rows);
}

void PrintBroadcastStats(const std::string& name, const v1::LaneStats& total,
                         const v1::BroadcastStats& b) {
  std::printf(
      "channel %s (broadcast): publisher %s, %u subscribers, ring %llu bytes; slowest lag %llu "
      "bytes\n",
      Printable(name).c_str(), b.publisher_attached() ? "attached" : "none", b.subscriber_count(),
      static_cast<unsigned long long>(b.ring_bytes()),
      static_cast<unsigned long long>(b.max_lag_bytes()));
  std::printf(
      "published %llu frames (%llu bytes), delivered %llu; missed %llu frames in %llu laps, %llu "
      "subscribers detached; publisher backpressure %llu, latency p50 %s p99 %s\n",
      static_cast<unsigned long long>(total.frames_sent()),
      static_cast<unsigned long long>(total.bytes_sent()),
      static_cast<unsigned long long>(total.frames_received()),
      static_cast<unsigned long long>(b.lapped_frames()), static_cast<unsigned long long>(b.laps()),
      static_cast<unsigned long long>(b.detached_subscribers()),
      static_cast<unsigned long long>(total.backpressure_events()),
      DurationText(total.latency_p50()).c_str(), DurationText(total.latency_p99()).c_str());
  if (b.subscribers_size() == 0) return;
  std::vector<std::vector<std::string>> rows = {{"SUBSCRIBER", "SLOT", "NAME", "LAG_BYTES",
                                                 "RECEIVED", "BYTES", "MISSED", "LAPS", "PARKS",
                                                 "P99"}};
  for (const v1::SubscriberStats& s : b.subscribers()) {
    rows.push_back({absl::StrCat(s.attachment_id()), absl::StrCat(s.slot()),
                    s.subscriber_name().empty() ? "-" : s.subscriber_name(),
                    absl::StrCat(s.lag_bytes()), absl::StrCat(s.frames_received()),
                    absl::StrCat(s.bytes_received()), absl::StrCat(s.lapped_frames()),
                    absl::StrCat(s.laps()), absl::StrCat(s.parks()),
                    DurationText(s.latency_p99())});
  }
  PrintTable(rows);
}

std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

void PrintEvent(const v1::Event& event) {
  const std::string who =
      event.attachment_id() != 0
          ? absl::StrCat("attachment=", event.attachment_id(), " uid=", event.uid(),
                         " gid=", event.gid(), " pid=", event.pid(), " ")
          : "";
  const std::string name =
      event.client_name().empty() ? "" : "name=" + Printable(event.client_name()) + " ";
  std::printf("%s %-20s %-16s %s%s%s\n", TimeUtil::ToString(event.time()).c_str(),
              ShortName(event.type()).c_str(), Printable(event.channel()).c_str(), who.c_str(),
              name.c_str(), Printable(event.detail()).c_str());
}

}  // namespace shmlane::cli
