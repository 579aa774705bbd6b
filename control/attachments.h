// Attachments: the attach plane's live state. For every channel it holds the
// lanes (the daemon's own mapping of each memfd ring and its doorbells), the
// attached processes (one consumer or server, any number of producers or
// clients up to max_producers), the lanes that are draining, and the
// counters of retired lanes. It
// creates lanes at attach, hands their fds over (AttachReply, LaneAdded),
// closes them as supervisor when a peer goes away (LaneRemoved, Goodbye)
// and reads their shared counters for stats, metrics and backpressure
// events.
//
// Exact totals: a lane whose writer went away while its reader is still
// attached is *draining*: closed, but the reader may still be consuming what
// the writer left in the ring, and its counters in shm keep moving. The
// daemon keeps its mapping and reads it like a live lane until the reader
// has consumed everything up to the writer's final tail, has closed its
// side, or has gone; only then are its counters folded into the channel's
// retired totals (at most kMaxDrainingLanes per channel, the oldest folded
// first beyond that, so a reader that never drains cannot pin daemon fds).
//
// Who may attach and within which quota is decided before Attach() by the
// Registry (Access); the usage an ended attachment held is handed back
// through TakeReleased() so that the Registry can return it to Access.
// Packets go out through OutboundQueues, never blocking.
//
// Resume (attachments_resume.cc): live STREAM and REQUEST_REPLY attachments
// and lanes are exported into the state file (credentials as SHA-256). A
// restarted daemon restores them as *pending* records; a holder that comes
// back hands its lanes over (Resume), each checked as untrusted input, and
// the lanes are supervised, counted and charged again. What nobody claims by
// the grace deadline is retired (RetireUnclaimed).
//
// Thread safety: none of its own. The Registry owns the only instance and
// calls it with Registry::mu_ held (see registry.h); it calls into
// OutboundQueues and EventBus, which take their own locks after that one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "control/access.h"
#include "control/channel_catalog.h"
#include "control/daemon_metrics.h"
#include "control/event_bus.h"
#include "control/lane_stats.h"
#include "control/outbound.h"
#include "control/shm_ledger.h"
#include "dataplane/broadcast.h"
#include "dataplane/doorbell.h"
#include "dataplane/segment.h"
#include "shmlane/v1/attach.pb.h"
#include "shmlane/v1/control.pb.h"
#include "shmlane/v1/state.pb.h"

namespace shmlane::control {

inline constexpr size_t kMaxClientNameBytes = 63;
// Draining lanes kept per channel (see above).
inline constexpr size_t kMaxDrainingLanes = 256;

// Why an attach connection ended, as the attach server saw it.
enum class DetachKind { kClean, kDied, kProtocolError };

// An attachment that ended: its uid's attachment count goes down. (Its
// lanes' memory is on the ShmLedger until the daemon lets go of it.)
struct ReleasedUsage {
  uint32_t uid = 0;
};

// Lane ids and attachment ids are reserved in blocks of this many: the state
// file holds the bound, written when half a block is used, so a restarted
// daemon never hands out an id its predecessor may have used.
inline constexpr uint64_t kIdBlock = 4096;
// Most lanes one Resume may hand back (a consumer of max_producers, 4096).
inline constexpr uint32_t kMaxResumeLanes = 8192;

// One lane handed back in ResumeLanes, with the fds it named.
struct ResumedLaneFds {
  shmlane::v1::ResumedLane lane;
  dataplane::UniqueFd segment;
  dataplane::UniqueFd producer_bell;
  dataplane::UniqueFd consumer_bell;
};

class Attachments {
 public:
  // `ledger` is charged with every lane's memory for as long as the daemon
  // holds it (its mapping, or a copy of its memfd in an outbound queue).
  Attachments(OutboundQueues* outbound, ShmLedger* ledger, EventBus* events, DaemonMetrics* metrics)
      : outbound_(outbound), ledger_(ledger), events_(events), metrics_(metrics) {}
  Attachments(const Attachments&) = delete;
  Attachments& operator=(const Attachments&) = delete;

  // Shared memory one attachment in `role` takes on `spec`: its lanes with
  // their headers (none for the consumer side, which maps its peers' lanes).
  // BROADCAST: a subscriber takes its 4 KiB cursor page, a publisher
  // nothing of its own (the ring is the channel's, see BroadcastRingBytes).
  static uint64_t ShmBytesFor(const shmlane::v1::ChannelSpec& spec, shmlane::v1::Role role);
  // BROADCAST: the ring (header, slot table, frame area). It is created with
  // the channel's first attachment and counted once, against the channel
  // owner's uid, until the last attachment of the channel ends or the
  // publisher goes away (docs/architecture.md).
  static uint64_t BroadcastRingBytes(const shmlane::v1::ChannelSpec& spec);
  // Whether the next attach to the BROADCAST channel `name` creates its ring.
  bool NeedsBroadcastRing(absl::string_view name) const;

  // ---- Channels ----
  // Starts tracking a channel. `consumer_bell` is the doorbell of its
  // consumer (STREAM) or server (REQUEST_REPLY), named by every lane.
  void AddChannel(const std::string& name, std::shared_ptr<dataplane::Doorbell> consumer_bell,
                  bool durable);
  // ChannelSpec.durable changed (ReplaceChannel of a channel nobody holds).
  void SetDurable(absl::string_view name, bool durable);
  // Closes every lane of the channel, ends its attachments with `goodbye`
  // and forgets it. Returns how many attachments were ended.
  uint32_t RemoveChannel(absl::string_view name, absl::string_view goodbye);
  // Forgets every channel; only while no attachment exists.
  void Clear();
  struct Counts {
    uint32_t clients = 0;  // producers or clients
    bool consumer = false;
    uint32_t lanes = 0;
  };
  Counts CountsOf(absl::string_view name) const;

  // ---- Attach and detach ----
  // FailedPrecondition if the channel already has its one consumer/server
  // (or BROADCAST publisher), ResourceExhausted if its max_producers (or
  // max_subscribers) are attached.
  absl::Status CheckRoom(const ChannelRecord& channel, shmlane::v1::Role role) const;
  // Creates the attachment for the process behind `socket_fd` and sends (or
  // queues) its AttachReply with the fds. Access and CheckRoom have passed;
  // The lanes' memory goes on the ledger for peer.uid. On error nothing was
  // sent.
  absl::StatusOr<uint64_t> Attach(const ChannelRecord& channel, int socket_fd,
                                  const PeerCredentials& peer,
                                  const shmlane::v1::AttachRequest& request);
  // Ends an attachment (no-op if the daemon already ended it): closes its
  // lanes and tells the peers. The caller closes the fd after.
  void Detach(uint64_t attachment_id, DetachKind kind);
  // Shutdown: Goodbye to every attachment and close every lane.
  void EndAll(absl::string_view reason);
  // The usage of the attachments ended since the last call.
  std::vector<ReleasedUsage> TakeReleased();
  size_t size() const { return attachments_.size(); }

  // ---- Counters read from the lanes ----
  // Compares each live lane's backpressure counter with the previous call and
  // publishes BACKPRESSURE_STARTED/ENDED events; folds the draining lanes
  // whose reader is done; remembers lanes found broken. Called periodically.
  void CheckBackpressure();
  // Totals (live, draining and retired lanes) and optionally one entry per
  // live or draining lane (draining ones are `closed`).
  void FillStats(absl::string_view name, bool include_lanes, shmlane::v1::ChannelStats* out) const;
  void Snapshot(absl::string_view name, bool per_lane, MetricsSnapshot::Channel* out) const;

  // ---- Resume (attachments_resume.cc) ----
  // Writes the live STREAM/REQUEST_REPLY attachments and lanes, the pending
  // ones, and the id bounds.
  void ExportResumable(shmlane::v1::DaemonState* state) const;
  // Takes the previous daemon's records as pending until `deadline`.
  // Records of channels that no longer exist are dropped. Only at start.
  void RestoreResumable(const shmlane::v1::DaemonState& state, absl::Time deadline);
  // Resume step 1, before any fd is accepted: the attachment is pending, of
  // this channel and role, recorded for peer.uid, and the credential is right.
  absl::Status CheckResume(const PeerCredentials& peer, const shmlane::v1::Resume& resume) const;
  // Resume step 2: validates every lane (credential, lane id known for the
  // channel and this attachment, sealed memfd of the recorded size whose
  // header names the lane, eventfds; the same memfd as the other side's when
  // that side came back first), re-adopts those that pass and sends the
  // ResumeReply with one result per lane, then (consumer side) LaneAdded for
  // the channel's lanes it did not hand back. The attachment's memory is on
  // the ledger again. Error (nothing sent) when step 1 no longer holds.
  absl::StatusOr<uint64_t> Resume(const ChannelRecord& record, int socket_fd,
                                  const PeerCredentials& peer, const shmlane::v1::Resume& resume,
                                  std::vector<ResumedLaneFds> lanes);
  // After the grace deadline: pending attachments that did not come back are
  // gone (their lanes held by the other side are closed and retired, as if
  // the holder died then); pending lanes nobody handed back are dropped.
  // Counted (DaemonMetrics attach result "resume_unclaimed_lane").
  void RetireUnclaimed(absl::Time now);
  // When RetireUnclaimed is next due (InfiniteFuture: nothing pending).
  absl::Time resume_deadline() const {
    return pending_attachments_.empty() && pending_lanes_ == 0 ? absl::InfiniteFuture()
                                                               : resume_deadline_;
  }
  // Whether what ExportResumable writes changed since the last call.
  bool TakeStateChanged() { return std::exchange(state_changed_, false); }

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
    std::shared_ptr<const ShmCharge> charge;  // its memory, on the creator's uid
    // Set once a side reported the lane corrupt (or its header stopped
    // validating), so a peer cannot un-count it by clearing the code.
    bool seen_broken = false;
    // The counters at the latest periodic check: what the lane contributes
    // if its header ever stops validating, so totals never go backwards.
    LaneTotals last_seen;
    // While draining: the attachment that reads it (0 while live).
    uint64_t reader_attachment = 0;
    // Resume: the secret both holders got (LaneDescription) and its hash
    // (persisted). A re-adopted lane's secret is the one its resumer proved.
    std::string credential;
    std::string credential_sha256;
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
    // Its pidfd (SO_PEERPIDFD), handed to its peers in lane descriptions;
    // null where the kernel has none.
    std::shared_ptr<const dataplane::UniqueFd> pidfd;
    uint32_t slot = 0;              // BROADCAST subscriber: its reader slot
    std::string credential_sha256;  // Resume (empty for BROADCAST roles)
  };
  // BROADCAST: one subscriber's reader slot, as the daemon holds it.
  struct Subscriber {
    uint64_t attachment = 0;
    dataplane::Segment page;                           // its cursor page (the daemon's mapping)
    std::shared_ptr<dataplane::Doorbell> reader_bell;  // it parks on it
    std::shared_ptr<dataplane::Doorbell> writer_bell;  // the publisher parks on it
    std::shared_ptr<const ShmCharge> charge;           // the page, on its uid
    // The largest counters read from its page so far (it writes the page
    // and may rewrite them): what it adds to the channel's series, and what
    // is folded into the channel's totals when it leaves. Updated by the
    // const readers under Registry::mu_ (exclusive), hence mutable.
    mutable LaneTotals seen;
    mutable BroadcastTotals seen_broadcast;
  };
  // BROADCAST: the channel's one ring and who is attached to it.
  struct Broadcast {
    dataplane::Segment ring;                           // the daemon's RW mapping
    std::shared_ptr<dataplane::Doorbell> writer_bell;  // the publisher's own bell
    std::shared_ptr<const ShmCharge> charge;           // the ring, on the owner's uid
    uint64_t publisher = 0;                            // 0 = none
    bool closed = false;  // SupervisorCloseBroadcast done: slots are no longer released
    std::map<uint32_t, Subscriber> subscribers;  // by slot
    // The largest publisher counters read from the ring so far (as
    // Subscriber::seen), folded when the ring goes away.
    mutable LaneTotals writer_seen;
    mutable uint64_t detached_seen = 0;
  };
  // Fd index of each peer's pidfd within one packet (attachment id -> index),
  // so the lanes of one peer share one copy.
  using PidfdIndices = std::map<uint64_t, uint32_t>;
  struct LiveChannel {
    // The doorbell of the consumer (STREAM) or server (REQUEST_REPLY); it
    // outlives consumers so every lane of the channel can name it.
    std::shared_ptr<dataplane::Doorbell> consumer_bell;
    uint64_t consumer_attachment = 0;  // 0 = none
    // ChannelSpec.durable: the lanes outlive their consumer (server) and are
    // handed to the next one; lanes whose producer ended meanwhile wait in
    // `draining` with reader_attachment 0.
    bool durable = false;
    std::vector<uint64_t> client_attachments;
    std::map<uint64_t, Lane> lanes;
    // Retired lanes whose reader is still attached, by lane id.
    std::map<uint64_t, Lane> draining;
    LaneTotals retired;
    std::unique_ptr<Broadcast> broadcast;  // BROADCAST, while any attachment exists
    // BROADCAST: counters of departed subscribers and of rings that went
    // away, so that the channel's totals never go backwards; set once a
    // ring was created (the channel then reports broadcast series).
    LaneTotals broadcast_retired;
    BroadcastTotals broadcast_retired_extra;
    bool broadcast_seen = false;
    // Resume: the previous daemon's lanes that no holder handed back yet.
    std::map<uint64_t, shmlane::v1::PersistedLane> pending_lanes;
  };

  // Takes the next id and reserves another block when half of the current
  // one is used (state_changed_).
  uint64_t NextLaneId();
  uint64_t NextAttachmentId();
  // A pending attachment of `channel` on the consumer/server side, if any
  // (the one-consumer rule holds its place during the grace period).
  const shmlane::v1::PersistedAttachment* PendingConsumerOf(absl::string_view channel) const;
  size_t PendingClientsOf(absl::string_view channel) const;
  // Resume helpers (attachments_resume.cc).
  absl::Status AdoptLane(const std::string& name, LiveChannel& channel, uint64_t attachment_id,
                         bool client_side, ResumedLaneFds& in, bool* newly_adopted);
  // The consumer side is gone for good: its lanes close as if it died.
  void EndConsumerSide(const std::string& name, LiveChannel& channel, absl::string_view why);
  absl::StatusOr<Lane> NewLane(const shmlane::v1::ChannelSpec& spec, Lane::Kind kind, uint32_t uid);
  // Describes `lane` as seen by its client (producer) or consumer side and
  // appends its fds to `fds`; the peer's pidfd only once per packet
  // (`pidfds` is the packet's).
  absl::Status DescribeLane(const shmlane::v1::ChannelSpec& spec, const LiveChannel& channel,
                            const Lane& lane, bool for_consumer_side,
                            shmlane::v1::LaneDescription* out,
                            std::vector<dataplane::UniqueFd>* fds, OutboundHolds* holds,
                            PidfdIndices* pidfds) const;
  // Sends the lanes of `client` to the channel's consumer as LaneAdded.
  void OfferLanesToConsumer(const shmlane::v1::ChannelSpec& spec, const LiveChannel& channel,
                            const Attachment& client);
  // Closes and retires a lane; tells the consumer side (LaneRemoved) unless
  // `tell_consumer` is false. The lane drains if its reader is still
  // attached, else its counters are folded at once.
  void RetireLane(const std::string& name, LiveChannel& channel, uint64_t lane_id, uint32_t reason,
                  absl::string_view why, bool tell_consumer);
  // The attachment that reads `lane` (the consumer/server, or the client for
  // a reply lane); 0 when none.
  static uint64_t ReaderOf(const LiveChannel& channel, const Lane& lane);
  // The lane's counters now (the last ones seen if its header is corrupt),
  // with `broken_lanes` sticky.
  static LaneTotals CountersOf(const Lane& lane, const dataplane::LaneSnapshot* snapshot);
  // Adds a lane's final counters to the channel's retired totals.
  static void Fold(LiveChannel& channel, const Lane& lane);
  // Folds the draining lanes read by `reader` (every one when 0).
  static void FoldDrainingOf(LiveChannel& channel, uint64_t reader);
  // Whether the reader of a retired lane has consumed (or given up) all of it.
  static bool DoneReading(const dataplane::LaneSnapshot& snapshot);
  // Removes an attachment and retires its lanes; sends Goodbye and shuts the
  // socket down when `goodbye` is non-empty. `holder_alive`: the process
  // still runs (the daemon ends it, or it detached), so its own lanes are
  // closed with kClosedDeleted as well, which wakes it if it is blocked on
  // them; false when its connection hung up (it died).
  void EndAttachment(uint64_t attachment_id, shmlane::v1::EventType event, absl::string_view why,
                     absl::string_view goodbye, bool holder_alive);
  // BROADCAST: the Attach of a publisher or subscriber.
  absl::StatusOr<uint64_t> AttachBroadcast(const ChannelRecord& record, LiveChannel& channel,
                                           Attachment attachment);
  // Describes a subscriber's slot (to itself or to the publisher) and
  // appends its page and both bells to `fds`.
  static absl::Status DescribeSubscriber(const shmlane::v1::ChannelSpec& spec, uint32_t slot,
                                         const Subscriber& sub,
                                         shmlane::v1::BroadcastDescription* out,
                                         std::vector<dataplane::UniqueFd>* fds,
                                         OutboundHolds* holds);
  // Ends a BROADCAST attachment's part in its channel: a subscriber's slot is
  // released (the publisher learns through SubscriberRemoved); a
  // publisher's end closes the ring and ends every subscriber with a Goodbye
  // (they drain what was committed, then see closed).
  void EndBroadcastAttachment(const std::string& name, LiveChannel& channel,
                              const Attachment& attachment, absl::string_view why,
                              bool holder_alive);
  // BROADCAST read side (broadcast_attachments.cc). A subscriber's counters
  // now, clamped (ClampReaderCounters) and never below what was seen
  // before; its lag in bytes (0 if its page no longer validates).
  struct SubscriberSample {
    LaneTotals lane;
    BroadcastTotals broadcast;
    uint64_t lag_bytes = 0;
  };
  static SubscriberSample SampleSubscriber(const Broadcast& broadcast, const Subscriber& sub,
                                           const dataplane::WriterCounters& writer);
  // The publisher's counters now (the last seen if the ring no longer
  // validates); `raw` gets the clamp bound for subscribers.
  static LaneTotals SampleWriter(const Broadcast& broadcast, dataplane::WriterCounters* raw);
  // Adds a departing subscriber's counters (or, for FoldRing, the ring's
  // publisher counters) to the channel's broadcast_retired totals.
  static void FoldSubscriber(LiveChannel& channel, const Broadcast& broadcast,
                             const Subscriber& sub);
  static void FoldRing(LiveChannel& channel, const Broadcast& broadcast);
  // The channel's BROADCAST part of Snapshot(), and of FillStats(): fills
  // out->broadcast and returns what to add to the channel's total.
  void SnapshotBroadcast(const LiveChannel& channel, bool per_lane,
                         MetricsSnapshot::Channel* out) const;
  LaneTotals FillBroadcastStats(const LiveChannel& channel, bool include_subscribers,
                                shmlane::v1::ChannelStats* out) const;
  // SupervisorCloseBroadcast with every bell of the channel's ring.
  static void CloseBroadcast(Broadcast& broadcast, uint32_t reason);
  void Send(const Attachment& attachment, const shmlane::v1::AttachMessage& message,
            std::vector<dataplane::UniqueFd> fds = {}, OutboundHolds holds = {});
  void Publish(shmlane::v1::EventType type, const std::string& channel,
               const Attachment* attachment, std::string detail);
  std::string NameOf(uint64_t attachment_id) const;

  OutboundQueues* const outbound_;
  ShmLedger* const ledger_;
  EventBus* const events_;
  DaemonMetrics* const metrics_;
  std::map<std::string, LiveChannel, std::less<>> channels_;
  std::map<uint64_t, Attachment> attachments_;
  std::vector<ReleasedUsage> released_;
  uint64_t next_attachment_id_ = 1;
  uint64_t next_lane_id_ = 1;
  // Ids below these may be in use (persisted as next_*_id).
  uint64_t attachment_ids_reserved_ = 1 + kIdBlock;
  uint64_t lane_ids_reserved_ = 1 + kIdBlock;
  std::map<uint64_t, shmlane::v1::PersistedAttachment> pending_attachments_;
  size_t pending_lanes_ = 0;  // over every channel's pending_lanes
  absl::Time resume_deadline_ = absl::InfinitePast();
  bool state_changed_ = false;
  // EndAll or RemoveChannel runs: durable channels end their lanes too.
  bool ending_all_ = false;
};

}  // namespace shmlane::control
