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
// hang-up. Sends never block: when the kernel has no room for a packet (the
// peer reads its socket only now and then, or too many fds are in flight)
// the packet and its fds wait in the attachment's outbound queue, which the
// attach loop flushes when the socket turns writable (OutboundWaker). Only a
// queue beyond kMaxOutbound* disconnects the peer.
//
// Thread safety: every public method may be called from any thread; one
// absl::Mutex guards the whole model (operations are short: no blocking I/O
// under it except non-blocking sends and memfd creation).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
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
#include "absl/time/time.h"
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

// Per-connection outbound queue bounds: a peer that lets more than this pile
// up unread is disconnected (shmlane_attach_send_overflows_total). Generous
// on purpose: a consumer of a 4096-producer channel that sleeps through a
// full churn of its producers queues 2 × 4096 packets and 8192 fds (16384
// for a REQUEST_REPLY server), while each queued fd is a daemon fd.
inline constexpr size_t kMaxOutboundMessages = 16384;
inline constexpr size_t kMaxOutboundBytes = size_t{64} << 20;  // serialized
inline constexpr size_t kMaxOutboundFds = 32768;
// Pause before retrying a send the kernel refused with ENOBUFS or
// ETOOMANYREFS (no poll event announces the end of either).
inline constexpr absl::Duration kOutboundRetryDelay = absl::Milliseconds(10);
// How long an attachment the daemon ended (Goodbye) may take to read what is
// still queued for it before its socket is shut down anyway.
inline constexpr absl::Duration kEndedFlushTimeout = absl::Seconds(2);

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

// How the registry asks the attach loop to flush outbound queues later. The
// attach server implements it; methods are called with the registry's lock
// held, from any thread, and must not call back into the registry.
class OutboundWaker {
 public:
  virtual ~OutboundWaker() = default;
  // Starts (true) or stops (false) calling Registry::FlushOutbound for the
  // attachment on `socket_fd` whenever the socket is writable.
  virtual void WatchWritable(int socket_fd, bool watch) = 0;
  // Asks for a Registry::ServiceOutbound call no later than `when`.
  virtual void WakeAt(absl::Time when) = 0;
};

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
  // sends (or queues, see SendLocked) its AttachReply (+ fds). On error
  // nothing was sent: the caller replies with the status and closes the
  // connection.
  absl::StatusOr<uint64_t> Attach(int socket_fd, const PeerCredentials& peer,
                                  const shmlane::v1::AttachRequest& request);
  enum class DetachKind { kClean, kDied, kProtocolError };
  // Ends an attachment (no-op if the daemon already ended it). Closes its
  // lanes, tells the peers, releases quota. The caller closes the fd after.
  void Detach(uint64_t attachment_id, DetachKind kind);
  // Shutdown: Goodbye to every attachment and close every lane. Goodbyes
  // that cannot be sent at once stay queued (HasOutbound) until flushed or
  // SetOutboundWaker(nullptr).
  void GoodbyeAll(absl::string_view reason);

  // ---- Outbound queues (called by the attach server) ----
  // Installs (or, with nullptr, removes) the loop that flushes queues.
  // Without one, a packet that cannot be sent at once disconnects the peer;
  // removing it drops every queue and shuts those sockets down.
  void SetOutboundWaker(OutboundWaker* waker);
  // The socket of `attachment_id` is writable: sends what is queued.
  void FlushOutbound(uint64_t attachment_id);
  // Retries sends refused with ENOBUFS/ETOOMANYREFS and shuts down ended
  // attachments whose flush timed out; asks the waker for the next call.
  void ServiceOutbound();
  // True while some queue holds packets.
  bool HasOutbound() const;
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
  // A packet the kernel could not take yet: serialized, with its own
  // duplicates of the fds, so a lane retired meanwhile does not matter.
  struct Packet {
    std::string bytes;
    std::vector<dataplane::UniqueFd> fds;
  };
  // The packets waiting for one connection, in send order. Exists only
  // while non-empty, or to mark a peer that overflowed (until Detach).
  struct Outbox {
    int fd = -1;
    std::deque<Packet> packets;
    size_t bytes = 0;
    size_t fds = 0;
    bool watching = false;                         // EPOLLOUT armed through the waker
    absl::Time retry_at = absl::InfiniteFuture();  // ENOBUFS/ETOOMANYREFS
    // Set when the daemon ended the attachment (Goodbye queued): shut the
    // socket down once flushed, or at this deadline.
    absl::Time end_deadline = absl::InfiniteFuture();
    bool ended = false;
    bool overflowed = false;  // dropped; further sends are discarded
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
  // Sends now, or queues behind what is already queued for the attachment
  // (order is per connection). Takes the fds.
  void SendLocked(const Attachment& attachment, const shmlane::v1::AttachMessage& message,
                  std::vector<dataplane::UniqueFd> fds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends queued packets until the kernel refuses; erases the outbox once
  // empty (shutting an ended attachment's socket down).
  void FlushOutboxLocked(uint64_t attachment_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WatchLocked(Outbox& outbox, bool watch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the queue of a peer that let it grow beyond the bounds and shuts
  // its socket down; Detach then ends the attachment.
  void OverflowLocked(Outbox& outbox) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the waker when ServiceOutbound is next due.
  void ScheduleServiceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  // By attachment id; may outlive the attachment (ended, flushing Goodbye).
  std::map<uint64_t, Outbox> outboxes_ ABSL_GUARDED_BY(mu_);
  OutboundWaker* waker_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace shmlane::control
