#include "control/attachments.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "control/attach_wire.h"
#include "control/resume_credential.h"
#include "shmlane/enum_names.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

bool IsClientSide(v1::Role role) { return role == v1::ROLE_PRODUCER || role == v1::ROLE_CLIENT; }
bool IsBroadcastRole(v1::Role role) {
  return role == v1::ROLE_PUBLISHER || role == v1::ROLE_SUBSCRIBER;
}

}  // namespace

uint64_t Attachments::ShmBytesFor(const v1::ChannelSpec& spec, v1::Role role) {
  if (spec.pattern() == v1::CHANNEL_PATTERN_BROADCAST) {
    return role == v1::ROLE_SUBSCRIBER ? dataplane::kReaderPageBytes : 0;
  }
  const bool stream = spec.pattern() == v1::CHANNEL_PATTERN_STREAM;
  const uint64_t lanes = IsClientSide(role) ? (stream ? 1 : 2) : 0;
  return lanes * (dataplane::kLaneHeaderBytes + spec.ring_bytes());
}

// ---------------------------------------------------------------------------
// Channels.

void Attachments::AddChannel(const std::string& name,
                             std::shared_ptr<dataplane::Doorbell> consumer_bell, bool durable) {
  LiveChannel& channel = channels_[name];
  channel.consumer_bell = std::move(consumer_bell);
  channel.durable = durable;
}

void Attachments::SetDurable(absl::string_view name, bool durable) {
  auto it = channels_.find(name);
  if (it != channels_.end()) it->second.durable = durable;
}

void Attachments::Clear() {
  channels_.clear();
  pending_attachments_.clear();
  pending_lanes_ = 0;
}

uint64_t Attachments::BroadcastRingBytes(const v1::ChannelSpec& spec) {
  return dataplane::BroadcastHeaderBytes(spec.max_subscribers()) + spec.ring_bytes();
}

bool Attachments::NeedsBroadcastRing(absl::string_view name) const {
  auto it = channels_.find(name);
  return it != channels_.end() && it->second.broadcast == nullptr;
}

Attachments::Counts Attachments::CountsOf(absl::string_view name) const {
  Counts out;
  auto it = channels_.find(name);
  if (it == channels_.end()) return out;
  out.clients = static_cast<uint32_t>(it->second.client_attachments.size());
  out.consumer = it->second.consumer_attachment != 0;
  out.lanes = static_cast<uint32_t>(it->second.lanes.size());
  if (const Broadcast* b = it->second.broadcast.get(); b != nullptr) {
    // BROADCAST: subscribers count as clients, the publisher as the consumer.
    out.clients = static_cast<uint32_t>(b->subscribers.size());
    out.consumer = b->publisher != 0;
  }
  return out;
}

uint32_t Attachments::RemoveChannel(absl::string_view name, absl::string_view goodbye) {
  auto it = channels_.find(name);
  if (it == channels_.end()) return 0;
  const std::string key = it->first;
  LiveChannel& channel = it->second;
  ending_all_ = true;  // a durable channel's lanes end too
  std::vector<uint64_t> lane_ids;
  for (const auto& [id, lane] : channel.lanes) lane_ids.push_back(id);
  for (uint64_t id : lane_ids) {
    RetireLane(key, channel, id, dataplane::kClosedDeleted, "channel deleted",
               /*tell_consumer=*/false);
  }
  std::vector<uint64_t> ended = channel.client_attachments;
  if (channel.consumer_attachment != 0) ended.push_back(channel.consumer_attachment);
  if (Broadcast* b = channel.broadcast.get(); b != nullptr) {
    CloseBroadcast(*b, dataplane::kClosedDeleted);
    for (const auto& [slot, sub] : b->subscribers) ended.push_back(sub.attachment);
    if (b->publisher != 0) ended.push_back(b->publisher);
  }
  for (uint64_t id : ended) {
    EndAttachment(id, v1::EVENT_TYPE_DETACHED, "channel deleted", goodbye, /*holder_alive=*/true);
  }
  // Nothing of a deleted channel may be resumed.
  pending_lanes_ -= channel.pending_lanes.size();
  for (auto p = pending_attachments_.begin(); p != pending_attachments_.end();) {
    p = p->second.channel() == key ? pending_attachments_.erase(p) : std::next(p);
  }
  ending_all_ = false;
  state_changed_ = true;
  channels_.erase(key);
  return static_cast<uint32_t>(ended.size());
}

// ---------------------------------------------------------------------------
// Attach and detach.

absl::Status Attachments::CheckRoom(const ChannelRecord& record, v1::Role role) const {
  auto it = channels_.find(record.spec.name());
  if (it == channels_.end()) return ChannelCatalog::NotFound(record.spec.name());
  const LiveChannel& channel = it->second;
  if (IsBroadcastRole(role)) {
    const Broadcast* b = channel.broadcast.get();
    if (role == v1::ROLE_PUBLISHER && b != nullptr && b->publisher != 0) {
      const Attachment& current = attachments_.at(b->publisher);
      return absl::FailedPreconditionError(
          absl::StrCat("channel \"", record.spec.name(), "\" already has a publisher (attachment ",
                       current.id, ", pid ", current.peer.pid,
                       "); a BROADCAST channel has exactly one; stop that process first"));
    }
    if (role == v1::ROLE_SUBSCRIBER && b != nullptr &&
        b->subscribers.size() >= record.spec.max_subscribers()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("channel \"", record.spec.name(), "\" already has ", b->subscribers.size(),
                       " subscribers attached, its max_subscribers; wait for one to detach"));
    }
    return absl::OkStatus();
  }
  if (!IsClientSide(role) && channel.consumer_attachment == 0) {
    if (const v1::PersistedAttachment* p = PendingConsumerOf(record.spec.name()); p != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "channel \"", record.spec.name(), "\" has a ", ShortName(p->role()), " (attachment ",
          p->attachment_id(),
          ") that attached before shmlaned restarted and may still hand its "
          "lanes back (--resume-grace); a channel has exactly one; retry once it is gone"));
    }
  }
  if (!IsClientSide(role) && channel.consumer_attachment != 0) {
    const Attachment& current = attachments_.at(channel.consumer_attachment);
    return absl::FailedPreconditionError(
        absl::StrCat("channel \"", record.spec.name(), "\" already has a ", ShortName(current.role),
                     " (attachment ", current.id, ", pid ", current.peer.pid,
                     "); a channel has exactly one; stop that process first"));
  }
  const size_t clients = channel.client_attachments.size() + PendingClientsOf(record.spec.name());
  if (IsClientSide(role) && clients >= record.spec.max_producers()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("channel \"", record.spec.name(), "\" already has ", clients, " ",
                     ShortName(role), "s attached, its max_producers; wait for one to detach"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Attachments::Lane> Attachments::NewLane(const v1::ChannelSpec& spec, Lane::Kind kind,
                                                       uint32_t uid) {
  absl::StatusOr<std::string> credential = NewResumeCredential();
  if (!credential.ok()) return credential.status();
  dataplane::LaneOptions options = LaneOptionsFor(spec);
  options.lane_id = next_lane_id_;
  absl::StatusOr<dataplane::Segment> segment = dataplane::CreateLaneSegment(options);
  if (!segment.ok()) return segment.status();
  Lane lane;
  lane.id = NextLaneId();
  lane.kind = kind;
  lane.credential = *std::move(credential);
  lane.credential_sha256 = Sha256(lane.credential);
  lane.segment = *std::move(segment);
  lane.charge = ledger_->Charge(uid, dataplane::kLaneHeaderBytes + spec.ring_bytes());
  return lane;
}

absl::Status Attachments::DescribeLane(const v1::ChannelSpec& spec, const LiveChannel& channel,
                                       const Lane& lane, bool for_consumer_side,
                                       v1::LaneDescription* out,
                                       std::vector<dataplane::UniqueFd>* fds, OutboundHolds* holds,
                                       PidfdIndices* pidfds) const {
  // The client side (producer, or REQUEST_REPLY client) writes STREAM and
  // request lanes and reads reply lanes; the consumer side does the opposite.
  const bool client_writes = lane.kind != Lane::Kind::kReply;
  const bool writes = for_consumer_side ? !client_writes : client_writes;
  const dataplane::Doorbell& peer_bell = writes ? *lane.consumer_bell : *lane.producer_bell;
  absl::StatusOr<dataplane::UniqueFd> seg_fd = lane.segment.DupFd();
  if (!seg_fd.ok()) return seg_fd.status();
  absl::StatusOr<dataplane::UniqueFd> bell_fd = peer_bell.DupFd();
  if (!bell_fd.ok()) return bell_fd.status();
  std::optional<dataplane::UniqueFd> own_fd;
  if (for_consumer_side) {
    // The consumer/server side parks on the lane's own bell (Attach).
    const dataplane::Doorbell& own = writes ? *lane.producer_bell : *lane.consumer_bell;
    absl::StatusOr<dataplane::UniqueFd> fd = own.DupFd();
    if (!fd.ok()) return fd.status();
    own_fd = *std::move(fd);
  }
  out->set_lane_id(lane.id);
  out->set_direction(writes ? v1::LANE_DIRECTION_WRITE : v1::LANE_DIRECTION_READ);
  out->set_segment_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(seg_fd));
  holds->push_back(lane.charge);  // the memfd copy keeps the memory charged
  out->set_peer_doorbell_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(bell_fd));
  if (own_fd.has_value()) {
    out->set_has_own_doorbell(true);
    out->set_own_doorbell_fd_index(static_cast<uint32_t>(fds->size()));
    fds->push_back(*std::move(own_fd));
  }
  const uint64_t peer = for_consumer_side ? lane.client_attachment : channel.consumer_attachment;
  out->set_peer_attachment_id(peer);
  auto a = attachments_.find(peer);
  if (a != attachments_.end()) {
    out->set_peer_name(a->second.client_name);
    out->set_has_peer_credentials(true);
    out->set_peer_uid(a->second.peer.uid);
    out->set_peer_gid(a->second.peer.gid);
    out->set_peer_pid(a->second.peer.pid);
    if (a->second.pidfd != nullptr) {
      auto [slot, fresh] = pidfds->try_emplace(peer, static_cast<uint32_t>(fds->size()));
      if (fresh) {
        const int copy = ::fcntl(a->second.pidfd->get(), F_DUPFD_CLOEXEC, 0);
        if (copy < 0) {
          pidfds->erase(slot);
          return absl::ResourceExhaustedError(
              absl::StrCat("cannot duplicate a pidfd: ", std::strerror(errno)));
        }
        fds->emplace_back(copy);
      }
      out->set_has_peer_pidfd(true);
      out->set_peer_pidfd_fd_index(slot->second);
    }
  }
  out->set_ring_bytes(spec.ring_bytes());
  out->set_max_frame_bytes(spec.max_frame_bytes());
  out->set_resume_credential(lane.credential);
  return absl::OkStatus();
}

void Attachments::Send(const Attachment& attachment, const v1::AttachMessage& message,
                       std::vector<dataplane::UniqueFd> fds, OutboundHolds holds) {
  outbound_->Send(attachment.id, attachment.fd, message, std::move(fds), std::move(holds));
}

void Attachments::OfferLanesToConsumer(const v1::ChannelSpec& spec, const LiveChannel& channel,
                                       const Attachment& client) {
  auto consumer = attachments_.find(channel.consumer_attachment);
  if (consumer == attachments_.end()) return;
  v1::AttachMessage message;
  std::vector<dataplane::UniqueFd> fds;
  OutboundHolds holds;
  PidfdIndices pidfds;
  for (uint64_t lane_id : client.lanes) {
    auto lane = channel.lanes.find(lane_id);
    if (lane == channel.lanes.end()) continue;
    if (!DescribeLane(spec, channel, lane->second, /*for_consumer_side=*/true,
                      message.mutable_lane_added()->add_lanes(), &fds, &holds, &pidfds)
             .ok()) {
      ::shutdown(consumer->second.fd, SHUT_RDWR);
      return;
    }
  }
  Send(consumer->second, message, std::move(fds), std::move(holds));
}

absl::StatusOr<uint64_t> Attachments::Attach(const ChannelRecord& record, int socket_fd,
                                             const PeerCredentials& peer,
                                             const v1::AttachRequest& request) {
  auto cit = channels_.find(record.spec.name());
  if (cit == channels_.end()) return ChannelCatalog::NotFound(record.spec.name());
  LiveChannel& channel = cit->second;
  const v1::ChannelSpec& spec = record.spec;
  const v1::Role role = request.role();
  const bool stream = spec.pattern() == v1::CHANNEL_PATTERN_STREAM;
  const bool client_side = IsClientSide(role);
  const uint64_t lanes_needed = client_side ? (stream ? 1 : 2) : 0;

  Attachment attachment;
  attachment.id = next_attachment_id_;
  attachment.fd = socket_fd;
  attachment.channel = spec.name();
  attachment.role = role;
  attachment.peer = peer;
  attachment.client_name = request.client_name();
  if (dataplane::UniqueFd pidfd = ReadPeerPidfd(socket_fd); pidfd.valid()) {
    attachment.pidfd = std::make_shared<const dataplane::UniqueFd>(std::move(pidfd));
  }
  if (IsBroadcastRole(role)) return AttachBroadcast(record, channel, std::move(attachment));
  absl::StatusOr<std::string> credential = NewResumeCredential();
  if (!credential.ok()) return credential.status();
  attachment.credential_sha256 = Sha256(*credential);
  std::vector<Lane> new_lanes;
  if (client_side) {
    absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
    if (!bell.ok()) return bell.status();
    attachment.bell = std::make_shared<dataplane::Doorbell>(*std::move(bell));
    const Lane::Kind kinds[2] = {stream ? Lane::Kind::kStream : Lane::Kind::kRequest,
                                 Lane::Kind::kReply};
    for (uint64_t i = 0; i < lanes_needed; ++i) {
      absl::StatusOr<Lane> lane = NewLane(spec, kinds[i], peer.uid);
      if (!lane.ok()) return lane.status();
      // The consumer's (server's) side of every lane gets a doorbell of its
      // own that only this lane's client can ring, so that no client can
      // ring, drain or outlive the bell meant for another's frames.
      absl::StatusOr<dataplane::Doorbell> lane_bell = dataplane::Doorbell::Create();
      if (!lane_bell.ok()) return lane_bell.status();
      auto channel_side = std::make_shared<dataplane::Doorbell>(*std::move(lane_bell));
      lane->client_attachment = attachment.id;
      const bool client_produces = kinds[i] != Lane::Kind::kReply;
      lane->producer_bell = client_produces ? attachment.bell : channel_side;
      lane->consumer_bell = client_produces ? channel_side : attachment.bell;
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
  OutboundHolds reply_holds;
  absl::StatusOr<dataplane::UniqueFd> own = attachment.bell->DupFd();
  if (!own.ok()) return own.status();
  reply->set_code(0);
  reply->set_attachment_id(attachment.id);
  reply->set_doorbell_fd_index(0);
  reply_fds.push_back(*std::move(own));
  reply->set_max_frame_bytes(spec.max_frame_bytes());
  reply->set_ring_bytes(spec.ring_bytes());
  reply->set_wait_preference(spec.wait_preference());
  reply->set_resume_credential(*credential);
  reply->set_durable(channel.durable);
  // Later packets for a consumer with many peers (each bounded to
  // kMaxFdsPerPacket fds, one client's lanes never split).
  struct Later {
    v1::AttachMessage message;
    std::vector<dataplane::UniqueFd> fds;
    OutboundHolds holds;
    PidfdIndices pidfds;
  };
  std::vector<Later> more;
  PidfdIndices reply_pidfds;
  if (client_side) {
    for (const Lane& lane : new_lanes) {
      if (absl::Status s = DescribeLane(spec, channel, lane, false, reply->add_lanes(), &reply_fds,
                                        &reply_holds, &reply_pidfds);
          !s.ok()) {
        return s;
      }
    }
  } else {
    channel.consumer_attachment = attachment.id;  // for peer ids in descriptions
    v1::AttachMessage* packet = &reply_message;
    std::vector<dataplane::UniqueFd>* packet_fds = &reply_fds;
    OutboundHolds* packet_holds = &reply_holds;
    PidfdIndices* packet_pidfds = &reply_pidfds;
    uint32_t following = 0;
    // Starts another packet unless `fds_needed` more fit in this one.
    auto room_for = [&](size_t fds_needed) {
      if (packet_fds->size() + fds_needed <= kMaxFdsPerPacket) return;
      more.emplace_back();
      packet = &more.back().message;
      packet_fds = &more.back().fds;
      packet_holds = &more.back().holds;
      packet_pidfds = &more.back().pidfds;
      packet->mutable_lane_added();
    };
    auto describe = [&](const Lane& lane) {
      v1::LaneDescription* d =
          packet == &reply_message ? reply->add_lanes() : packet->mutable_lane_added()->add_lanes();
      absl::Status s =
          DescribeLane(spec, channel, lane, true, d, packet_fds, packet_holds, packet_pidfds);
      if (s.ok() && packet != &reply_message) ++following;
      return s;
    };
    for (uint64_t client_id : channel.client_attachments) {
      const Attachment& client = attachments_.at(client_id);
      // Segment, peer bell and own bell per lane, and the client's pidfd.
      room_for(3 * client.lanes.size() + (client.pidfd != nullptr ? 1 : 0));
      for (uint64_t lane_id : client.lanes) {
        if (absl::Status s = describe(channel.lanes.at(lane_id)); !s.ok()) {
          channel.consumer_attachment = 0;
          return s;
        }
      }
    }
    // Durable: the lanes whose producer ended while no consumer read them,
    // with the frames it committed (closed; they end once read).
    std::vector<Lane*> awaited;
    for (auto& [lane_id, lane] : channel.draining) {
      if (lane.reader_attachment != 0 || lane.kind != Lane::Kind::kStream) continue;
      room_for(3);
      if (absl::Status s = describe(lane); !s.ok()) {
        channel.consumer_attachment = 0;
        return s;
      }
      awaited.push_back(&lane);
    }
    for (Lane* lane : awaited) lane->reader_attachment = attachment.id;
    reply->set_lanes_following(following);
  }
  NextAttachmentId();
  state_changed_ = true;
  for (Lane& lane : new_lanes) {
    const uint64_t id = lane.id;
    channel.lanes.emplace(id, std::move(lane));
  }
  if (client_side) channel.client_attachments.push_back(attachment.id);
  auto [it, inserted] = attachments_.emplace(attachment.id, std::move(attachment));
  const Attachment& stored = it->second;
  // The reply takes the same queue as everything after it, so the LaneAdded
  // packets that complete it can never overtake it. A peer already gone
  // shows as a hang-up, which ends the attachment through Detach().
  Send(stored, reply_message, std::move(reply_fds), std::move(reply_holds));
  for (Later& later : more) {
    Send(stored, later.message, std::move(later.fds), std::move(later.holds));
  }
  if (client_side) OfferLanesToConsumer(spec, channel, stored);
  metrics_->CountAttach("ok");
  Publish(v1::EVENT_TYPE_ATTACHED, stored.channel, &stored,
          absl::StrCat(ShortName(role), " attached"));
  return stored.id;
}

void Attachments::RetireLane(const std::string& name, LiveChannel& channel, uint64_t lane_id,
                             uint32_t reason, absl::string_view why, bool tell_consumer) {
  auto it = channel.lanes.find(lane_id);
  if (it == channel.lanes.end()) return;
  Lane& lane = it->second;
  dataplane::SupervisorClose(lane.segment, reason, lane.producer_bell.get(),
                             lane.consumer_bell.get());
  if (lane.in_backpressure) {
    // Every STARTED gets its ENDED, also when the lane goes away.
    v1::Event event;
    event.set_type(v1::EVENT_TYPE_BACKPRESSURE_ENDED);
    event.set_channel(name);
    event.set_lane_id(lane_id);
    event.set_attachment_id(lane.client_attachment);
    event.set_detail(absl::StrCat("lane closed: ", why));
    events_->Publish(std::move(event));
  }
  v1::AttachMessage message;
  message.mutable_lane_removed()->set_lane_id(lane_id);
  message.mutable_lane_removed()->set_reason(std::string(why));
  // Both sides learn, whichever of them is still attached.
  if (tell_consumer) {
    auto consumer = attachments_.find(channel.consumer_attachment);
    if (consumer != attachments_.end()) Send(consumer->second, message);
  }
  auto client = attachments_.find(lane.client_attachment);
  if (client != attachments_.end()) Send(client->second, message);
  // The reader may still be consuming what the writer left: keep reading
  // the lane until it is done (CheckBackpressure, EndAttachment).
  const uint64_t reader = ReaderOf(channel, lane);
  // A durable channel's lane that no consumer reads now waits for the next
  // one (reader 0), so that a producer's last frames are not lost with it.
  const bool for_next_consumer =
      reader == 0 && channel.durable && lane.kind == Lane::Kind::kStream && !ending_all_;
  if ((reader != 0 && attachments_.count(reader) != 0) || for_next_consumer) {
    lane.reader_attachment = reader;
    lane.in_backpressure = false;
    if (channel.draining.size() >= kMaxDrainingLanes) {
      Fold(channel, channel.draining.begin()->second);
      channel.draining.erase(channel.draining.begin());
    }
    channel.draining.emplace(lane_id, std::move(lane));
  } else {
    Fold(channel, lane);
  }
  channel.lanes.erase(it);
}

uint64_t Attachments::ReaderOf(const LiveChannel& channel, const Lane& lane) {
  return lane.kind == Lane::Kind::kReply ? lane.client_attachment : channel.consumer_attachment;
}

LaneTotals Attachments::CountersOf(const Lane& lane, const dataplane::LaneSnapshot* snapshot) {
  LaneTotals t;
  if (snapshot != nullptr) {
    t.Add(*snapshot);
  } else {
    t = lane.last_seen;
  }
  if (lane.seen_broken || snapshot == nullptr) t.broken_lanes = 1;
  return t;
}

void Attachments::Fold(LiveChannel& channel, const Lane& lane) {
  absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
  channel.retired.Add(CountersOf(lane, snap.ok() ? &*snap : nullptr));
}

void Attachments::FoldDrainingOf(LiveChannel& channel, uint64_t reader) {
  for (auto it = channel.draining.begin(); it != channel.draining.end();) {
    if (reader != 0 && it->second.reader_attachment != reader) {
      ++it;
      continue;
    }
    Fold(channel, it->second);
    it = channel.draining.erase(it);
  }
}

void Attachments::EndAttachment(uint64_t attachment_id, v1::EventType event, absl::string_view why,
                                absl::string_view goodbye, bool holder_alive) {
  auto it = attachments_.find(attachment_id);
  if (it == attachments_.end()) return;
  Attachment attachment = std::move(it->second);
  attachments_.erase(it);
  auto cit = channels_.find(attachment.channel);
  if (cit != channels_.end()) {
    const std::string& name = cit->first;
    LiveChannel& channel = cit->second;
    // The consumer side of a durable channel leaves its lanes to the next
    // one (except at shutdown and deletion, which end everything).
    const bool keep_lanes = channel.durable && !ending_all_ && !IsClientSide(attachment.role) &&
                            !IsBroadcastRole(attachment.role) &&
                            channel.consumer_attachment == attachment_id;
    if (keep_lanes) {
      for (auto& [id, lane] : channel.draining) {
        if (lane.reader_attachment == attachment_id) lane.reader_attachment = 0;
      }
    } else {
      // Its mapping is gone, so is every frame it could still have read.
      FoldDrainingOf(channel, attachment_id);
    }
    if (IsBroadcastRole(attachment.role)) {
      EndBroadcastAttachment(name, channel, attachment, why, holder_alive);
    }
    // Each side reads only the bits that mean "the other side is gone" (a
    // producer ignores kClosedProducerGone). A holder the daemon ends while
    // it lives (shutdown, a queue overflow, a protocol error, a clean
    // Detach) may be blocked on its own lanes: kClosedDeleted, which both
    // sides read, wakes it too.
    const uint32_t for_holder = holder_alive ? dataplane::kClosedDeleted : 0;
    if (IsBroadcastRole(attachment.role)) {
      // Done above.
    } else if (IsClientSide(attachment.role)) {
      for (uint64_t lane_id : attachment.lanes) {
        auto lane = channel.lanes.find(lane_id);
        if (lane == channel.lanes.end()) continue;
        const bool client_produces = lane->second.kind != Lane::Kind::kReply;
        RetireLane(name, channel, lane_id,
                   for_holder | (client_produces ? dataplane::kClosedProducerGone
                                                 : dataplane::kClosedConsumerGone),
                   why,
                   /*tell_consumer=*/true);
      }
      auto& clients = channel.client_attachments;
      clients.erase(std::remove(clients.begin(), clients.end(), attachment_id), clients.end());
    } else if (keep_lanes) {
      // Nothing closes: producers keep writing (and block or drop under
      // their backpressure policy) until the next consumer takes the lanes
      // over from the last released position. Wake-ups meant for this one
      // must not reach the next.
      channel.consumer_attachment = 0;
      channel.consumer_bell->Clear();
    } else if (channel.consumer_attachment == attachment_id) {
      channel.consumer_attachment = 0;
      std::vector<uint64_t> lane_ids;
      for (const auto& [id, lane] : channel.lanes) lane_ids.push_back(id);
      for (uint64_t id : lane_ids) {
        const bool client_produces = channel.lanes.at(id).kind != Lane::Kind::kReply;
        RetireLane(name, channel, id,
                   for_holder | (client_produces ? dataplane::kClosedConsumerGone
                                                 : dataplane::kClosedProducerGone),
                   why,
                   /*tell_consumer=*/false);
      }
      // Producers of a channel whose consumer went away are ended: their
      // lanes are closed and they must attach again (docs/protocol.md).
      const std::string bye =
          goodbye.empty() ? absl::StrCat("the ", ShortName(attachment.role), " of channel \"", name,
                                         "\" went away (", why, "); attach again")
                          : std::string(goodbye);
      const std::vector<uint64_t> clients = channel.client_attachments;
      for (uint64_t id : clients) {
        EndAttachment(id, v1::EVENT_TYPE_DETACHED,
                      absl::StrCat(ShortName(attachment.role), " gone"), bye,
                      /*holder_alive=*/true);
      }
    }
  }
  if (!goodbye.empty()) {
    v1::AttachMessage message;
    message.mutable_goodbye()->set_reason(std::string(goodbye));
    outbound_->SendLast(attachment.id, attachment.fd, message);
  }
  released_.push_back({attachment.peer.uid});
  state_changed_ = true;
  Publish(event, attachment.channel, &attachment, std::string(why));
}

void Attachments::Detach(uint64_t attachment_id, DetachKind kind) {
  // The attach server closes the fd after this returns: nothing may be sent
  // on it any more, queued or not.
  const bool overflowed = outbound_->Remove(attachment_id);
  if (attachments_.count(attachment_id) == 0) return;
  if (overflowed) {
    // Our own shutdown caused the hang-up: not a peer death.
    EndAttachment(attachment_id, v1::EVENT_TYPE_DETACHED,
                  "disconnected: its attach socket queue overflowed (the process stopped "
                  "reading it)",
                  "", /*holder_alive=*/true);
    return;
  }
  switch (kind) {
    case DetachKind::kClean:
      EndAttachment(attachment_id, v1::EVENT_TYPE_DETACHED, "detached", "", /*holder_alive=*/true);
      break;
    case DetachKind::kDied:
      metrics_->CountPeerDeath();
      EndAttachment(attachment_id, v1::EVENT_TYPE_PEER_DIED, "connection hung up", "",
                    /*holder_alive=*/false);
      break;
    case DetachKind::kProtocolError:
      EndAttachment(attachment_id, v1::EVENT_TYPE_DETACHED, "protocol error", "",
                    /*holder_alive=*/true);
      break;
  }
}

void Attachments::EndAll(absl::string_view reason) {
  ending_all_ = true;
  while (!attachments_.empty()) {
    EndAttachment(attachments_.begin()->first, v1::EVENT_TYPE_DETACHED, reason, reason,
                  /*holder_alive=*/true);
  }
  ending_all_ = false;
}

std::vector<ReleasedUsage> Attachments::TakeReleased() { return std::exchange(released_, {}); }

void Attachments::Publish(v1::EventType type, const std::string& channel,
                          const Attachment* attachment, std::string detail) {
  v1::Event event;
  event.set_type(type);
  event.set_channel(channel);
  if (attachment != nullptr) {
    event.set_attachment_id(attachment->id);
    event.set_uid(attachment->peer.uid);
    event.set_gid(attachment->peer.gid);
    event.set_pid(static_cast<uint32_t>(attachment->peer.pid));
    event.set_client_name(attachment->client_name);
    event.set_role(ShortName(attachment->role));
  }
  event.set_detail(std::move(detail));
  events_->Publish(std::move(event));
}

}  // namespace shmlane::control
