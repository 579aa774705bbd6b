// Access: who may do what. Grants per channel (which uid, gid or anyone may
// produce, consume or administer it), quotas per uid (channels, shm bytes,
// attachments, frame size) with the usage they are checked against, and the
// one function that answers "may this process attach to this channel in this
// role". Used by the Registry for both the control services and the attach
// path; knows nothing of lanes or sockets.
//
// Thread safety: none of its own. The Registry owns the only instance and
// calls it with Registry::mu_ held (see registry.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "control/channel_catalog.h"
#include "control/shm_ledger.h"
#include "shmlane/v1/control.pb.h"
#include "shmlane/v1/state.pb.h"

namespace shmlane::control {

inline constexpr size_t kMaxGrantsPerChannel = 256;
inline constexpr size_t kMaxQuotaEntries = 4096;

// Quota defaults for a uid with no SetQuota.
inline constexpr uint32_t kDefaultQuotaMaxChannels = 64;
inline constexpr uint64_t kDefaultQuotaMaxShmBytes = uint64_t{1} << 30;
inline constexpr uint32_t kDefaultQuotaMaxAttachments = 256;
inline constexpr uint32_t kDefaultQuotaMaxFrameBytes = 16 << 20;

// The kernel-verified identity of an attaching process (SO_PEERCRED and
// SO_PEERGROUPS).
struct PeerCredentials {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  std::vector<uint32_t> groups;  // supplementary groups
};

// InvalidArgument unless the grant names one principal and one role.
absl::Status ValidateGrant(const shmlane::v1::Grant& grant);
// Same principal and role.
bool SameGrant(const shmlane::v1::Grant& a, const shmlane::v1::Grant& b);
// Whether `grant` gives `peer` the role `needed` (ADMIN implies every role;
// a gid grant matches the primary and every supplementary group).
bool GrantCovers(const shmlane::v1::Grant& grant, const PeerCredentials& peer,
                 shmlane::v1::GrantRole needed);

class Access {
 public:
  // Root, `daemon_uid` and a channel's owner may do everything on it.
  // `ledger` (not owned) says how much lane memory each uid holds.
  Access(uint32_t daemon_uid, const ShmLedger* ledger) : daemon_uid_(daemon_uid), ledger_(ledger) {}

  // ---- Grants (the caller has checked that the channel exists) ----
  // true if added, false if an equal grant was there already.
  absl::StatusOr<bool> AddGrant(absl::string_view channel, const shmlane::v1::Grant& grant);
  // true if removed, false if there was no such grant.
  absl::StatusOr<bool> RemoveGrant(absl::string_view channel, const shmlane::v1::Grant& grant);
  std::vector<shmlane::v1::Grant> Grants(absl::string_view channel) const;
  // Forgets the grants of a deleted channel.
  void DropChannel(absl::string_view channel);
  // Whether `peer` may take `needed` on `channel`.
  bool Allowed(const ChannelRecord& channel, const PeerCredentials& peer,
               shmlane::v1::GrantRole needed) const;

  // ---- Quotas ----
  // The limits in force for `uid` (defaults where unset).
  shmlane::v1::QuotaLimits Limits(uint32_t uid) const;
  // The quota report of `uid`; `channels_owned` comes from the catalog.
  shmlane::v1::Quota Quota(uint32_t uid, uint32_t channels_owned) const;
  absl::StatusOr<shmlane::v1::Quota> SetQuota(const shmlane::v1::SetQuotaRequest& req,
                                              uint32_t channels_owned);
  // ResourceExhausted (with the command that raises the limit) if `owner`,
  // who owns `channels_owned` channels, may not create `spec`.
  absl::Status CheckCreate(uint32_t owner, uint32_t channels_owned,
                           const shmlane::v1::ChannelSpec& spec) const;
  // ResourceExhausted if one more attachment needing `shm_bytes` more lane
  // memory would take `uid` over its quota (memory as the ledger holds it).
  absl::Status CheckAttach(uint32_t uid, uint64_t shm_bytes) const;
  // Attachment counts: Release undoes one Charge; never negative.
  void Charge(uint32_t uid);
  void Release(uint32_t uid);

  // ---- State file ----
  // Adds the grants to the channels already in `state` and the quotas.
  void Export(shmlane::v1::DaemonState* state) const;
  // Replaces grants and quotas with those in `state` (invalid grants and
  // those beyond the bound are skipped, as a newer daemon may write them).
  void Restore(const shmlane::v1::DaemonState& state);

 private:
  const uint32_t daemon_uid_;
  const ShmLedger* const ledger_;
  std::map<std::string, std::vector<shmlane::v1::Grant>, std::less<>> grants_;
  std::map<uint32_t, shmlane::v1::QuotaLimits> quotas_;
  std::map<uint32_t, uint32_t> attachments_;
};

}  // namespace shmlane::control
