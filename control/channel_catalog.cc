#include "control/channel_catalog.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;
using google::protobuf::util::TimeUtil;

dataplane::BackpressurePolicy ToPolicy(v1::BackpressurePolicy p) {
  switch (p) {
    case v1::BACKPRESSURE_POLICY_FAIL:
      return dataplane::BackpressurePolicy::kFailFast;
    case v1::BACKPRESSURE_POLICY_DROP:
      return dataplane::BackpressurePolicy::kDrop;
    default:
      return dataplane::BackpressurePolicy::kBlock;
  }
}

dataplane::SlowReaderPolicy ToSlowReaderPolicy(v1::SlowSubscriberPolicy p) {
  switch (p) {
    case v1::SLOW_SUBSCRIBER_POLICY_DROP_OLDEST:
      return dataplane::SlowReaderPolicy::kDropOldest;
    case v1::SLOW_SUBSCRIBER_POLICY_DISCONNECT:
      return dataplane::SlowReaderPolicy::kDisconnect;
    default:
      return dataplane::SlowReaderPolicy::kBlock;
  }
}

// BROADCAST options: defaults, bounds; refused on the other patterns.
absl::Status NormalizeBroadcast(v1::ChannelSpec& spec) {
  const bool broadcast = spec.pattern() == v1::CHANNEL_PATTERN_BROADCAST;
  if (!broadcast) {
    if (spec.slow_subscriber_policy() != v1::SLOW_SUBSCRIBER_POLICY_UNSPECIFIED ||
        spec.history_frames() != 0 || spec.max_subscribers() != 0) {
      return absl::InvalidArgumentError(
          "slow_subscriber_policy, history_frames and max_subscribers apply to BROADCAST "
          "channels only; leave them unset or use --pattern broadcast");
    }
    return absl::OkStatus();
  }
  if (spec.durable()) {
    return absl::InvalidArgumentError(
        "durable applies to STREAM and REQUEST_REPLY channels; a BROADCAST channel keeps "
        "history_frames for subscribers that join late instead");
  }
  if (spec.slow_subscriber_policy() == v1::SLOW_SUBSCRIBER_POLICY_UNSPECIFIED) {
    spec.set_slow_subscriber_policy(v1::SLOW_SUBSCRIBER_POLICY_BLOCK);
  }
  if (!v1::SlowSubscriberPolicy_IsValid(spec.slow_subscriber_policy())) {
    return absl::InvalidArgumentError(absl::StrCat("unknown slow_subscriber_policy ",
                                                   spec.slow_subscriber_policy(),
                                                   "; use BLOCK, DROP_OLDEST or DISCONNECT"));
  }
  if (spec.max_subscribers() == 0) spec.set_max_subscribers(kDefaultMaxSubscribers);
  if (spec.max_subscribers() > kMaxMaxSubscribers) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_subscribers ", spec.max_subscribers(), " exceeds ", kMaxMaxSubscribers));
  }
  // One publisher per channel (docs/architecture.md).
  if (spec.max_producers() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_producers ", spec.max_producers(),
                     ": a BROADCAST channel has exactly one publisher; leave it unset"));
  }
  spec.set_max_producers(1);
  return absl::OkStatus();
}

bool IsLabelKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
         c == '/';
}

}  // namespace

absl::Status ValidateChannelName(absl::string_view name) {
  if (name.empty() || name.size() > 63) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel name must be 1..63 characters, got ", name.size()));
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel name \"", name, "\" must start with a lower-case letter or digit"));
  }
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("channel name \"", name,
                       "\" may only contain [a-z0-9._-] (found a disallowed character)"));
    }
  }
  return absl::OkStatus();
}

dataplane::LaneOptions LaneOptionsFor(const v1::ChannelSpec& spec) {
  dataplane::LaneOptions options;
  options.ring_bytes = spec.ring_bytes();
  options.max_frame_bytes = spec.max_frame_bytes();
  options.policy = ToPolicy(spec.backpressure());
  options.sample_every = spec.latency_sample_every();
  return options;
}

dataplane::BroadcastOptions BroadcastOptionsFor(const v1::ChannelSpec& spec) {
  dataplane::BroadcastOptions options;
  options.ring_bytes = spec.ring_bytes();
  options.max_frame_bytes = spec.max_frame_bytes();
  options.policy = ToSlowReaderPolicy(spec.slow_subscriber_policy());
  options.max_readers = spec.max_subscribers();
  options.history_frames = spec.history_frames();
  options.sample_every = spec.latency_sample_every();
  return options;
}

absl::StatusOr<v1::ChannelSpec> NormalizeSpec(const v1::ChannelSpec& in) {
  v1::ChannelSpec spec = in;
  if (absl::Status s = ValidateChannelName(spec.name()); !s.ok()) return s;
  if (spec.pattern() == v1::CHANNEL_PATTERN_UNSPECIFIED) {
    spec.set_pattern(v1::CHANNEL_PATTERN_STREAM);
  }
  if (spec.pattern() != v1::CHANNEL_PATTERN_STREAM &&
      spec.pattern() != v1::CHANNEL_PATTERN_REQUEST_REPLY &&
      spec.pattern() != v1::CHANNEL_PATTERN_BROADCAST) {
    return absl::InvalidArgumentError(absl::StrCat("unknown pattern ", spec.pattern(),
                                                   "; use STREAM, REQUEST_REPLY or BROADCAST"));
  }
  const bool broadcast = spec.pattern() == v1::CHANNEL_PATTERN_BROADCAST;
  if (absl::Status s = NormalizeBroadcast(spec); !s.ok()) return s;
  if (spec.ring_bytes() == 0) spec.set_ring_bytes(kDefaultRingBytes);
  const uint64_t ring = spec.ring_bytes();
  if (ring < dataplane::kMinRingBytes || ring > dataplane::kMaxRingBytes ||
      (ring & (ring - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring_bytes ", ring, " must be a power of two between ", dataplane::kMinRingBytes, " and ",
        dataplane::kMaxRingBytes, " (for example 1048576)"));
  }
  const uint64_t frame_bound =
      broadcast ? dataplane::MaxBroadcastFrameBytesFor(ring) : dataplane::MaxFrameBytesFor(ring);
  if (spec.max_frame_bytes() == 0) {
    spec.set_max_frame_bytes(
        static_cast<uint32_t>(std::min<uint64_t>(kDefaultMaxFrameBytes, frame_bound)));
  }
  if (spec.max_frame_bytes() > frame_bound) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_frame_bytes ", spec.max_frame_bytes(), " is larger than ring_bytes/2 - ",
                     broadcast ? 32 : 16, " = ", frame_bound, " for ring_bytes ", ring,
                     "; raise ring_bytes or lower max_frame_bytes"));
  }
  if (spec.max_producers() == 0) spec.set_max_producers(kDefaultMaxProducers);
  if (spec.max_producers() > kMaxMaxProducers) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_producers ", spec.max_producers(), " exceeds ", kMaxMaxProducers));
  }
  if (spec.backpressure() == v1::BACKPRESSURE_POLICY_UNSPECIFIED) {
    spec.set_backpressure(v1::BACKPRESSURE_POLICY_BLOCK);
  }
  if (!v1::BackpressurePolicy_IsValid(spec.backpressure())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown backpressure policy ", spec.backpressure(), "; use BLOCK, FAIL or DROP"));
  }
  if (spec.wait_preference() == v1::WAIT_PREFERENCE_UNSPECIFIED) {
    spec.set_wait_preference(v1::WAIT_PREFERENCE_BALANCED);
  }
  if (!v1::WaitPreference_IsValid(spec.wait_preference())) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown wait preference ", spec.wait_preference(),
                     "; use BALANCED (the default), LATENCY or EFFICIENCY"));
  }
  if (spec.disable_latency_sampling()) {
    spec.set_latency_sample_every(0);
  } else if (spec.latency_sample_every() == 0) {
    spec.set_latency_sample_every(kDefaultSampleEvery);
  }
  if (spec.labels_size() > static_cast<int>(kMaxLabels)) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.labels_size(), " labels; at most ", kMaxLabels, " are allowed"));
  }
  for (const auto& [key, value] : spec.labels()) {
    if (key.empty() || key.size() > 63 || !std::all_of(key.begin(), key.end(), IsLabelKeyChar)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label key \"", key.substr(0, 64), "\" must be 1..63 characters of [a-z0-9_./-]"));
    }
    if (value.size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("label \"", key, "\" has a value longer than 255 bytes"));
    }
  }
  if (absl::Status s = broadcast ? dataplane::ValidateBroadcastOptions(BroadcastOptionsFor(spec))
                                 : dataplane::ValidateLaneOptions(LaneOptionsFor(spec));
      !s.ok()) {
    return s;
  }
  return spec;
}

absl::Status ChannelCatalog::NotFound(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("channel \"", name, "\" does not exist"));
}

absl::Status ChannelCatalog::CheckCanAdd(absl::string_view name) const {
  if (channels_.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "channel \"", name, "\" already exists; delete it first or pick another name"));
  }
  if (channels_.size() >= kMaxChannels) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the daemon already holds ", kMaxChannels, " channels; delete unused ones"));
  }
  return absl::OkStatus();
}

const ChannelRecord& ChannelCatalog::Add(ChannelRecord record) {
  std::string name = record.spec.name();
  return channels_.insert_or_assign(std::move(name), std::move(record)).first->second;
}

void ChannelCatalog::Remove(absl::string_view name) {
  if (auto it = channels_.find(name); it != channels_.end()) channels_.erase(it);
}

const ChannelRecord* ChannelCatalog::Find(absl::string_view name) const {
  auto it = channels_.find(name);
  return it == channels_.end() ? nullptr : &it->second;
}

absl::StatusOr<const ChannelRecord*> ChannelCatalog::Get(absl::string_view name) const {
  const ChannelRecord* record = Find(name);
  if (record == nullptr) return NotFound(name);
  return record;
}

std::vector<const ChannelRecord*> ChannelCatalog::All() const {
  std::vector<const ChannelRecord*> out;
  out.reserve(channels_.size());
  for (const auto& [name, record] : channels_) out.push_back(&record);
  return out;
}

uint32_t ChannelCatalog::OwnedBy(uint32_t uid) const {
  uint32_t n = 0;
  for (const auto& [name, record] : channels_) n += record.owner_uid == uid ? 1 : 0;
  return n;
}

void ChannelCatalog::Export(v1::DaemonState* state) const {
  for (const auto& [name, record] : channels_) {
    v1::PersistedChannel* pc = state->add_channels();
    *pc->mutable_spec() = record.spec;
    pc->set_owner_uid(record.owner_uid);
    *pc->mutable_create_time() = TimeUtil::NanosecondsToTimestamp(record.create_unix_ns);
  }
}

absl::StatusOr<ChannelCatalog> ChannelCatalog::Restore(const v1::DaemonState& state) {
  ChannelCatalog out;
  for (const v1::PersistedChannel& pc : state.channels()) {
    absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(pc.spec());
    if (!spec.ok()) {
      return absl::DataLossError(
          absl::StrCat("state file holds an invalid channel: ", spec.status().message()));
    }
    ChannelRecord record;
    record.spec = *std::move(spec);
    record.owner_uid = pc.owner_uid();
    record.create_unix_ns = TimeUtil::TimestampToNanoseconds(pc.create_time());
    out.Add(std::move(record));
  }
  return out;
}

}  // namespace shmlane::control
