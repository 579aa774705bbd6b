// Registry: the daemon's model of channels, grants, quotas, attachments and
// lanes, and the rules that connect them. The gRPC services call the control
// methods; the attach server calls Attach()/Detach(); the exporter and
// GetChannelStats read lane counters through Observe() on the daemon's own
// mapping of every live lane.
//
// The registry sends attach-protocol messages (AttachReply, LaneAdded,
// LaneRemoved, Goodbye) itself, on sockets it does not own: the attach server
// owns every connection fd and closes it only after Detach() has removed the
// attachment, so an fd the registry knows is always open. To end an attachment
// the registry shuts the socket down, which the attach server sees as a
// hang-up. Sends never block; a peer whose queue is full is disconnected.
//
// Thread safety: every public method may be called from any thread; one
// absl::Mutex guards the whole model (operations are short: no blocking I/O
// under it except non-blocking sends and memfd creation).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "control/daemon_metrics.h"
#include "control/event_bus.h"
#include "dataplane/doorbell.h"
#include "dataplane/lane.h"
#include "dataplane/segment.h"
#include "shmlane/v1/attach.pb.h"
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
inline constexpr size_t kMaxGrantsPerChannel = 256;
inline constexpr size_t kMaxQuotaEntries = 4096;
inline constexpr size_t kMaxClientNameBytes = 63;

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

// Counters summed over lanes (live or retired). Latency buckets as in
// dataplane::ConsumerCounters.
struct LaneTotals {
  uint64_t frames_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t frames_received = 0;
  uint64_t bytes_received = 0;
  uint64_t backpressure_events = 0;
  uint64_t dropped_frames = 0;
  uint64_t wakeups = 0;
  uint64_t latency_count = 0;
  uint64_t latency_sum_ns = 0;
  uint64_t latency_buckets[dataplane::kLatencyBuckets] = {};

  void Add(const dataplane::LaneSnapshot& snapshot);
  void Add(const LaneTotals& other);
};

// What the exporter needs, copied under the lock at scrape time.
struct MetricsSnapshot {
  struct Lane {
    uint64_t lane_id = 0;
    LaneTotals counters;
    uint64_t occupancy_bytes = 0;
    uint64_t capacity_bytes = 0;
  };
  struct Channel {
    std::string name;
    LaneTotals totals;  // live + retired
    uint64_t occupancy_bytes = 0;
    uint64_t capacity_bytes = 0;
    uint32_t attached_clients = 0;
    std::vector<Lane> lanes;  // live lanes
  };
  std::vector<Channel> channels;
};

// The p-quantile (0 < q < 1) of a latency histogram as the upper bound of the
// bucket that holds it, in nanoseconds; 0 when there are no samples.
uint64_t LatencyQuantileNs(const uint64_t (&buckets)[dataplane::kLatencyBuckets], double q);

// Validates a channel name: 1..63 chars of [a-z0-9._-], starting with [a-z0-9].
absl::Status ValidateChannelName(absl::string_view name);

struct RegistryOptions {
  uint32_t daemon_uid = 0;
  DaemonMetrics* metrics = nullptr;  // not owned; required
  EventBus* events = nullptr;        // not owned; required
};

class Registry {
 public:
  explicit Registry(RegistryOptions options);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // ---- Control plane ----
  absl::StatusOr<shmlane::v1::Channel> CreateChannel(const shmlane::v1::CreateChannelRequest& req);
  absl::StatusOr<shmlane::v1::Channel> GetChannel(absl::string_view name) const;
  absl::StatusOr<shmlane::v1::ListChannelsResponse> ListChannels(
      const shmlane::v1::ListChannelsRequest& req) const;
  absl::StatusOr<shmlane::v1::DeleteChannelResponse> DeleteChannel(
      const shmlane::v1::DeleteChannelRequest& req);
  absl::StatusOr<bool> AddGrant(const shmlane::v1::AddGrantRequest& req);
  absl::StatusOr<bool> RemoveGrant(const shmlane::v1::RemoveGrantRequest& req);
  absl::StatusOr<shmlane::v1::ListGrantsResponse> ListGrants(absl::string_view channel) const;
  absl::StatusOr<shmlane::v1::Quota> SetQuota(const shmlane::v1::SetQuotaRequest& req);
  absl::StatusOr<shmlane::v1::Quota> GetQuota(uint32_t uid) const;
  absl::StatusOr<shmlane::v1::ChannelStats> GetChannelStats(
      const shmlane::v1::GetChannelStatsRequest& req) const;

  // ---- Attach plane (called by the attach server) ----
  // Checks and performs an attachment for the process behind `socket_fd` and
  // sends its AttachReply (+ fds). On error nothing was sent: the caller
  // replies with the status and closes the connection.
  absl::StatusOr<uint64_t> Attach(int socket_fd, const PeerCredentials& peer,
                                  const shmlane::v1::AttachRequest& request);
  enum class DetachKind { kClean, kDied, kProtocolError };
  // Ends an attachment (no-op if the daemon already ended it). Closes its
  // lanes, tells the peers, releases quota. The caller closes the fd after.
  void Detach(uint64_t attachment_id, DetachKind kind);
  // Shutdown: Goodbye to every attachment and close every lane.
  void GoodbyeAll(absl::string_view reason);
  // Compares each live lane's backpressure counter with the previous call and
  // publishes BACKPRESSURE_STARTED/ENDED events. Called periodically.
  void CheckBackpressure();
  size_t attachments() const;

  // ---- State and metrics ----
  shmlane::v1::DaemonState ExportState() const;
  // Replaces channels, grants and quotas; only before any attachment exists.
  absl::Status RestoreState(const shmlane::v1::DaemonState& state);
  MetricsSnapshot SnapshotMetrics(bool per_lane) const;

 private:
  struct Lane {
    uint64_t id = 0;
    enum class Kind { kStream, kRequest, kReply } kind = Kind::kStream;
    dataplane::Segment segment;  // the daemon's (creator's) mapping
    std::shared_ptr<dataplane::Doorbell> producer_bell;
    std::shared_ptr<dataplane::Doorbell> consumer_bell;
    uint64_t client_attachment = 0;  // the producer (STREAM) or client (REQUEST_REPLY)
    uint64_t last_backpressure = 0;
    bool in_backpressure = false;
  };
  struct Attachment {
    uint64_t id = 0;
    int fd = -1;  // owned by the attach server
    std::string channel;
    shmlane::v1::Role role = shmlane::v1::ROLE_UNSPECIFIED;
    PeerCredentials peer;
    std::string client_name;
    std::shared_ptr<dataplane::Doorbell> bell;  // its own doorbell
    std::vector<uint64_t> lanes;                // lanes created for it (client side)
    uint64_t shm_bytes = 0;                     // charged to peer.uid
  };
  struct Channel {
    shmlane::v1::ChannelSpec spec;  // defaults filled in
    uint32_t owner_uid = 0;
    int64_t create_unix_ns = 0;
    std::vector<shmlane::v1::Grant> grants;
    // The doorbell of the consumer (STREAM) or server (REQUEST_REPLY); it
    // outlives consumers so every lane of the channel can name it.
    std::shared_ptr<dataplane::Doorbell> consumer_bell;
    uint64_t consumer_attachment = 0;  // 0 = none
    std::vector<uint64_t> client_attachments;
    std::map<uint64_t, Lane> lanes;
    LaneTotals retired;
  };
  struct Usage {
    uint32_t attachments = 0;
    uint64_t shm_bytes = 0;
  };

  shmlane::v1::Channel DescribeLocked(const Channel& channel) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  shmlane::v1::QuotaLimits LimitsLocked(uint32_t uid) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  shmlane::v1::Quota QuotaLocked(uint32_t uid) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  uint32_t ChannelsOwnedLocked(uint32_t uid) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool AllowedLocked(const Channel& channel, const PeerCredentials& peer,
                     shmlane::v1::GrantRole needed) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status RejectQuotaLocked(const Channel& channel, const PeerCredentials& peer,
                                 std::string message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Lane> NewLaneLocked(const Channel& channel, Lane::Kind kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Describes `lane` as seen by its client (producer) or consumer side and
  // appends its fds to `fds`.
  absl::Status DescribeLaneLocked(const Channel& channel, const Lane& lane, bool for_consumer_side,
                                  shmlane::v1::LaneDescription* out,
                                  std::vector<dataplane::UniqueFd>* fds) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Sends the lanes of `client` to the channel's consumer as LaneAdded.
  void OfferLanesToConsumerLocked(Channel& channel, const Attachment& client)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Closes and retires a lane; tells the consumer side (LaneRemoved) unless
  // `tell_consumer` is false.
  void RetireLaneLocked(Channel& channel, uint64_t lane_id, uint32_t reason, absl::string_view why,
                        bool tell_consumer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes an attachment from the model; sends Goodbye and shuts the socket
  // down when `goodbye` is non-empty.
  void EndAttachmentLocked(uint64_t attachment_id, shmlane::v1::EventType event,
                           absl::string_view why, absl::string_view goodbye)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(const Attachment& attachment, const shmlane::v1::AttachMessage& message,
                  const std::vector<dataplane::UniqueFd>& fds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked(shmlane::v1::EventType type, const std::string& channel,
                     const Attachment* attachment, std::string detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RegistryOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Channel, std::less<>> channels_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Attachment> attachments_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, shmlane::v1::QuotaLimits> quotas_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, Usage> usage_ ABSL_GUARDED_BY(mu_);
  uint64_t next_attachment_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_lane_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace shmlane::control
