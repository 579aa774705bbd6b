#include "control/access.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace shmlane::control {
namespace {
namespace v1 = ::shmlane::v1;
}  // namespace

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

bool GrantCovers(const v1::Grant& g, const PeerCredentials& peer, v1::GrantRole needed) {
  if (g.role() != needed && g.role() != v1::GRANT_ROLE_ADMIN) return false;
  switch (g.principal().kind_case()) {
    case v1::Principal::kUid:
      return g.principal().uid() == peer.uid;
    case v1::Principal::kGid:
      return g.principal().gid() == peer.gid || std::find(peer.groups.begin(), peer.groups.end(),
                                                          g.principal().gid()) != peer.groups.end();
    case v1::Principal::kAnyone:
      return true;
    default:
      return false;
  }
}

absl::StatusOr<bool> Access::AddGrant(absl::string_view channel, const v1::Grant& grant) {
  if (absl::Status s = ValidateGrant(grant); !s.ok()) return s;
  auto it = grants_.find(channel);
  if (it == grants_.end())
    it = grants_.emplace(std::string(channel), std::vector<v1::Grant>{}).first;
  std::vector<v1::Grant>& grants = it->second;
  for (const v1::Grant& g : grants) {
    if (SameGrant(g, grant)) return false;
  }
  if (grants.size() >= kMaxGrantsPerChannel) {
    return absl::ResourceExhaustedError(absl::StrCat("channel \"", channel, "\" has ",
                                                     kMaxGrantsPerChannel,
                                                     " grants already; grant to a group instead "
                                                     "of single uids"));
  }
  grants.push_back(grant);
  return true;
}

absl::StatusOr<bool> Access::RemoveGrant(absl::string_view channel, const v1::Grant& grant) {
  if (absl::Status s = ValidateGrant(grant); !s.ok()) return s;
  auto it = grants_.find(channel);
  if (it == grants_.end()) return false;
  auto& grants = it->second;
  auto g = std::find_if(grants.begin(), grants.end(),
                        [&](const v1::Grant& x) { return SameGrant(x, grant); });
  if (g == grants.end()) return false;
  grants.erase(g);
  if (grants.empty()) grants_.erase(it);
  return true;
}

std::vector<v1::Grant> Access::Grants(absl::string_view channel) const {
  auto it = grants_.find(channel);
  return it == grants_.end() ? std::vector<v1::Grant>{} : it->second;
}

void Access::DropChannel(absl::string_view channel) {
  if (auto it = grants_.find(channel); it != grants_.end()) grants_.erase(it);
}

bool Access::Allowed(const ChannelRecord& channel, const PeerCredentials& peer,
                     v1::GrantRole needed) const {
  if (peer.uid == 0 || peer.uid == daemon_uid_ || peer.uid == channel.owner_uid) return true;
  auto it = grants_.find(channel.spec.name());
  if (it == grants_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(),
                     [&](const v1::Grant& g) { return GrantCovers(g, peer, needed); });
}

v1::QuotaLimits Access::Limits(uint32_t uid) const {
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

v1::Quota Access::Quota(uint32_t uid, uint32_t channels_owned) const {
  v1::Quota out;
  out.set_uid(uid);
  *out.mutable_limits() = Limits(uid);
  out.set_is_default(quotas_.count(uid) == 0);
  out.mutable_usage()->set_channels(channels_owned);
  auto u = attachments_.find(uid);
  out.mutable_usage()->set_attachments(u == attachments_.end() ? 0 : u->second);
  out.mutable_usage()->set_shm_bytes(ledger_->HeldBy(uid));
  return out;
}

absl::StatusOr<v1::Quota> Access::SetQuota(const v1::SetQuotaRequest& req,
                                           uint32_t channels_owned) {
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
  return Quota(req.uid(), channels_owned);
}

absl::Status Access::CheckCreate(uint32_t owner, uint32_t owned,
                                 const v1::ChannelSpec& spec) const {
  const v1::QuotaLimits limits = Limits(owner);
  if (owned >= limits.max_channels()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "quota max_channels: uid ", owner, " already owns ", owned, " of ", limits.max_channels(),
        " channels; delete one or raise it with `shmlanectl quota set --uid ", owner,
        " --max-channels N`"));
  }
  if (spec.max_frame_bytes() > limits.max_frame_bytes()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "quota max_frame_bytes: uid ", owner, " may create channels with frames up to ",
        limits.max_frame_bytes(), " bytes, asked for ", spec.max_frame_bytes(),
        "; raise it with `shmlanectl quota set --uid ", owner, " --max-frame-bytes N`"));
  }
  return absl::OkStatus();
}

absl::Status Access::CheckAttach(uint32_t uid, uint64_t shm_bytes) const {
  const v1::QuotaLimits limits = Limits(uid);
  auto u = attachments_.find(uid);
  const uint32_t attachments = u == attachments_.end() ? 0 : u->second;
  const uint64_t held = ledger_->HeldBy(uid);
  if (attachments + 1 > limits.max_attachments()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "quota max_attachments: uid ", uid, " has ", attachments, " of ", limits.max_attachments(),
        " attachments; detach one or raise it with `shmlanectl quota set --uid ", uid,
        " --max-attachments N`"));
  }
  if (held + shm_bytes > limits.max_shm_bytes()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("quota max_shm_bytes: uid ", uid, " uses ", held, " of ",
                     limits.max_shm_bytes(), " bytes and this attachment needs ", shm_bytes,
                     "; detach something or raise it with `shmlanectl quota set --uid ", uid,
                     " --max-shm-bytes N`"));
  }
  return absl::OkStatus();
}

void Access::Charge(uint32_t uid) { ++attachments_[uid]; }

void Access::Release(uint32_t uid) {
  auto it = attachments_.find(uid);
  if (it == attachments_.end()) return;
  if (--it->second == 0) attachments_.erase(it);
}

void Access::Export(v1::DaemonState* state) const {
  for (v1::PersistedChannel& pc : *state->mutable_channels()) {
    for (const v1::Grant& g : Grants(pc.spec().name())) *pc.add_grants() = g;
  }
  for (const auto& [uid, limits] : quotas_) {
    v1::PersistedQuota* q = state->add_quotas();
    q->set_uid(uid);
    *q->mutable_limits() = limits;
  }
}

void Access::Restore(const v1::DaemonState& state) {
  grants_.clear();
  for (const v1::PersistedChannel& pc : state.channels()) {
    std::vector<v1::Grant> grants;
    for (const v1::Grant& g : pc.grants()) {
      if (ValidateGrant(g).ok() && grants.size() < kMaxGrantsPerChannel) grants.push_back(g);
    }
    if (!grants.empty()) grants_[pc.spec().name()] = std::move(grants);
  }
  quotas_.clear();
  for (const v1::PersistedQuota& q : state.quotas()) quotas_[q.uid()] = q.limits();
}

}  // namespace shmlane::control
