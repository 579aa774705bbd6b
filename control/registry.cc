#include "control/registry.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "shmlane/enum_names.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;
using google::protobuf::util::TimeUtil;

}  // namespace

Registry::Registry(RegistryOptions options, std::string admin_hint, OutboundLimits limits)
    : options_(options),
      admin_hint_(std::move(admin_hint)),
      outbound_(options.metrics, limits),
      access_(options.daemon_uid, &ledger_),
      attachments_(&outbound_, &ledger_, options.events, options.metrics) {}

Registry::~Registry() = default;

// ---------------------------------------------------------------------------
// Control plane.

v1::Channel Registry::DescribeLocked(const ChannelRecord& channel) const {
  const Attachments::Counts counts = attachments_.CountsOf(channel.spec.name());
  v1::Channel out;
  *out.mutable_spec() = channel.spec;
  out.set_owner_uid(channel.owner_uid);
  *out.mutable_create_time() = TimeUtil::NanosecondsToTimestamp(channel.create_unix_ns);
  out.set_attached_producers(counts.clients);
  out.set_consumer_attached(counts.consumer);
  out.set_lanes(counts.lanes);
  return out;
}

bool Registry::SeesLocked(const Caller& caller, const ChannelRecord& channel) const {
  if (caller.admin) return true;
  if (caller.kind != Caller::Kind::kLocal) return false;
  return caller.peer.uid == channel.owner_uid ||
         access_.Allowed(channel, caller.peer, v1::GRANT_ROLE_PRODUCE) ||
         access_.Allowed(channel, caller.peer, v1::GRANT_ROLE_CONSUME);
}

bool Registry::AdministersLocked(const Caller& caller, const ChannelRecord& channel) const {
  if (caller.admin) return true;
  if (caller.kind != Caller::Kind::kLocal) return false;
  return access_.Allowed(channel, caller.peer, v1::GRANT_ROLE_ADMIN);
}

absl::StatusOr<const ChannelRecord*> Registry::VisibleLocked(const Caller& caller,
                                                             absl::string_view name) const {
  const ChannelRecord* channel = catalog_.Find(name);
  if (channel != nullptr && SeesLocked(caller, *channel)) return channel;
  if (caller.admin) return ChannelCatalog::NotFound(name);
  return absl::NotFoundError(absl::StrCat("channel \"", name, "\" does not exist, or ",
                                          caller.Describe(), " has no role on it"));
}

absl::StatusOr<v1::Channel> Registry::CreateChannel(const Caller& caller,
                                                    const v1::CreateChannelRequest& req) {
  absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(req.spec());
  if (!spec.ok()) return spec.status();
  uint32_t owner = req.has_owner_uid() ? req.owner_uid() : options_.daemon_uid;
  if (!caller.admin) {
    if (caller.kind != Caller::Kind::kLocal) {
      return absl::PermissionDeniedError(
          absl::StrCat(caller.Describe(), " may not create channels; ", admin_hint_));
    }
    if (req.has_owner_uid() && req.owner_uid() != caller.peer.uid) {
      return absl::PermissionDeniedError(
          absl::StrCat(caller.Describe(), " may not create a channel owned by uid ",
                       req.owner_uid(), ": only administrators set owner_uid for someone else (",
                       admin_hint_, "); leave --owner-uid out to own the channel yourself"));
    }
    owner = caller.peer.uid;
  }
  // An eventfd is a system call: made before taking the lock.
  absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
  if (!bell.ok()) return bell.status();
  absl::MutexLock lock(&mu_);
  if (absl::Status s = catalog_.CheckCanAdd(spec->name()); !s.ok()) return s;
  if (absl::Status s = access_.CheckCreate(owner, catalog_.OwnedBy(owner), *spec); !s.ok()) {
    // Refused creations are events too, like refused attaches.
    const bool local = caller.kind == Caller::Kind::kLocal;
    return RejectQuotaLocked(spec->name(), local ? caller.peer.uid : owner,
                             local ? static_cast<uint32_t>(caller.peer.pid) : 0,
                             "CreateChannel: ", std::move(s));
  }
  ChannelRecord record;
  record.spec = *std::move(spec);
  record.owner_uid = owner;
  record.create_unix_ns = absl::GetCurrentTimeNanos();
  const ChannelRecord& stored = catalog_.Add(std::move(record));
  attachments_.AddChannel(stored.spec.name(),
                          std::make_shared<dataplane::Doorbell>(*std::move(bell)),
                          stored.spec.durable());
  v1::Event event;
  event.set_type(v1::EVENT_TYPE_CHANNEL_CREATED);
  event.set_channel(stored.spec.name());
  event.set_detail(absl::StrCat("owner uid ", owner));
  if (caller.kind == Caller::Kind::kLocal) {
    event.set_uid(caller.peer.uid);
    event.set_pid(static_cast<uint32_t>(caller.peer.pid));
  }
  options_.events->Publish(std::move(event));
  return DescribeLocked(stored);
}

absl::StatusOr<v1::Channel> Registry::GetChannel(const Caller& caller,
                                                 absl::string_view name) const {
  if (absl::Status s = ValidateChannelName(name); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<const ChannelRecord*> channel = VisibleLocked(caller, name);
  if (!channel.ok()) return channel.status();
  return DescribeLocked(**channel);
}

absl::StatusOr<v1::ListChannelsResponse> Registry::ListChannels(
    const Caller& caller, const v1::ListChannelsRequest& req) const {
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
  // Channels the caller does not see are skipped, not counted (at most
  // kMaxChannels: a linear pass is cheap).
  bool more = false;
  for (const ChannelRecord* channel : catalog_.All()) {
    if (!req.page_token().empty() && channel->spec.name() <= req.page_token()) continue;
    if (!SeesLocked(caller, *channel)) continue;
    if (static_cast<size_t>(out.channels_size()) == page_size) {
      more = true;
      break;
    }
    *out.add_channels() = DescribeLocked(*channel);
  }
  if (more && out.channels_size() > 0) {
    out.set_next_page_token(out.channels(out.channels_size() - 1).spec().name());
  }
  return out;
}

absl::StatusOr<v1::DeleteChannelResponse> Registry::DeleteChannel(
    const Caller& caller, const v1::DeleteChannelRequest& req) {
  if (absl::Status s = ValidateChannelName(req.name()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<const ChannelRecord*> c = VisibleLocked(caller, req.name());
  if (!c.ok()) return c.status();
  if (!caller.admin && (*c)->owner_uid != caller.peer.uid) {
    return absl::PermissionDeniedError(absl::StrCat(
        caller.Describe(), " may not delete channel \"", req.name(), "\": only its owner (uid ",
        (*c)->owner_uid, ") or an administrator may (", admin_hint_, ")"));
  }
  const Attachments::Counts counts = attachments_.CountsOf(req.name());
  const size_t attached = counts.clients + (counts.consumer ? 1 : 0);
  if (attached > 0 && !req.force()) {
    return absl::FailedPreconditionError(
        absl::StrCat("channel \"", req.name(), "\" has ", attached,
                     " attached processes; detach them first or delete with force "
                     "(`shmlanectl channels delete ",
                     req.name(), " --force`), which closes their lanes"));
  }
  const uint32_t ended = attachments_.RemoveChannel(
      req.name(), absl::StrCat("channel \"", req.name(), "\" was deleted"));
  ReleaseUsageLocked();
  access_.DropChannel(req.name());
  catalog_.Remove(req.name());
  v1::Event event;
  event.set_type(v1::EVENT_TYPE_CHANNEL_DELETED);
  event.set_channel(req.name());
  event.set_detail(req.force() ? absl::StrCat("forced; ", ended, " attachments ended") : "");
  options_.events->Publish(std::move(event));
  v1::DeleteChannelResponse out;
  out.set_detached_clients(ended);
  return out;
}

absl::StatusOr<bool> Registry::AddGrant(const Caller& caller, const v1::AddGrantRequest& req) {
  if (absl::Status s = ValidateChannelName(req.channel()); !s.ok()) return s;
  if (absl::Status s = ValidateGrant(req.grant()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<const ChannelRecord*> c = VisibleLocked(caller, req.channel());
  if (!c.ok()) return c.status();
  if (!AdministersLocked(caller, **c)) {
    return absl::PermissionDeniedError(
        absl::StrCat(caller.Describe(), " may not change the grants of channel \"", req.channel(),
                     "\": that needs the ADMIN role on it (its owner, uid ", (*c)->owner_uid,
                     ", can give it with `shmlanectl grants add ", req.channel(), " --uid ",
                     caller.peer.uid, " --role admin`), or an administrator"));
  }
  return access_.AddGrant(req.channel(), req.grant());
}

absl::StatusOr<bool> Registry::RemoveGrant(const Caller& caller,
                                           const v1::RemoveGrantRequest& req) {
  if (absl::Status s = ValidateChannelName(req.channel()); !s.ok()) return s;
  if (absl::Status s = ValidateGrant(req.grant()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<const ChannelRecord*> c = VisibleLocked(caller, req.channel());
  if (!c.ok()) return c.status();
  if (!AdministersLocked(caller, **c)) {
    return absl::PermissionDeniedError(
        absl::StrCat(caller.Describe(), " may not change the grants of channel \"", req.channel(),
                     "\": that needs the ADMIN role on it (its owner, uid ", (*c)->owner_uid,
                     ", can give it), or an administrator"));
  }
  return access_.RemoveGrant(req.channel(), req.grant());
}

absl::StatusOr<v1::ListGrantsResponse> Registry::ListGrants(const Caller& caller,
                                                            absl::string_view channel) const {
  if (absl::Status s = ValidateChannelName(channel); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<const ChannelRecord*> record = VisibleLocked(caller, channel);
  if (!record.ok()) return record.status();
  v1::ListGrantsResponse out;
  for (const v1::Grant& g : access_.Grants(channel)) *out.add_grants() = g;
  out.set_owner_uid((*record)->owner_uid);
  return out;
}

absl::StatusOr<v1::Quota> Registry::SetQuota(const Caller& caller, const v1::SetQuotaRequest& req) {
  if (!caller.admin) {
    return absl::PermissionDeniedError(absl::StrCat(
        caller.Describe(), " may not set quotas: only administrators may; ", admin_hint_));
  }
  absl::MutexLock lock(&mu_);
  return access_.SetQuota(req, catalog_.OwnedBy(req.uid()));
}

absl::StatusOr<v1::Quota> Registry::GetQuota(const Caller& caller, uint32_t uid) const {
  if (!caller.admin && (caller.kind != Caller::Kind::kLocal || caller.peer.uid != uid)) {
    return absl::PermissionDeniedError(
        absl::StrCat(caller.Describe(), " may read only its own quota (uid ", caller.peer.uid,
                     "), not uid ", uid, "'s; ", admin_hint_));
  }
  absl::MutexLock lock(&mu_);
  return access_.Quota(uid, catalog_.OwnedBy(uid));
}

absl::StatusOr<v1::ChannelStats> Registry::GetChannelStats(
    const Caller& caller, const v1::GetChannelStatsRequest& req) const {
  if (absl::Status s = ValidateChannelName(req.name()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (absl::StatusOr<const ChannelRecord*> c = VisibleLocked(caller, req.name()); !c.ok()) {
    return c.status();
  }
  v1::ChannelStats out;
  out.set_name(req.name());
  attachments_.FillStats(req.name(), req.include_lanes(), &out);
  return out;
}

absl::Status Registry::MayWatch(const Caller& caller, absl::string_view channel) const {
  if (caller.admin) return absl::OkStatus();
  if (channel.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        caller.Describe(),
        " may watch only channels it has a role on: name one (`shmlanectl watch CHANNEL`); "
        "watching every channel needs an administrator (",
        admin_hint_, ")"));
  }
  absl::MutexLock lock(&mu_);
  return VisibleLocked(caller, channel).status();
}

// The daemon's own calls: an administrator.
absl::StatusOr<v1::Channel> Registry::CreateChannel(const v1::CreateChannelRequest& req) {
  return CreateChannel(Caller::Daemon(), req);
}
absl::StatusOr<v1::Channel> Registry::ReplaceChannel(const v1::CreateChannelRequest& req) {
  absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(req.spec());
  if (!spec.ok()) return spec.status();
  const uint32_t owner = req.has_owner_uid() ? req.owner_uid() : options_.daemon_uid;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<const ChannelRecord*> found = catalog_.Get(spec->name());
  if (!found.ok()) return found.status();
  const Attachments::Counts counts = attachments_.CountsOf(spec->name());
  const size_t attached = counts.clients + (counts.consumer ? 1 : 0);
  if (attached > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("channel \"", spec->name(), "\" has ", attached, " attached processes"));
  }
  const uint32_t owned = catalog_.OwnedBy(owner) - ((*found)->owner_uid == owner ? 1 : 0);
  if (absl::Status s = access_.CheckCreate(owner, owned, *spec); !s.ok()) {
    return RejectQuotaLocked(spec->name(), owner, 0, "ReplaceChannel: ", std::move(s));
  }
  ChannelRecord record;
  record.spec = *std::move(spec);
  record.owner_uid = owner;
  record.create_unix_ns = (*found)->create_unix_ns;
  // The channel's doorbell and grants are keyed by name and stay.
  catalog_.Remove(record.spec.name());
  const ChannelRecord& stored = catalog_.Add(std::move(record));
  attachments_.SetDurable(stored.spec.name(), stored.spec.durable());
  v1::Event event;
  event.set_type(v1::EVENT_TYPE_CHANNEL_UPDATED);
  event.set_channel(stored.spec.name());
  event.set_detail(absl::StrCat("owner uid ", owner));
  options_.events->Publish(std::move(event));
  return DescribeLocked(stored);
}
absl::StatusOr<v1::Channel> Registry::GetChannel(absl::string_view name) const {
  return GetChannel(Caller::Daemon(), name);
}
absl::StatusOr<v1::ListChannelsResponse> Registry::ListChannels(
    const v1::ListChannelsRequest& req) const {
  return ListChannels(Caller::Daemon(), req);
}
absl::StatusOr<v1::DeleteChannelResponse> Registry::DeleteChannel(
    const v1::DeleteChannelRequest& req) {
  return DeleteChannel(Caller::Daemon(), req);
}
absl::StatusOr<bool> Registry::AddGrant(const v1::AddGrantRequest& req) {
  return AddGrant(Caller::Daemon(), req);
}
absl::StatusOr<bool> Registry::RemoveGrant(const v1::RemoveGrantRequest& req) {
  return RemoveGrant(Caller::Daemon(), req);
}
absl::StatusOr<v1::ListGrantsResponse> Registry::ListGrants(absl::string_view channel) const {
  return ListGrants(Caller::Daemon(), channel);
}
absl::StatusOr<v1::Quota> Registry::SetQuota(const v1::SetQuotaRequest& req) {
  return SetQuota(Caller::Daemon(), req);
}
absl::StatusOr<v1::Quota> Registry::GetQuota(uint32_t uid) const {
  return GetQuota(Caller::Daemon(), uid);
}
absl::StatusOr<v1::ChannelStats> Registry::GetChannelStats(
    const v1::GetChannelStatsRequest& req) const {
  return GetChannelStats(Caller::Daemon(), req);
}

// ---------------------------------------------------------------------------
// Attach plane.

absl::Status Registry::RejectQuotaLocked(absl::string_view channel, uint32_t uid, uint32_t pid,
                                         absl::string_view what, absl::Status quota) {
  options_.metrics->CountQuotaRejection();
  v1::Event event;
  event.set_type(v1::EVENT_TYPE_QUOTA_REJECTED);
  event.set_channel(std::string(channel));
  event.set_uid(uid);
  event.set_pid(pid);
  event.set_detail(absl::StrCat(what, quota.message()));
  options_.events->Publish(std::move(event));
  return quota;
}

void Registry::ReleaseUsageLocked() {
  for (const ReleasedUsage& r : attachments_.TakeReleased()) access_.Release(r.uid);
  if (attachments_.TakeStateChanged() && state_changed_) state_changed_();
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
  for (char c : request.client_name()) {
    // Names end up in terminals (shmlanectl watch), logs and metrics.
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "client_name may hold only printable ASCII characters (0x20..0x7e)");
    }
  }
  const v1::Role role = request.role();
  if (role != v1::ROLE_PRODUCER && role != v1::ROLE_CONSUMER && role != v1::ROLE_CLIENT &&
      role != v1::ROLE_SERVER && role != v1::ROLE_PUBLISHER && role != v1::ROLE_SUBSCRIBER) {
    return absl::InvalidArgumentError(
        "role must be PRODUCER, CONSUMER, CLIENT, SERVER, PUBLISHER or SUBSCRIBER");
  }
  // Who writes: PRODUCE; who reads only: CONSUME (a SERVER also needs CONSUME).
  const bool writes_role =
      role == v1::ROLE_PRODUCER || role == v1::ROLE_CLIENT || role == v1::ROLE_PUBLISHER;
  absl::MutexLock lock(&mu_);
  const ChannelRecord* channel = catalog_.Find(request.channel());
  if (channel == nullptr && peer.uid != 0 && peer.uid != options_.daemon_uid) {
    // The same answer as for a channel that exists without a grant, so that
    // channel names cannot be probed through the attach socket.
    const v1::GrantRole needed = writes_role ? v1::GRANT_ROLE_PRODUCE : v1::GRANT_ROLE_CONSUME;
    return absl::PermissionDeniedError(absl::StrCat(
        "uid ", peer.uid, " may not attach to channel \"", request.channel(), "\" as ",
        ShortName(role), ": the channel does not exist or uid ", peer.uid, " lacks the ",
        absl::AsciiStrToUpper(ShortName(needed)),
        " role. An administrator can create it or grant the role with `shmlanectl grants add ",
        request.channel(), " --uid ", peer.uid, " --role ", ShortName(needed), "`"));
  }
  if (channel == nullptr) {
    return absl::NotFoundError(absl::StrCat("channel \"", request.channel(),
                                            "\" does not exist; create it with `shmlanectl "
                                            "channels create ",
                                            request.channel(), "`"));
  }
  const v1::ChannelPattern pattern = channel->spec.pattern();
  const v1::ChannelPattern role_pattern =
      role == v1::ROLE_PRODUCER || role == v1::ROLE_CONSUMER ? v1::CHANNEL_PATTERN_STREAM
      : role == v1::ROLE_CLIENT || role == v1::ROLE_SERVER   ? v1::CHANNEL_PATTERN_REQUEST_REPLY
                                                             : v1::CHANNEL_PATTERN_BROADCAST;
  if (pattern != role_pattern) {
    const char* roles = pattern == v1::CHANNEL_PATTERN_STREAM          ? "producer or consumer"
                        : pattern == v1::CHANNEL_PATTERN_REQUEST_REPLY ? "client or server"
                                                                       : "publisher or subscriber";
    return absl::InvalidArgumentError(absl::StrCat(
        "channel \"", request.channel(), "\" is a ", v1::ChannelPattern_Name(pattern).substr(16),
        " channel; attach as ", roles, ", not ", ShortName(role)));
  }
  const v1::GrantRole needed = writes_role ? v1::GRANT_ROLE_PRODUCE : v1::GRANT_ROLE_CONSUME;
  if (!access_.Allowed(*channel, peer, needed)) {
    return absl::PermissionDeniedError(
        absl::StrCat("uid ", peer.uid, " may not attach to channel \"", request.channel(), "\" as ",
                     ShortName(role), ": it lacks the ", absl::AsciiStrToUpper(ShortName(needed)),
                     " role. An administrator can grant it with `shmlanectl grants add ",
                     request.channel(), " --uid ", peer.uid, " --role ", ShortName(needed), "`"));
  }
  if (absl::Status s = attachments_.CheckRoom(*channel, role); !s.ok()) return s;
  const uint64_t shm_bytes = Attachments::ShmBytesFor(channel->spec, role);
  if (absl::Status s = access_.CheckAttach(peer.uid, shm_bytes); !s.ok()) {
    return RejectQuotaLocked(channel->spec.name(), peer.uid, static_cast<uint32_t>(peer.pid), "",
                             std::move(s));
  }
  if (pattern == v1::CHANNEL_PATTERN_BROADCAST &&
      attachments_.NeedsBroadcastRing(channel->spec.name())) {
    // The ring counts once, against the channel's owner.
    const uint64_t ring = Attachments::BroadcastRingBytes(channel->spec);
    const uint64_t limit = access_.Limits(channel->owner_uid).max_shm_bytes();
    const uint64_t held = ledger_.HeldBy(channel->owner_uid);
    if (held + ring > limit) {
      return RejectQuotaLocked(
          channel->spec.name(), peer.uid, static_cast<uint32_t>(peer.pid), "",
          absl::ResourceExhaustedError(absl::StrCat(
              "quota max_shm_bytes: the broadcast ring of channel \"", channel->spec.name(), "\" (",
              ring, " bytes) counts against its owner uid ", channel->owner_uid, ", which uses ",
              held, " of ", limit, " bytes; raise it with `shmlanectl quota set --uid ",
              channel->owner_uid, " --max-shm-bytes N`")));
    }
  }
  absl::StatusOr<uint64_t> id = attachments_.Attach(*channel, socket_fd, peer, request);
  if (id.ok()) access_.Charge(peer.uid);
  ReleaseUsageLocked();
  return id;
}

absl::Status Registry::CheckResume(const PeerCredentials& peer, const v1::Resume& resume) const {
  if (resume.protocol_version() != v1::ATTACH_PROTOCOL_VERSION_1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "attach protocol version ", resume.protocol_version(),
        " is not supported; this shmlaned speaks version 1: upgrade the client library"));
  }
  if (absl::Status s = ValidateChannelName(resume.channel()); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  return attachments_.CheckResume(peer, resume);
}

absl::StatusOr<uint64_t> Registry::FinishResume(int socket_fd, const PeerCredentials& peer,
                                                const v1::Resume& resume,
                                                std::vector<ResumedLaneFds> lanes) {
  absl::MutexLock lock(&mu_);
  const ChannelRecord* channel = catalog_.Find(resume.channel());
  if (channel == nullptr) return ChannelCatalog::NotFound(resume.channel());
  absl::StatusOr<uint64_t> id =
      attachments_.Resume(*channel, socket_fd, peer, resume, std::move(lanes));
  if (id.ok()) access_.Charge(peer.uid);
  ReleaseUsageLocked();
  return id;
}

void Registry::RetireUnclaimed(absl::Time now) {
  absl::MutexLock lock(&mu_);
  attachments_.RetireUnclaimed(now);
  ReleaseUsageLocked();
}

absl::Time Registry::resume_deadline() const {
  absl::MutexLock lock(&mu_);
  return attachments_.resume_deadline();
}

void Registry::SetStateChanged(std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  state_changed_ = std::move(fn);
}

void Registry::Detach(uint64_t attachment_id, DetachKind kind) {
  absl::MutexLock lock(&mu_);
  attachments_.Detach(attachment_id, kind);
  ReleaseUsageLocked();
}

void Registry::GoodbyeAll(absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  attachments_.EndAll(reason);
  ReleaseUsageLocked();
}

void Registry::CheckBackpressure() {
  absl::MutexLock lock(&mu_);
  attachments_.CheckBackpressure();
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
  catalog_.Export(&state);
  access_.Export(&state);
  attachments_.ExportResumable(&state);
  return state;
}

absl::Status Registry::RestoreState(const v1::DaemonState& state) {
  if (state.format_version() != 1) {
    return absl::DataLossError(absl::StrCat("state format version ", state.format_version(),
                                            " is not 1; move the state file away"));
  }
  absl::StatusOr<ChannelCatalog> catalog = ChannelCatalog::Restore(state);
  if (!catalog.ok()) return catalog.status();
  std::vector<std::shared_ptr<dataplane::Doorbell>> bells;
  for (size_t i = 0; i < catalog->size(); ++i) {
    absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
    if (!bell.ok()) return bell.status();
    bells.push_back(std::make_shared<dataplane::Doorbell>(*std::move(bell)));
  }
  absl::MutexLock lock(&mu_);
  if (attachments_.size() != 0) return absl::FailedPreconditionError("restore with attachments");
  catalog_ = *std::move(catalog);
  attachments_.Clear();
  size_t i = 0;
  for (const ChannelRecord* channel : catalog_.All()) {
    attachments_.AddChannel(channel->spec.name(), std::move(bells[i++]), channel->spec.durable());
  }
  access_.Restore(state);
  attachments_.RestoreResumable(state, absl::Now() + options_.resume_grace);
  return absl::OkStatus();
}

MetricsSnapshot Registry::SnapshotMetrics(bool per_lane) const {
  absl::MutexLock lock(&mu_);
  MetricsSnapshot out;
  const std::vector<const ChannelRecord*> channels = catalog_.All();
  out.channels.reserve(channels.size());
  for (const ChannelRecord* channel : channels) {
    MetricsSnapshot::Channel c;
    c.name = channel->spec.name();
    attachments_.Snapshot(c.name, per_lane, &c);
    out.channels.push_back(std::move(c));
  }
  return out;
}

}  // namespace shmlane::control
