// ChannelCatalog: the daemon's channel definitions (spec with defaults
// filled in, owner, creation time) and the rules for them: name and spec
// validation, defaults, the per-daemon channel bound, paging, and their part
// of the state file (state.proto's PersistedChannel, grants excepted: those
// belong to Access). It knows nothing of attachments or lanes.
//
// Thread safety: none of its own. The Registry owns the only instance and
// calls it with Registry::mu_ held (see registry.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dataplane/broadcast.h"
#include "dataplane/lane.h"
#include "shmlane/v1/control.pb.h"
#include "shmlane/v1/state.pb.h"

namespace shmlane::control {

// Bounds and defaults. docs/operations.md lists them for operators.
inline constexpr size_t kMaxChannels = 1024;  // per daemon
inline constexpr uint32_t kDefaultMaxProducers = 64;
inline constexpr uint32_t kMaxMaxProducers = 4096;
inline constexpr uint64_t kDefaultRingBytes = uint64_t{1} << 20;
inline constexpr uint32_t kDefaultMaxFrameBytes = 64 << 10;
inline constexpr uint32_t kDefaultSampleEvery = 64;
inline constexpr size_t kMaxLabels = 16;
// BROADCAST: subscribers at once by default, and at most (the data plane's bound).
inline constexpr uint32_t kDefaultMaxSubscribers = 32;
inline constexpr uint32_t kMaxMaxSubscribers = dataplane::kMaxBroadcastReaders;

// Validates a channel name: 1..63 chars of [a-z0-9._-], starting with [a-z0-9].
absl::Status ValidateChannelName(absl::string_view name);

// Fills defaults into a channel spec and checks every field; InvalidArgument
// names the field and what to do.
absl::StatusOr<shmlane::v1::ChannelSpec> NormalizeSpec(const shmlane::v1::ChannelSpec& in);

// The data-plane options of every lane of a (normalized) channel.
dataplane::LaneOptions LaneOptionsFor(const shmlane::v1::ChannelSpec& spec);
// The ring options of a normalized BROADCAST spec.
dataplane::BroadcastOptions BroadcastOptionsFor(const shmlane::v1::ChannelSpec& spec);

// One channel's definition.
struct ChannelRecord {
  shmlane::v1::ChannelSpec spec;  // normalized
  uint32_t owner_uid = 0;
  int64_t create_unix_ns = 0;
};

class ChannelCatalog {
 public:
  // NotFound with a message naming the channel.
  static absl::Status NotFound(absl::string_view name);

  // AlreadyExists or ResourceExhausted (kMaxChannels) if `name` cannot be
  // added now.
  absl::Status CheckCanAdd(absl::string_view name) const;
  // Adds a channel; CheckCanAdd must have passed.
  const ChannelRecord& Add(ChannelRecord record);
  void Remove(absl::string_view name);

  // nullptr if there is no such channel.
  const ChannelRecord* Find(absl::string_view name) const;
  // The channel, or NotFound.
  absl::StatusOr<const ChannelRecord*> Get(absl::string_view name) const;

  // Every channel in name order.
  std::vector<const ChannelRecord*> All() const;
  size_t size() const { return channels_.size(); }
  uint32_t OwnedBy(uint32_t uid) const;

  // State file: one PersistedChannel per channel (without grants).
  void Export(shmlane::v1::DaemonState* state) const;
  // Parses the channels of `state` into a new catalog (this one is left
  // unchanged); DataLoss names the first invalid channel.
  static absl::StatusOr<ChannelCatalog> Restore(const shmlane::v1::DaemonState& state);

 private:
  std::map<std::string, ChannelRecord, std::less<>> channels_;
};

}  // namespace shmlane::control
