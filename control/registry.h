// Registry: the daemon's model, one lock around four parts with one job each
// (docs/architecture.md has the diagram):
//
//   ChannelCatalog  channel definitions, validation, defaults   channel_catalog.h
//   Access          grants, quotas and usage; "may U do X on C"  access.h
//   Attachments     live lanes and attached processes           attachments.h
//   OutboundQueues  attach packets waiting for a slow peer      outbound.h
//
// The gRPC services call the control methods; the attach server calls
// Attach()/Detach() and the outbound methods; the exporter and
// GetChannelStats read lane counters from the daemon's own mapping of every
// live lane. The Registry enforces the rules that connect the parts: a
// channel's grants and lanes go with it, an attachment is checked by Access
// before Attachments creates it, and what an ended attachment held goes back
// to Access.
//
// Thread safety: every public method may be called from any thread. mu_
// guards the catalog, access and attachments (operations are short: no
// blocking I/O under it except non-blocking sends and memfd creation).
// OutboundQueues has its own lock, taken after mu_ (never before), so the
// attach loop can flush queues without waiting for the model. EventBus and
// DaemonMetrics locks come last.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "control/access.h"
#include "control/attachments.h"
#include "control/caller.h"
#include "control/channel_catalog.h"
#include "control/daemon_metrics.h"
#include "control/event_bus.h"
#include "control/lane_stats.h"
#include "control/outbound.h"
#include "control/shm_ledger.h"
#include "shmlane/v1/attach.pb.h"
#include "shmlane/v1/control.pb.h"
#include "shmlane/v1/state.pb.h"

namespace shmlane::control {

struct RegistryOptions {
  uint32_t daemon_uid = 0;
  DaemonMetrics* metrics = nullptr;  // not owned; required
  EventBus* events = nullptr;        // not owned; required
  // How long lanes restored from the state file wait for their holders.
  absl::Duration resume_grace = absl::Seconds(10);
};

class Registry {
 public:
  using DetachKind = control::DetachKind;

  // `admin_hint` says who administers, for PERMISSION_DENIED messages
  // (HowToBecomeAdmin in caller.h).
  // `limits` bound the outbound queues (outbound.h).
  explicit Registry(RegistryOptions options,
                    std::string admin_hint = "administrators are root and the daemon's uid",
                    OutboundLimits limits = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // ---- Control plane, authorized per caller ----
  // Administrators (Caller::admin) may do everything. Anyone else may
  // create channels it owns (within its quota), see only channels it has a
  // role on (owner, or a grant that covers it), delete channels it owns,
  // manage grants where it is the owner or has ADMIN, and read its own
  // quota. A channel it has no role on reads as NOT_FOUND, so that names
  // cannot be probed.
  absl::StatusOr<shmlane::v1::Channel> CreateChannel(const Caller& caller,
                                                     const shmlane::v1::CreateChannelRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::Channel> GetChannel(const Caller& caller,
                                                  absl::string_view name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::ListChannelsResponse> ListChannels(
      const Caller& caller, const shmlane::v1::ListChannelsRequest& req) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::DeleteChannelResponse> DeleteChannel(
      const Caller& caller, const shmlane::v1::DeleteChannelRequest& req) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<bool> AddGrant(const Caller& caller, const shmlane::v1::AddGrantRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<bool> RemoveGrant(const Caller& caller, const shmlane::v1::RemoveGrantRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::ListGrantsResponse> ListGrants(const Caller& caller,
                                                             absl::string_view channel) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::Quota> SetQuota(const Caller& caller,
                                              const shmlane::v1::SetQuotaRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::Quota> GetQuota(const Caller& caller, uint32_t uid) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::ChannelStats> GetChannelStats(
      const Caller& caller, const shmlane::v1::GetChannelStatsRequest& req) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // OK if `caller` may watch events of `channel` (empty: every channel,
  // administrators only).
  absl::Status MayWatch(const Caller& caller, absl::string_view channel) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Control plane as the daemon itself (administrator) ----
  absl::StatusOr<shmlane::v1::Channel> CreateChannel(const shmlane::v1::CreateChannelRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The daemon's own (--declare): gives an existing channel a new spec and
  // owner, keeping its grants, in one step. FailedPrecondition while any
  // process is attached (or a retired lane still drains); quota as for
  // CreateChannel; NotFound if it does not exist.
  absl::StatusOr<shmlane::v1::Channel> ReplaceChannel(const shmlane::v1::CreateChannelRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::Channel> GetChannel(absl::string_view name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::ListChannelsResponse> ListChannels(
      const shmlane::v1::ListChannelsRequest& req) const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::DeleteChannelResponse> DeleteChannel(
      const shmlane::v1::DeleteChannelRequest& req) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<bool> AddGrant(const shmlane::v1::AddGrantRequest& req) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<bool> RemoveGrant(const shmlane::v1::RemoveGrantRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::ListGrantsResponse> ListGrants(absl::string_view channel) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::Quota> SetQuota(const shmlane::v1::SetQuotaRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::Quota> GetQuota(uint32_t uid) const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<shmlane::v1::ChannelStats> GetChannelStats(
      const shmlane::v1::GetChannelStatsRequest& req) const ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Attach plane (called by the attach server) ----
  // Checks and performs an attachment for the process behind `socket_fd` and
  // sends (or queues) its AttachReply (+ fds). On error nothing was sent:
  // the caller replies with the status and closes the connection.
  absl::StatusOr<uint64_t> Attach(int socket_fd, const PeerCredentials& peer,
                                  const shmlane::v1::AttachRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Ends an attachment (no-op if the daemon already ended it). Closes its
  // lanes, tells the peers, releases quota. The caller closes the fd after.
  void Detach(uint64_t attachment_id, DetachKind kind) ABSL_LOCKS_EXCLUDED(mu_);
  // Shutdown: Goodbye to every attachment and close every lane. Goodbyes
  // that cannot be sent at once stay queued (HasOutbound) until flushed or
  // SetOutboundWaker(nullptr).
  void GoodbyeAll(absl::string_view reason) ABSL_LOCKS_EXCLUDED(mu_);
  // Compares each live lane's backpressure counter with the previous call and
  // publishes BACKPRESSURE_STARTED/ENDED events. Called periodically.
  void CheckBackpressure() ABSL_LOCKS_EXCLUDED(mu_);
  size_t attachments() const ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Resume (a restarted daemon; attachments.h) ----
  // Step 1 of a Resume connection, before any fd is accepted on it.
  absl::Status CheckResume(const PeerCredentials& peer, const shmlane::v1::Resume& resume) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Step 2: re-adopts the lanes that pass and sends the ResumeReply; the
  // attachment counts against peer.uid's quota again. On error nothing was
  // sent: the caller replies with the status and closes the connection.
  absl::StatusOr<uint64_t> FinishResume(int socket_fd, const PeerCredentials& peer,
                                        const shmlane::v1::Resume& resume,
                                        std::vector<ResumedLaneFds> lanes) ABSL_LOCKS_EXCLUDED(mu_);
  // Retires what nobody resumed once the grace period is over.
  void RetireUnclaimed(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // When RetireUnclaimed is due (InfiniteFuture: nothing is pending).
  absl::Time resume_deadline() const ABSL_LOCKS_EXCLUDED(mu_);
  // Called (under mu_; it must only queue work, e.g. StateWriter::Persist)
  // whenever attachments or lanes that the state file records changed.
  void SetStateChanged(std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Outbound queues (called by the attach server; see outbound.h) ----
  void SetOutboundWaker(OutboundWaker* waker) { outbound_.SetWaker(waker); }
  void FlushOutbound(uint64_t attachment_id) { outbound_.Flush(attachment_id); }
  void ServiceOutbound() { outbound_.Service(); }
  bool HasOutbound() const { return outbound_.HasPending(); }

  // ---- State and metrics ----
  shmlane::v1::DaemonState ExportState() const ABSL_LOCKS_EXCLUDED(mu_);
  // Replaces channels, grants and quotas; only before any attachment exists.
  absl::Status RestoreState(const shmlane::v1::DaemonState& state) ABSL_LOCKS_EXCLUDED(mu_);
  MetricsSnapshot SnapshotMetrics(bool per_lane) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  shmlane::v1::Channel DescribeLocked(const ChannelRecord& channel) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Whether `caller` has any role on `channel` (sees it).
  bool SeesLocked(const Caller& caller, const ChannelRecord& channel) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Whether `caller` may manage `channel`'s grants (owner or ADMIN).
  bool AdministersLocked(const Caller& caller, const ChannelRecord& channel) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The channel if `caller` sees it, else NOT_FOUND (also when it exists).
  absl::StatusOr<const ChannelRecord*> VisibleLocked(const Caller& caller,
                                                     absl::string_view name) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Counts a quota refusal, publishes its QUOTA_REJECTED event (channel,
  // the refused uid and pid, `what` before the message) and returns `quota`.
  absl::Status RejectQuotaLocked(absl::string_view channel, uint32_t uid, uint32_t pid,
                                 absl::string_view what, absl::Status quota)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives the usage of attachments that ended back to Access, and asks for
  // a state write when the attachments changed.
  void ReleaseUsageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RegistryOptions options_;
  const std::string admin_hint_;
  // Declared before everything that holds charges, so destroyed after them.
  ShmLedger ledger_;         // own leaf lock
  OutboundQueues outbound_;  // own lock; after mu_ in the lock order
  mutable absl::Mutex mu_;
  ChannelCatalog catalog_ ABSL_GUARDED_BY(mu_);
  Access access_ ABSL_GUARDED_BY(mu_);
  Attachments attachments_ ABSL_GUARDED_BY(mu_);
  std::function<void()> state_changed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmlane::control
