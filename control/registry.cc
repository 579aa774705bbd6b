#include "control/registry.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "control/attach_wire.h"
#include "google/protobuf/util/time_util.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;
using google::protobuf::util::TimeUtil;

bool IsClientSide(v1::Role role) { return role == v1::ROLE_PRODUCER || role == v1::ROLE_CLIENT; }

const char* RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_PRODUCER:
      return "producer";
    case v1::ROLE_CONSUMER:
      return "consumer";
    case v1::ROLE_CLIENT:
      return "client";
    case v1::ROLE_SERVER:
      return "server";
    default:
      return "unspecified";
  }
}

const char* GrantRoleName(v1::GrantRole role) {
  switch (role) {
    case v1::GRANT_ROLE_PRODUCE:
      return "produce";
    case v1::GRANT_ROLE_CONSUME:
      return "consume";
    case v1::GRANT_ROLE_ADMIN:
      return "admin";
    default:
      return "unspecified";
  }
}

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

bool IsLabelKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
         c == '/';
}

// Fills defaults and checks every field of a channel spec.
absl::StatusOr<v1::ChannelSpec> NormalizeSpec(const v1::ChannelSpec& in) {
  v1::ChannelSpec spec = in;
  if (absl::Status s = ValidateChannelName(spec.name()); !s.ok()) return s;
  if (spec.pattern() == v1::CHANNEL_PATTERN_UNSPECIFIED) {
    spec.set_pattern(v1::CHANNEL_PATTERN_STREAM);
  }
  if (spec.pattern() != v1::CHANNEL_PATTERN_STREAM &&
      spec.pattern() != v1::CHANNEL_PATTERN_REQUEST_REPLY) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown pattern ", spec.pattern(), "; use STREAM or REQUEST_REPLY"));
  }
  if (spec.ring_bytes() == 0) spec.set_ring_bytes(kDefaultRingBytes);
  const uint64_t ring = spec.ring_bytes();
  if (ring < dataplane::kMinRingBytes || ring > dataplane::kMaxRingBytes ||
      (ring & (ring - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring_bytes ", ring, " must be a power of two between ", dataplane::kMinRingBytes, " and ",
        dataplane::kMaxRingBytes, " (for example 1048576)"));
  }
  const uint64_t frame_bound = dataplane::MaxFrameBytesFor(ring);
  if (spec.max_frame_bytes() == 0) {
    spec.set_max_frame_bytes(
        static_cast<uint32_t>(std::min<uint64_t>(kDefaultMaxFrameBytes, frame_bound)));
  }
  if (spec.max_frame_bytes() > frame_bound) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_frame_bytes ", spec.max_frame_bytes(), " is larger than ring_bytes/2 - 16 = ",
        frame_bound, " for ring_bytes ", ring, "; raise ring_bytes or lower max_frame_bytes"));
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
  dataplane::LaneOptions options;
  options.ring_bytes = spec.ring_bytes();
  options.max_frame_bytes = spec.max_frame_bytes();
  options.policy = ToPolicy(spec.backpressure());
  options.sample_every = spec.latency_sample_every();
  if (absl::Status s = dataplane::ValidateLaneOptions(options); !s.ok()) return s;
  return spec;
}

absl::Status ValidateGrant(const v1::Grant& grant) {
  switch (grant.principal().kind_case()) {
    case v1::Principal::kUid:
    case v1::Principal::kGid:
      break;
    case v1::Principal::kAnyone:
      if (!grant.principal().anyone()) {
        return absl::InvalidArgumentError("principal.anyone must be true when set");
      }
      break;
    default:
      return absl::InvalidArgumentError("grant needs a principal: uid, gid or anyone");
  }
  if (grant.role() != v1::GRANT_ROLE_PRODUCE && grant.role() != v1::GRANT_ROLE_CONSUME &&
      grant.role() != v1::GRANT_ROLE_ADMIN) {
    return absl::InvalidArgumentError("grant needs a role: PRODUCE, CONSUME or ADMIN");
  }
  return absl::OkStatus();
}

bool SameGrant(const v1::Grant& a, const v1::Grant& b) {
  if (a.role() != b.role() || a.principal().kind_case() != b.principal().kind_case()) return false;
  switch (a.principal().kind_case()) {
    case v1::Principal::kUid:
      return a.principal().uid() == b.principal().uid();
    case v1::Principal::kGid:
      return a.principal().gid() == b.principal().gid();
    default:
      return true;
  }
}

std::string DescribeUsage(uint32_t uid) { return absl::StrCat("uid ", uid); }

}  // namespace

void LaneTotals::Add(const dataplane::LaneSnapshot& s) {
  frames_sent += s.producer.frames;
  bytes_sent += s.producer.bytes;
  frames_received += s.consumer.frames;
  bytes_received += s.consumer.bytes;
  backpressure_events += s.producer.backpressure_events;
  dropped_frames += s.producer.dropped_frames;
  wakeups += s.producer.wakeups_sent + s.consumer.wakeups_sent;
  latency_count += s.consumer.latency_count;
  latency_sum_ns += s.consumer.latency_sum_ns;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    latency_buckets[i] += s.consumer.latency_buckets[i];
  }
}

void LaneTotals::Add(const LaneTotals& o) {
  frames_sent += o.frames_sent;
  bytes_sent += o.bytes_sent;
  frames_received += o.frames_received;
  bytes_received += o.bytes_received;
  backpressure_events += o.backpressure_events;
  dropped_frames += o.dropped_frames;
  wakeups += o.wakeups;
  latency_count += o.latency_count;
  latency_sum_ns += o.latency_sum_ns;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    latency_buckets[i] += o.latency_buckets[i];
  }
}

uint64_t LatencyQuantileNs(const uint64_t (&buckets)[dataplane::kLatencyBuckets], double q) {
  uint64_t total = 0;
  for (uint64_t b : buckets) total += b;
  if (total == 0) return 0;
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  uint64_t seen = 0;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    seen += buckets[i];
    if (seen >= rank && seen > 0) {
      // The open-ended last bucket reports its lower bound.
      return i + 1 >= dataplane::kLatencyBuckets ? dataplane::LatencyBucketUpperNs(i - 1)
                                                 : dataplane::LatencyBucketUpperNs(i);
    }
  }
  return dataplane::LatencyBucketUpperNs(dataplane::kLatencyBuckets - 2);
}

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

Registry::Registry(RegistryOptions options) : options_(options) {}

Registry::~Registry() = default;

// ---------------------------------------------------------------------------
// Control plane.

v1::Channel Registry::DescribeLocked(const Channel& channel) const {
  v1::Channel out;
  *out.mutable_spec() = channel.spec;
  out.set_owner_uid(channel.owner_uid);
  *out.mutable_create_time() = TimeUtil::NanosecondsToTimestamp(channel.create_unix_ns);
  out.set_attached_producers(static_cast<uint32_t>(channel.client_attachments.size()));
  out.set_consumer_attached(channel.consumer_attachment != 0);
  out.set_lanes(static_cast<uint32_t>(channel.lanes.size()));
  return out;
}

absl::StatusOr<v1::Channel> Registry::CreateChannel(const v1::CreateChannelRequest& req) {
  absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(req.spec());
  if (!spec.ok()) return spec.status();
  const uint32_t owner = req.has_owner_uid() ? req.owner_uid() : options_.daemon_uid;
  absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
  if (!bell.ok()) return bell.status();
  absl::MutexLock lock(&mu_);
  if (channels_.count(spec->name()) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "channel \"", spec->name(), "\" already exists; delete it first or pick another name"));
  }
  if (channels_.size() >= kMaxChannels) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the daemon already holds ", kMaxChannels, " channels; delete unused ones"));
  }
  const v1::QuotaLimits limits = LimitsLocked(owner);
  const uint32_t owned = ChannelsOwnedLocked(owner);
  if (owned >= limits.max_channels()) {
    options_.metrics->CountQuotaRejection();
    return absl::ResourceExhaustedError(absl::StrCat(
        "quota max_channels: uid ", owner, " already owns ", owned, " of ", limits.max_channels(),
        " channels; delete one or raise it with `shmlanectl quota set --uid ", owner,
        " --max-channels N`"));
  }
  if (spec->max_frame_bytes() > limits.max_frame_bytes()) {
    options_.metrics->CountQuotaRejection();
    return absl::ResourceExhaustedError(absl::StrCat(
        "quota max_frame_bytes: uid ", owner, " may create channels with frames up to ",
        limits.max_frame_bytes(), " bytes, asked for ", spec->max_frame_bytes(),
        "; raise it with `shmlanectl quota set --uid ", owner, " --max-frame-bytes N`"));
  }
  Channel channel;
  channel.spec = *spec;
  channel.owner_uid = owner;
  channel.create_unix_ns = absl::GetCurrentTimeNanos();
  channel.consumer_bell = std::make_shared<dataplane::Doorbell>(*std::move(bell));
  auto [it, inserted] = channels_.emplace(spec->name(), std::move(channel));
  PublishLocked(v1::EVENT_TYPE_CHANNEL_CREATED, spec->name(), nullptr,
                absl::StrCat("owner uid ", owner));
  return DescribeLocked(it->second);
}

absl::StatusOr<v1::Channel> Registry::GetChannel(absl::string_view name) const {
  if (absl::Status s = ValidateChannelName(name); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(name);
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", name, "\" does not exist"));
  }
  return DescribeLocked(it->second);
}

absl::StatusOr<v1::ListChannelsResponse> Registry::ListChannels(
    const v1::ListChannelsRequest& req) const {
  if (req.page_size() < 0 || req.page_size() > 1000) {
    return absl::InvalidArgumentError("page_size must be between 0 (default 100) and 1000");
  }
  const size_t page_size = req.page_size() == 0 ? 100 : static_cast<size_t>(req.page_size());
  if (!req.page_token().empty()) {
    if (absl::Status s = ValidateChannelName(req.page_token()); !s.ok()) {
      return absl::InvalidArgumentError(
          "page_token is not one this daemon returned; start again without a token");
    }
  }
  absl::MutexLock lock(&mu_);
  v1::ListChannelsResponse out;
  auto it = req.page_token().empty() ? channels_.begin() : channels_.upper_bound(req.page_token());
  for (; it != channels_.end() && static_cast<size_t>(out.channels_size()) < page_size; ++it) {
    *out.add_channels() = DescribeLocked(it->second);
  }
  if (it != channels_.end() && out.channels_size() > 0) {
    out.set_next_page_token(out.channels(out.channels_size() - 1).spec().name());
  }
  return out;
}

absl::StatusOr<v1::DeleteChannelResponse> Registry::DeleteChannel(
    const v1::DeleteChannelRequest& req) {
  if (absl::Status s = ValidateChannelName(req.name()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(req.name());
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", req.name(), "\" does not exist"));
  }
  Channel& channel = it->second;
  const size_t attached = channel.client_attachments.size() + (channel.consumer_attachment ? 1 : 0);
  if (attached > 0 && !req.force()) {
    return absl::FailedPreconditionError(
        absl::StrCat("channel \"", req.name(), "\" has ", attached,
                     " attached processes; detach them first or delete with force "
                     "(`shmlanectl channels delete ",
                     req.name(), " --force`), which closes their lanes"));
  }
  std::vector<uint64_t> lane_ids;
  for (const auto& [id, lane] : channel.lanes) lane_ids.push_back(id);
  for (uint64_t id : lane_ids) {
    RetireLaneLocked(channel, id, dataplane::kClosedDeleted, "channel deleted",
                     /*tell_consumer=*/false);
  }
  std::vector<uint64_t> ended = channel.client_attachments;
  if (channel.consumer_attachment != 0) ended.push_back(channel.consumer_attachment);
  const std::string goodbye = absl::StrCat("channel \"", req.name(), "\" was deleted");
  for (uint64_t id : ended) {
    EndAttachmentLocked(id, v1::EVENT_TYPE_DETACHED, "channel deleted", goodbye);
  }
  channels_.erase(req.name());
  PublishLocked(v1::EVENT_TYPE_CHANNEL_DELETED, req.name(), nullptr,
                req.force() ? absl::StrCat("forced; ", ended.size(), " attachments ended") : "");
  v1::DeleteChannelResponse out;
  out.set_detached_clients(static_cast<uint32_t>(ended.size()));
  return out;
}

absl::StatusOr<bool> Registry::AddGrant(const v1::AddGrantRequest& req) {
  if (absl::Status s = ValidateChannelName(req.channel()); !s.ok()) return s;
  if (absl::Status s = ValidateGrant(req.grant()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(req.channel());
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", req.channel(), "\" does not exist"));
  }
  for (const v1::Grant& g : it->second.grants) {
    if (SameGrant(g, req.grant())) return false;
  }
  if (it->second.grants.size() >= kMaxGrantsPerChannel) {
    return absl::ResourceExhaustedError(
        absl::StrCat("channel \"", req.channel(), "\" has ", kMaxGrantsPerChannel,
                     " grants already; grant to a group instead of single uids"));
  }
  it->second.grants.push_back(req.grant());
  return true;
}

absl::StatusOr<bool> Registry::RemoveGrant(const v1::RemoveGrantRequest& req) {
  if (absl::Status s = ValidateChannelName(req.channel()); !s.ok()) return s;
  if (absl::Status s = ValidateGrant(req.grant()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(req.channel());
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", req.channel(), "\" does not exist"));
  }
  auto& grants = it->second.grants;
  auto g = std::find_if(grants.begin(), grants.end(),
                        [&](const v1::Grant& x) { return SameGrant(x, req.grant()); });
  if (g == grants.end()) return false;
  grants.erase(g);
  return true;
}

absl::StatusOr<v1::ListGrantsResponse> Registry::ListGrants(absl::string_view channel) const {
  if (absl::Status s = ValidateChannelName(channel); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(channel);
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", channel, "\" does not exist"));
  }
  v1::ListGrantsResponse out;
  for (const v1::Grant& g : it->second.grants) *out.add_grants() = g;
  out.set_owner_uid(it->second.owner_uid);
  return out;
}

v1::QuotaLimits Registry::LimitsLocked(uint32_t uid) const {
  v1::QuotaLimits limits;
  limits.set_max_channels(kDefaultQuotaMaxChannels);
  limits.set_max_shm_bytes(kDefaultQuotaMaxShmBytes);
  limits.set_max_attachments(kDefaultQuotaMaxAttachments);
  limits.set_max_frame_bytes(kDefaultQuotaMaxFrameBytes);
  auto it = quotas_.find(uid);
  if (it != quotas_.end()) {
    const v1::QuotaLimits& set = it->second;
    if (set.max_channels() != 0) limits.set_max_channels(set.max_channels());
    if (set.max_shm_bytes() != 0) limits.set_max_shm_bytes(set.max_shm_bytes());
    if (set.max_attachments() != 0) limits.set_max_attachments(set.max_attachments());
    if (set.max_frame_bytes() != 0) limits.set_max_frame_bytes(set.max_frame_bytes());
  }
  return limits;
}

uint32_t Registry::ChannelsOwnedLocked(uint32_t uid) const {
  uint32_t n = 0;
  for (const auto& [name, channel] : channels_) n += channel.owner_uid == uid ? 1 : 0;
  return n;
}

v1::Quota Registry::QuotaLocked(uint32_t uid) const {
  v1::Quota out;
  out.set_uid(uid);
  *out.mutable_limits() = LimitsLocked(uid);
  out.set_is_default(quotas_.count(uid) == 0);
  out.mutable_usage()->set_channels(ChannelsOwnedLocked(uid));
  auto u = usage_.find(uid);
  if (u != usage_.end()) {
    out.mutable_usage()->set_attachments(u->second.attachments);
    out.mutable_usage()->set_shm_bytes(u->second.shm_bytes);
  }
  return out;
}

absl::StatusOr<v1::Quota> Registry::SetQuota(const v1::SetQuotaRequest& req) {
  absl::MutexLock lock(&mu_);
  if (req.reset_to_defaults()) quotas_.erase(req.uid());
  const v1::QuotaLimits& in = req.limits();
  const bool any = in.max_channels() != 0 || in.max_shm_bytes() != 0 || in.max_attachments() != 0 ||
                   in.max_frame_bytes() != 0;
  if (any) {
    if (quotas_.count(req.uid()) == 0 && quotas_.size() >= kMaxQuotaEntries) {
      return absl::ResourceExhaustedError(absl::StrCat("quotas are set for ", kMaxQuotaEntries,
                                                       " uids already; reset unused ones"));
    }
    v1::QuotaLimits& limits = quotas_[req.uid()];
    if (in.max_channels() != 0) limits.set_max_channels(in.max_channels());
    if (in.max_shm_bytes() != 0) limits.set_max_shm_bytes(in.max_shm_bytes());
    if (in.max_attachments() != 0) limits.set_max_attachments(in.max_attachments());
    if (in.max_frame_bytes() != 0) limits.set_max_frame_bytes(in.max_frame_bytes());
  } else if (!req.reset_to_defaults()) {
    return absl::InvalidArgumentError(
        "SetQuota needs at least one non-zero limit, or reset_to_defaults");
  }
  return QuotaLocked(req.uid());
}

absl::StatusOr<v1::Quota> Registry::GetQuota(uint32_t uid) const {
  absl::MutexLock lock(&mu_);
  return QuotaLocked(uid);
}

absl::StatusOr<v1::ChannelStats> Registry::GetChannelStats(
    const v1::GetChannelStatsRequest& req) const {
  if (absl::Status s = ValidateChannelName(req.name()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = channels_.find(req.name());
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", req.name(), "\" does not exist"));
  }
  const Channel& channel = it->second;
  auto fill = [](const LaneTotals& t, v1::LaneStats* out) {
    out->set_frames_sent(t.frames_sent);
    out->set_bytes_sent(t.bytes_sent);
    out->set_frames_received(t.frames_received);
    out->set_bytes_received(t.bytes_received);
    out->set_backpressure_events(t.backpressure_events);
    out->set_dropped_frames(t.dropped_frames);
    out->set_wakeups(t.wakeups);
    out->set_latency_samples(t.latency_count);
    *out->mutable_latency_p50() = TimeUtil::NanosecondsToDuration(
        static_cast<int64_t>(LatencyQuantileNs(t.latency_buckets, 0.5)));
    *out->mutable_latency_p90() = TimeUtil::NanosecondsToDuration(
        static_cast<int64_t>(LatencyQuantileNs(t.latency_buckets, 0.9)));
    *out->mutable_latency_p99() = TimeUtil::NanosecondsToDuration(
        static_cast<int64_t>(LatencyQuantileNs(t.latency_buckets, 0.99)));
  };
  v1::ChannelStats out;
  out.set_name(req.name());
  LaneTotals total = channel.retired;
  uint64_t occupancy = 0, capacity = 0;
  auto name_of = [&](uint64_t attachment) -> std::string {
    auto a = attachments_.find(attachment);
    return a == attachments_.end() ? std::string() : a->second.client_name;
  };
  for (const auto& [id, lane] : channel.lanes) {
    absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
    if (!snap.ok()) continue;
    LaneTotals t;
    t.Add(*snap);
    total.Add(t);
    occupancy += snap->occupancy_bytes;
    capacity += snap->ring_bytes;
    if (req.include_lanes()) {
      v1::LaneStats* ls = out.add_lanes();
      ls->set_lane_id(id);
      fill(t, ls);
      ls->set_occupancy_bytes(snap->occupancy_bytes);
      ls->set_capacity_bytes(snap->ring_bytes);
      ls->set_closed(snap->producer_closed != 0 || snap->consumer_closed != 0 ||
                     snap->supervisor_closed_by != 0);
      const bool reply = lane.kind == Lane::Kind::kReply;
      const std::string client = name_of(lane.client_attachment);
      const std::string server = name_of(channel.consumer_attachment);
      ls->set_producer_name(reply ? server : client);
      ls->set_consumer_name(reply ? client : server);
    }
  }
  fill(total, out.mutable_total());
  out.mutable_total()->set_occupancy_bytes(occupancy);
  out.mutable_total()->set_capacity_bytes(capacity);
  out.set_live_lanes(static_cast<uint32_t>(channel.lanes.size()));
  return out;
}

// ---------------------------------------------------------------------------
// Attach plane.

bool Registry::AllowedLocked(const Channel& channel, const PeerCredentials& peer,
                             v1::GrantRole needed) const {
  if (peer.uid == 0 || peer.uid == options_.daemon_uid || peer.uid == channel.owner_uid) {
    return true;
  }
  for (const v1::Grant& g : channel.grants) {
    if (g.role() != needed && g.role() != v1::GRANT_ROLE_ADMIN) continue;
    switch (g.principal().kind_case()) {
      case v1::Principal::kUid:
        if (g.principal().uid() == peer.uid) return true;
        break;
      case v1::Principal::kGid:
        if (g.principal().gid() == peer.gid ||
            std::find(peer.groups.begin(), peer.groups.end(), g.principal().gid()) !=
                peer.groups.end()) {
          return true;
        }
        break;
      case v1::Principal::kAnyone:
        return true;
      default:
        break;
    }
  }
  return false;
}

absl::Status Registry::RejectQuotaLocked(const Channel& channel, const PeerCredentials& peer,
                                         std::string message) {
  options_.metrics->CountQuotaRejection();
  v1::Event event;
  event.set_type(v1::EVENT_TYPE_QUOTA_REJECTED);
  event.set_channel(channel.spec.name());
  event.set_uid(peer.uid);
  event.set_pid(static_cast<uint32_t>(peer.pid));
  event.set_detail(message);
  options_.events->Publish(std::move(event));
  return absl::ResourceExhaustedError(message);
}

absl::StatusOr<Registry::Lane> Registry::NewLaneLocked(const Channel& channel, Lane::Kind kind) {
  dataplane::LaneOptions options;
  options.ring_bytes = channel.spec.ring_bytes();
  options.max_frame_bytes = channel.spec.max_frame_bytes();
  options.policy = ToPolicy(channel.spec.backpressure());
  options.sample_every = channel.spec.latency_sample_every();
  options.lane_id = next_lane_id_;
  absl::StatusOr<dataplane::Segment> segment = dataplane::CreateLaneSegment(options);
  if (!segment.ok()) return segment.status();
  Lane lane;
  lane.id = next_lane_id_++;
  lane.kind = kind;
  lane.segment = *std::move(segment);
  return lane;
}

absl::Status Registry::DescribeLaneLocked(const Channel& channel, const Lane& lane,
                                          bool for_consumer_side, v1::LaneDescription* out,
                                          std::vector<dataplane::UniqueFd>* fds) const {
  // The client side (producer, or REQUEST_REPLY client) writes STREAM and
  // request lanes and reads reply lanes; the consumer side does the opposite.
  const bool client_writes = lane.kind != Lane::Kind::kReply;
  const bool writes = for_consumer_side ? !client_writes : client_writes;
  const dataplane::Doorbell& peer_bell = writes ? *lane.consumer_bell : *lane.producer_bell;
  absl::StatusOr<dataplane::UniqueFd> seg_fd = lane.segment.DupFd();
  if (!seg_fd.ok()) return seg_fd.status();
  absl::StatusOr<dataplane::UniqueFd> bell_fd = peer_bell.DupFd();
  if (!bell_fd.ok()) return bell_fd.status();
  out->set_lane_id(lane.id);
  out->set_direction(writes ? v1::LANE_DIRECTION_WRITE : v1::LANE_DIRECTION_READ);
  out->set_segment_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(seg_fd));
  out->set_peer_doorbell_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(bell_fd));
  const uint64_t peer = for_consumer_side ? lane.client_attachment : channel.consumer_attachment;
  out->set_peer_attachment_id(peer);
  auto a = attachments_.find(peer);
  if (a != attachments_.end()) out->set_peer_name(a->second.client_name);
  out->set_ring_bytes(channel.spec.ring_bytes());
  out->set_max_frame_bytes(channel.spec.max_frame_bytes());
  return absl::OkStatus();
}

void Registry::SendLocked(const Attachment& attachment, const v1::AttachMessage& message,
                          std::vector<dataplane::UniqueFd> fds) {
  Packet packet;
  packet.fds = std::move(fds);
  if (!message.SerializeToString(&packet.bytes) || packet.bytes.size() > kMaxAttachMessageBytes ||
      packet.fds.size() > kMaxFdsPerPacket) {
    // Cannot happen (packets are built within the bounds); if it did, the
    // peer would miss a message, so end it rather than let it run on wrong.
    ::shutdown(attachment.fd, SHUT_RDWR);
    return;
  }
  auto it = outboxes_.find(attachment.id);
  if (it != outboxes_.end()) {
    Outbox& outbox = it->second;
    if (outbox.overflowed) return;  // already disconnected; the fds close here
    outbox.bytes += packet.bytes.size();
    outbox.fds += packet.fds.size();
    outbox.packets.push_back(std::move(packet));
    if (outbox.packets.size() > kMaxOutboundMessages || outbox.bytes > kMaxOutboundBytes ||
        outbox.fds > kMaxOutboundFds) {
      OverflowLocked(outbox);
    }
    return;
  }
  // Nothing queued: the common case sends at once.
  std::vector<int> raw;
  raw.reserve(packet.fds.size());
  for (const auto& fd : packet.fds) raw.push_back(fd.get());
  const PacketSendResult result = SendAttachPacket(attachment.fd, packet.bytes, raw);
  if (result == PacketSendResult::kSent) return;
  if (result == PacketSendResult::kFailed || waker_ == nullptr) {
    // The peer is gone (or nobody could flush a queue): make the attach
    // server see a hang-up, which ends the attachment through Detach().
    ::shutdown(attachment.fd, SHUT_RDWR);
    return;
  }
  Outbox& outbox = outboxes_[attachment.id];
  outbox.fd = attachment.fd;
  outbox.bytes = packet.bytes.size();
  outbox.fds = packet.fds.size();
  outbox.packets.push_back(std::move(packet));
  if (result == PacketSendResult::kWouldBlock) {
    WatchLocked(outbox, true);
  } else {
    outbox.retry_at = absl::Now() + kOutboundRetryDelay;
    ScheduleServiceLocked();
  }
}

void Registry::WatchLocked(Outbox& outbox, bool watch) {
  if (outbox.watching == watch) return;
  if (waker_ != nullptr) waker_->WatchWritable(outbox.fd, watch);
  outbox.watching = watch;
}

void Registry::OverflowLocked(Outbox& outbox) {
  options_.metrics->CountAttachSendOverflow();
  outbox.packets.clear();  // closes the queued fds
  outbox.bytes = 0;
  outbox.fds = 0;
  WatchLocked(outbox, false);
  outbox.retry_at = absl::InfiniteFuture();
  outbox.overflowed = true;
  ::shutdown(outbox.fd, SHUT_RDWR);
}

void Registry::FlushOutboxLocked(uint64_t attachment_id) {
  auto it = outboxes_.find(attachment_id);
  if (it == outboxes_.end()) return;
  Outbox& outbox = it->second;
  if (outbox.overflowed) return;
  std::vector<int> raw;
  while (!outbox.packets.empty()) {
    Packet& packet = outbox.packets.front();
    raw.clear();
    for (const auto& fd : packet.fds) raw.push_back(fd.get());
    switch (SendAttachPacket(outbox.fd, packet.bytes, raw)) {
      case PacketSendResult::kSent:
        outbox.bytes -= packet.bytes.size();
        outbox.fds -= packet.fds.size();
        outbox.packets.pop_front();
        continue;
      case PacketSendResult::kWouldBlock:
        outbox.retry_at = absl::InfiniteFuture();
        WatchLocked(outbox, true);
        return;
      case PacketSendResult::kRetryLater:
        // The socket may well be writable: EPOLLOUT would spin.
        WatchLocked(outbox, false);
        outbox.retry_at = absl::Now() + kOutboundRetryDelay;
        ScheduleServiceLocked();
        return;
      case PacketSendResult::kFailed:
        // The peer is gone; its hang-up reaches the attach server.
        WatchLocked(outbox, false);
        ::shutdown(outbox.fd, SHUT_RDWR);
        outboxes_.erase(it);
        return;
    }
  }
  WatchLocked(outbox, false);
  if (outbox.ended) ::shutdown(outbox.fd, SHUT_RDWR);
  outboxes_.erase(it);
}

void Registry::ScheduleServiceLocked() {
  if (waker_ == nullptr) return;
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, outbox] : outboxes_) {
    next = std::min({next, outbox.retry_at, outbox.end_deadline});
  }
  if (next != absl::InfiniteFuture()) waker_->WakeAt(next);
}

void Registry::SetOutboundWaker(OutboundWaker* waker) {
  absl::MutexLock lock(&mu_);
  if (waker == nullptr) {
    // Nobody will flush what is queued: give those peers a hang-up.
    for (auto& [id, outbox] : outboxes_) ::shutdown(outbox.fd, SHUT_RDWR);
    outboxes_.clear();
  }
  waker_ = waker;
}

void Registry::FlushOutbound(uint64_t attachment_id) {
  absl::MutexLock lock(&mu_);
  FlushOutboxLocked(attachment_id);
}

void Registry::ServiceOutbound() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  std::vector<uint64_t> due;
  for (const auto& [id, outbox] : outboxes_) {
    if (outbox.retry_at <= now || outbox.end_deadline <= now) due.push_back(id);
  }
  for (uint64_t id : due) {
    auto it = outboxes_.find(id);
    if (it == outboxes_.end()) continue;
    Outbox& outbox = it->second;
    if (outbox.end_deadline <= now) {
      // An ended attachment that did not read its last packets in time.
      WatchLocked(outbox, false);
      ::shutdown(outbox.fd, SHUT_RDWR);
      outboxes_.erase(it);
      continue;
    }
    outbox.retry_at = absl::InfiniteFuture();
    FlushOutboxLocked(id);
  }
  ScheduleServiceLocked();
}

bool Registry::HasOutbound() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, outbox] : outboxes_) {
    if (!outbox.packets.empty()) return true;
  }
  return false;
}

void Registry::PublishLocked(v1::EventType type, const std::string& channel,
                             const Attachment* attachment, std::string detail) {
  v1::Event event;
  event.set_type(type);
  event.set_channel(channel);
  if (attachment != nullptr) {
    event.set_attachment_id(attachment->id);
    event.set_uid(attachment->peer.uid);
    event.set_pid(static_cast<uint32_t>(attachment->peer.pid));
    event.set_client_name(attachment->client_name);
    event.set_role(RoleName(attachment->role));
  }
  event.set_detail(std::move(detail));
  options_.events->Publish(std::move(event));
}

void Registry::OfferLanesToConsumerLocked(Channel& channel, const Attachment& client) {
  auto consumer = attachments_.find(channel.consumer_attachment);
  if (consumer == attachments_.end()) return;
  v1::AttachMessage message;
  std::vector<dataplane::UniqueFd> fds;
  for (uint64_t lane_id : client.lanes) {
    auto lane = channel.lanes.find(lane_id);
    if (lane == channel.lanes.end()) continue;
    if (!DescribeLaneLocked(channel, lane->second, /*for_consumer_side=*/true,
                            message.mutable_lane_added()->add_lanes(), &fds)
             .ok()) {
      ::shutdown(consumer->second.fd, SHUT_RDWR);
      return;
    }
  }
  SendLocked(consumer->second, message, std::move(fds));
}

absl::StatusOr<uint64_t> Registry::Attach(int socket_fd, const PeerCredentials& peer,
                                          const v1::AttachRequest& request) {
  if (request.protocol_version() != v1::ATTACH_PROTOCOL_VERSION_1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "attach protocol version ", request.protocol_version(),
        " is not supported; this shmlaned speaks version 1: upgrade the client library"));
  }
  if (absl::Status s = ValidateChannelName(request.channel()); !s.ok()) return s;
  if (request.client_name().size() > kMaxClientNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("client_name is ", request.client_name().size(), " bytes; at most 63"));
  }
  const v1::Role role = request.role();
  if (role != v1::ROLE_PRODUCER && role != v1::ROLE_CONSUMER && role != v1::ROLE_CLIENT &&
      role != v1::ROLE_SERVER) {
    return absl::InvalidArgumentError("role must be PRODUCER, CONSUMER, CLIENT or SERVER");
  }
  absl::MutexLock lock(&mu_);
  auto cit = channels_.find(request.channel());
  if (cit == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("channel \"", request.channel(),
                                            "\" does not exist; create it with `shmlanectl "
                                            "channels create ",
                                            request.channel(), "`"));
  }
  Channel& channel = cit->second;
  const bool stream = channel.spec.pattern() == v1::CHANNEL_PATTERN_STREAM;
  if (stream != (role == v1::ROLE_PRODUCER || role == v1::ROLE_CONSUMER)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channel \"", request.channel(), "\" is a ", stream ? "STREAM" : "REQUEST_REPLY",
        " channel; attach as ", stream ? "producer or consumer" : "client or server", ", not ",
        RoleName(role)));
  }
  const bool client_side = IsClientSide(role);
  const v1::GrantRole needed = client_side ? v1::GRANT_ROLE_PRODUCE : v1::GRANT_ROLE_CONSUME;
  if (!AllowedLocked(channel, peer, needed)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "uid ", peer.uid, " may not attach to channel \"", request.channel(), "\" as ",
        RoleName(role), ": it lacks the ", absl::AsciiStrToUpper(GrantRoleName(needed)),
        " role. An administrator can grant it with `shmlanectl grants add ", request.channel(),
        " --uid ", peer.uid, " --role ", GrantRoleName(needed), "`"));
  }
  if (!client_side && channel.consumer_attachment != 0) {
    const Attachment& current = attachments_.at(channel.consumer_attachment);
    return absl::FailedPreconditionError(
        absl::StrCat("channel \"", request.channel(), "\" already has a ", RoleName(current.role),
                     " (attachment ", current.id, ", pid ", current.peer.pid,
                     "); a channel has exactly one; stop that process first"));
  }
  if (client_side && channel.client_attachments.size() >= channel.spec.max_producers()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "channel \"", request.channel(), "\" already has ", channel.client_attachments.size(), " ",
        RoleName(role), "s attached, its max_producers; wait for one to detach"));
  }
  const v1::QuotaLimits limits = LimitsLocked(peer.uid);
  Usage usage;
  if (auto u = usage_.find(peer.uid); u != usage_.end()) usage = u->second;
  const uint64_t lanes_needed = client_side ? (stream ? 1 : 2) : 0;
  const uint64_t shm_needed =
      lanes_needed * (dataplane::kLaneHeaderBytes + channel.spec.ring_bytes());
  if (usage.attachments + 1 > limits.max_attachments()) {
    return RejectQuotaLocked(
        channel, peer,
        absl::StrCat("quota max_attachments: ", DescribeUsage(peer.uid), " has ", usage.attachments,
                     " of ", limits.max_attachments(),
                     " attachments; detach one or raise it with `shmlanectl quota set --uid ",
                     peer.uid, " --max-attachments N`"));
  }
  if (usage.shm_bytes + shm_needed > limits.max_shm_bytes()) {
    return RejectQuotaLocked(
        channel, peer,
        absl::StrCat("quota max_shm_bytes: ", DescribeUsage(peer.uid), " uses ", usage.shm_bytes,
                     " of ", limits.max_shm_bytes(), " bytes and this attachment needs ",
                     shm_needed, "; detach something or raise it with `shmlanectl quota set --uid ",
                     peer.uid, " --max-shm-bytes N`"));
  }

  Attachment attachment;
  attachment.id = next_attachment_id_;
  attachment.fd = socket_fd;
  attachment.channel = channel.spec.name();
  attachment.role = role;
  attachment.peer = peer;
  attachment.client_name = request.client_name();
  attachment.shm_bytes = shm_needed;
  std::vector<Lane> new_lanes;
  if (client_side) {
    absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
    if (!bell.ok()) return bell.status();
    attachment.bell = std::make_shared<dataplane::Doorbell>(*std::move(bell));
    const Lane::Kind kinds[2] = {stream ? Lane::Kind::kStream : Lane::Kind::kRequest,
                                 Lane::Kind::kReply};
    for (uint64_t i = 0; i < lanes_needed; ++i) {
      absl::StatusOr<Lane> lane = NewLaneLocked(channel, kinds[i]);
      if (!lane.ok()) return lane.status();
      lane->client_attachment = attachment.id;
      const bool client_produces = kinds[i] != Lane::Kind::kReply;
      lane->producer_bell = client_produces ? attachment.bell : channel.consumer_bell;
      lane->consumer_bell = client_produces ? channel.consumer_bell : attachment.bell;
      attachment.lanes.push_back(lane->id);
      new_lanes.push_back(*std::move(lane));
    }
  } else {
    attachment.bell = channel.consumer_bell;
    // A restarted consumer must not inherit wake-ups meant for its predecessor.
    attachment.bell->Clear();
  }

  // The reply: own doorbell first, then (segment, peer doorbell) per lane.
  v1::AttachMessage reply_message;
  v1::AttachReply* reply = reply_message.mutable_attach_reply();
  std::vector<dataplane::UniqueFd> reply_fds;
  absl::StatusOr<dataplane::UniqueFd> own = attachment.bell->DupFd();
  if (!own.ok()) return own.status();
  reply->set_code(0);
  reply->set_attachment_id(attachment.id);
  reply->set_doorbell_fd_index(0);
  reply_fds.push_back(*std::move(own));
  reply->set_max_frame_bytes(channel.spec.max_frame_bytes());
  reply->set_ring_bytes(channel.spec.ring_bytes());
  // Later packets for a consumer with many peers (each bounded to
  // kMaxFdsPerPacket fds, one client's lanes never split).
  std::vector<std::pair<v1::AttachMessage, std::vector<dataplane::UniqueFd>>> more;
  if (client_side) {
    for (const Lane& lane : new_lanes) {
      if (absl::Status s = DescribeLaneLocked(channel, lane, false, reply->add_lanes(), &reply_fds);
          !s.ok()) {
        return s;
      }
    }
  } else {
    channel.consumer_attachment = attachment.id;  // for peer ids in descriptions
    v1::AttachMessage* packet = &reply_message;
    std::vector<dataplane::UniqueFd>* packet_fds = &reply_fds;
    uint32_t following = 0;
    for (uint64_t client_id : channel.client_attachments) {
      const Attachment& client = attachments_.at(client_id);
      const size_t fds_needed = 2 * client.lanes.size();
      if (packet_fds->size() + fds_needed > kMaxFdsPerPacket) {
        more.emplace_back();
        packet = &more.back().first;
        packet_fds = &more.back().second;
        packet->mutable_lane_added();
      }
      for (uint64_t lane_id : client.lanes) {
        const Lane& lane = channel.lanes.at(lane_id);
        v1::LaneDescription* d = packet == &reply_message
                                     ? reply->add_lanes()
                                     : packet->mutable_lane_added()->add_lanes();
        absl::Status s = DescribeLaneLocked(channel, lane, true, d, packet_fds);
        if (!s.ok()) {
          channel.consumer_attachment = 0;
          return s;
        }
        if (packet != &reply_message) ++following;
      }
    }
    reply->set_lanes_following(following);
  }
  ++next_attachment_id_;
  for (Lane& lane : new_lanes) {
    const uint64_t id = lane.id;
    channel.lanes.emplace(id, std::move(lane));
  }
  if (client_side) channel.client_attachments.push_back(attachment.id);
  Usage& u = usage_[peer.uid];
  u.attachments += 1;
  u.shm_bytes += shm_needed;
  auto [it, inserted] = attachments_.emplace(attachment.id, std::move(attachment));
  const Attachment& stored = it->second;
  // The reply takes the same queue as everything after it, so the LaneAdded
  // packets that complete it can never overtake it. A peer already gone
  // shows as a hang-up, which ends the attachment through Detach().
  SendLocked(stored, reply_message, std::move(reply_fds));
  for (auto& [message, fds] : more) SendLocked(stored, message, std::move(fds));
  if (client_side) OfferLanesToConsumerLocked(channel, stored);
  options_.metrics->CountAttach("ok");
  PublishLocked(v1::EVENT_TYPE_ATTACHED, stored.channel, &stored,
                absl::StrCat(RoleName(role), " attached"));
  return stored.id;
}

void Registry::RetireLaneLocked(Channel& channel, uint64_t lane_id, uint32_t reason,
                                absl::string_view why, bool tell_consumer) {
  auto it = channel.lanes.find(lane_id);
  if (it == channel.lanes.end()) return;
  Lane& lane = it->second;
  if (absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment); snap.ok()) {
    channel.retired.Add(*snap);
  }
  dataplane::SupervisorClose(lane.segment, reason, lane.producer_bell.get(),
                             lane.consumer_bell.get());
  if (lane.in_backpressure) {
    // Every STARTED gets its ENDED, also when the lane goes away.
    v1::Event event;
    event.set_type(v1::EVENT_TYPE_BACKPRESSURE_ENDED);
    event.set_channel(channel.spec.name());
    event.set_lane_id(lane_id);
    event.set_attachment_id(lane.client_attachment);
    event.set_detail(absl::StrCat("lane closed: ", why));
    options_.events->Publish(std::move(event));
  }
  v1::AttachMessage message;
  message.mutable_lane_removed()->set_lane_id(lane_id);
  message.mutable_lane_removed()->set_reason(std::string(why));
  // Both sides learn, whichever of them is still attached.
  if (tell_consumer) {
    auto consumer = attachments_.find(channel.consumer_attachment);
    if (consumer != attachments_.end()) SendLocked(consumer->second, message, {});
  }
  auto client = attachments_.find(lane.client_attachment);
  if (client != attachments_.end()) SendLocked(client->second, message, {});
  channel.lanes.erase(it);
}

void Registry::EndAttachmentLocked(uint64_t attachment_id, v1::EventType event,
                                   absl::string_view why, absl::string_view goodbye) {
  auto it = attachments_.find(attachment_id);
  if (it == attachments_.end()) return;
  Attachment attachment = std::move(it->second);
  attachments_.erase(it);
  auto cit = channels_.find(attachment.channel);
  if (cit != channels_.end()) {
    Channel& channel = cit->second;
    if (IsClientSide(attachment.role)) {
      for (uint64_t lane_id : attachment.lanes) {
        auto lane = channel.lanes.find(lane_id);
        if (lane == channel.lanes.end()) continue;
        const bool client_produces = lane->second.kind != Lane::Kind::kReply;
        RetireLaneLocked(
            channel, lane_id,
            client_produces ? dataplane::kClosedProducerGone : dataplane::kClosedConsumerGone, why,
            /*tell_consumer=*/true);
      }
      auto& clients = channel.client_attachments;
      clients.erase(std::remove(clients.begin(), clients.end(), attachment_id), clients.end());
    } else if (channel.consumer_attachment == attachment_id) {
      channel.consumer_attachment = 0;
      std::vector<uint64_t> lane_ids;
      for (const auto& [id, lane] : channel.lanes) lane_ids.push_back(id);
      for (uint64_t id : lane_ids) {
        const bool client_produces = channel.lanes.at(id).kind != Lane::Kind::kReply;
        RetireLaneLocked(
            channel, id,
            client_produces ? dataplane::kClosedConsumerGone : dataplane::kClosedProducerGone, why,
            /*tell_consumer=*/false);
      }
      // Producers of a channel whose consumer went away are ended: their
      // lanes are closed and they must attach again (docs/protocol.md).
      const std::string bye =
          goodbye.empty()
              ? absl::StrCat("the ", RoleName(attachment.role), " of channel \"",
                             channel.spec.name(), "\" went away (", why, "); attach again")
              : std::string(goodbye);
      const std::vector<uint64_t> clients = channel.client_attachments;
      for (uint64_t id : clients) {
        EndAttachmentLocked(id, v1::EVENT_TYPE_DETACHED,
                            absl::StrCat(RoleName(attachment.role), " gone"), bye);
      }
    }
  }
  if (!goodbye.empty()) {
    v1::AttachMessage message;
    message.mutable_goodbye()->set_reason(std::string(goodbye));
    SendLocked(attachment, message, {});
    auto outbox = outboxes_.find(attachment.id);
    if (outbox == outboxes_.end()) {
      ::shutdown(attachment.fd, SHUT_RDWR);
    } else if (!outbox->second.overflowed) {
      // The Goodbye waits behind packets the peer has not read yet: shut the
      // socket down once they are through (FlushOutboxLocked), or at the
      // deadline, so that a peer that never reads cannot pin the fd.
      outbox->second.ended = true;
      outbox->second.end_deadline = absl::Now() + kEndedFlushTimeout;
      ScheduleServiceLocked();
    }
  }
  Usage& u = usage_[attachment.peer.uid];
  u.attachments -= std::min(u.attachments, 1u);
  u.shm_bytes -= std::min(u.shm_bytes, attachment.shm_bytes);
  if (u.attachments == 0 && u.shm_bytes == 0) usage_.erase(attachment.peer.uid);
  PublishLocked(event, attachment.channel, &attachment, std::string(why));
}

void Registry::Detach(uint64_t attachment_id, DetachKind kind) {
  absl::MutexLock lock(&mu_);
  // The attach server closes the fd after this returns: nothing may be sent
  // on it any more, queued or not.
  bool overflowed = false;
  if (auto outbox = outboxes_.find(attachment_id); outbox != outboxes_.end()) {
    overflowed = outbox->second.overflowed;
    outboxes_.erase(outbox);
  }
  if (attachments_.count(attachment_id) == 0) return;
  if (overflowed) {
    // Our own shutdown caused the hang-up: not a peer death.
    EndAttachmentLocked(attachment_id, v1::EVENT_TYPE_DETACHED,
                        "disconnected: its attach socket queue overflowed (the process stopped "
                        "reading it)",
                        "");
    return;
  }
  switch (kind) {
    case DetachKind::kClean:
      EndAttachmentLocked(attachment_id, v1::EVENT_TYPE_DETACHED, "detached", "");
      break;
    case DetachKind::kDied:
      options_.metrics->CountPeerDeath();
      EndAttachmentLocked(attachment_id, v1::EVENT_TYPE_PEER_DIED, "connection hung up", "");
      break;
    case DetachKind::kProtocolError:
      EndAttachmentLocked(attachment_id, v1::EVENT_TYPE_DETACHED, "protocol error", "");
      break;
  }
}

void Registry::GoodbyeAll(absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  while (!attachments_.empty()) {
    EndAttachmentLocked(attachments_.begin()->first, v1::EVENT_TYPE_DETACHED, reason, reason);
  }
}

void Registry::CheckBackpressure() {
  absl::MutexLock lock(&mu_);
  for (auto& [name, channel] : channels_) {
    for (auto& [id, lane] : channel.lanes) {
      absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
      if (!snap.ok()) continue;
      const uint64_t events = snap->producer.backpressure_events;
      const bool rising = events > lane.last_backpressure;
      lane.last_backpressure = events;
      if (rising == lane.in_backpressure) continue;
      lane.in_backpressure = rising;
      v1::Event event;
      event.set_type(rising ? v1::EVENT_TYPE_BACKPRESSURE_STARTED
                            : v1::EVENT_TYPE_BACKPRESSURE_ENDED);
      event.set_channel(name);
      event.set_lane_id(id);
      event.set_attachment_id(lane.client_attachment);
      event.set_detail(absl::StrCat(events, " backpressure events so far"));
      options_.events->Publish(std::move(event));
    }
  }
}

size_t Registry::attachments() const {
  absl::MutexLock lock(&mu_);
  return attachments_.size();
}

// ---------------------------------------------------------------------------
// State and metrics.

v1::DaemonState Registry::ExportState() const {
  absl::MutexLock lock(&mu_);
  v1::DaemonState state;
  state.set_format_version(1);
  for (const auto& [name, channel] : channels_) {
    v1::PersistedChannel* pc = state.add_channels();
    *pc->mutable_spec() = channel.spec;
    pc->set_owner_uid(channel.owner_uid);
    *pc->mutable_create_time() = TimeUtil::NanosecondsToTimestamp(channel.create_unix_ns);
    for (const v1::Grant& g : channel.grants) *pc->add_grants() = g;
  }
  for (const auto& [uid, limits] : quotas_) {
    v1::PersistedQuota* q = state.add_quotas();
    q->set_uid(uid);
    *q->mutable_limits() = limits;
  }
  return state;
}

absl::Status Registry::RestoreState(const v1::DaemonState& state) {
  if (state.format_version() != 1) {
    return absl::DataLossError(absl::StrCat("state format version ", state.format_version(),
                                            " is not 1; move the state file away"));
  }
  std::map<std::string, Channel, std::less<>> channels;
  for (const v1::PersistedChannel& pc : state.channels()) {
    absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(pc.spec());
    if (!spec.ok()) {
      return absl::DataLossError(
          absl::StrCat("state file holds an invalid channel: ", spec.status().message()));
    }
    absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
    if (!bell.ok()) return bell.status();
    Channel channel;
    channel.spec = *spec;
    channel.owner_uid = pc.owner_uid();
    channel.create_unix_ns = TimeUtil::TimestampToNanoseconds(pc.create_time());
    for (const v1::Grant& g : pc.grants()) {
      if (ValidateGrant(g).ok() && channel.grants.size() < kMaxGrantsPerChannel) {
        channel.grants.push_back(g);
      }
    }
    channel.consumer_bell = std::make_shared<dataplane::Doorbell>(*std::move(bell));
    channels.emplace(spec->name(), std::move(channel));
  }
  absl::MutexLock lock(&mu_);
  if (!attachments_.empty()) return absl::FailedPreconditionError("restore with attachments");
  channels_ = std::move(channels);
  quotas_.clear();
  for (const v1::PersistedQuota& q : state.quotas()) quotas_[q.uid()] = q.limits();
  return absl::OkStatus();
}

MetricsSnapshot Registry::SnapshotMetrics(bool per_lane) const {
  absl::MutexLock lock(&mu_);
  MetricsSnapshot out;
  out.channels.reserve(channels_.size());
  for (const auto& [name, channel] : channels_) {
    MetricsSnapshot::Channel c;
    c.name = name;
    c.totals = channel.retired;
    c.attached_clients = static_cast<uint32_t>(channel.client_attachments.size() +
                                               (channel.consumer_attachment != 0 ? 1 : 0));
    for (const auto& [id, lane] : channel.lanes) {
      absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
      if (!snap.ok()) continue;
      MetricsSnapshot::Lane l;
      l.lane_id = id;
      l.counters.Add(*snap);
      l.occupancy_bytes = snap->occupancy_bytes;
      l.capacity_bytes = snap->ring_bytes;
      c.totals.Add(l.counters);
      c.occupancy_bytes += l.occupancy_bytes;
      c.capacity_bytes += l.capacity_bytes;
      if (per_lane) c.lanes.push_back(l);
    }
    out.channels.push_back(std::move(c));
  }
  return out;
}

}  // namespace shmlane::control
