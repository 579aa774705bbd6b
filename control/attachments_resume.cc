// Attachments, continued: what lets a restarted daemon re-adopt live lanes
// (persisted records, Resume, grace retirement). See attachments.h and
// docs/protocol.md ("Resume").
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "control/attach_wire.h"
#include "control/attachments.h"
#include "control/resume_credential.h"
#include "dataplane/lane.h"
#include "shmlane/enum_names.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

bool IsClientSide(v1::Role role) { return role == v1::ROLE_PRODUCER || role == v1::ROLE_CLIENT; }
bool IsResumableRole(v1::Role role) {
  return role == v1::ROLE_PRODUCER || role == v1::ROLE_CONSUMER || role == v1::ROLE_CLIENT ||
         role == v1::ROLE_SERVER;
}

std::string ResultLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

bool SameFile(int a, int b) {
  struct stat sa {
  }, sb{};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

uint64_t Attachments::NextLaneId() {
  const uint64_t id = next_lane_id_++;
  if (next_lane_id_ + kIdBlock / 2 >= lane_ids_reserved_) {
    lane_ids_reserved_ = next_lane_id_ + kIdBlock;
    state_changed_ = true;
  }
  return id;
}

uint64_t Attachments::NextAttachmentId() {
  const uint64_t id = next_attachment_id_++;
  if (next_attachment_id_ + kIdBlock / 2 >= attachment_ids_reserved_) {
    attachment_ids_reserved_ = next_attachment_id_ + kIdBlock;
    state_changed_ = true;
  }
  return id;
}

const v1::PersistedAttachment* Attachments::PendingConsumerOf(absl::string_view channel) const {
  for (const auto& [id, p] : pending_attachments_) {
    if (p.channel() == channel && !IsClientSide(p.role())) return &p;
  }
  return nullptr;
}

size_t Attachments::PendingClientsOf(absl::string_view channel) const {
  size_t n = 0;
  for (const auto& [id, p] : pending_attachments_) {
    if (p.channel() == channel && IsClientSide(p.role())) ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------
// The state file.

namespace {

void ToProto(const LaneTotals& t, v1::PersistedTotals* p) {
  p->set_frames_sent(t.frames_sent);
  p->set_bytes_sent(t.bytes_sent);
  p->set_frames_received(t.frames_received);
  p->set_bytes_received(t.bytes_received);
  p->set_backpressure_events(t.backpressure_events);
  p->set_dropped_frames(t.dropped_frames);
  p->set_wakeups(t.wakeups);
  for (int side = 0; side < 2; ++side) {
    p->add_spin_ns(t.spin_ns[side]);
    p->add_spin_waits(t.spin_waits[side]);
    p->add_parks(t.parks[side]);
    p->add_wakeups_received(t.wakeups_received[side]);
  }
  p->set_latency_count(t.latency_count);
  p->set_latency_sum_ns(t.latency_sum_ns);
  for (uint64_t b : t.latency_buckets) p->add_latency_buckets(b);
  p->set_broken_lanes(t.broken_lanes);
}

// The state file is ours, but read it as if it were not: short arrays are
// zero-filled, long ones cut.
LaneTotals FromProto(const v1::PersistedTotals& p) {
  LaneTotals t;
  t.frames_sent = p.frames_sent();
  t.bytes_sent = p.bytes_sent();
  t.frames_received = p.frames_received();
  t.bytes_received = p.bytes_received();
  t.backpressure_events = p.backpressure_events();
  t.dropped_frames = p.dropped_frames();
  t.wakeups = p.wakeups();
  for (int side = 0; side < 2; ++side) {
    if (side < p.spin_ns_size()) t.spin_ns[side] = p.spin_ns(side);
    if (side < p.spin_waits_size()) t.spin_waits[side] = p.spin_waits(side);
    if (side < p.parks_size()) t.parks[side] = p.parks(side);
    if (side < p.wakeups_received_size()) t.wakeups_received[side] = p.wakeups_received(side);
  }
  t.latency_count = p.latency_count();
  t.latency_sum_ns = p.latency_sum_ns();
  for (int i = 0; i < p.latency_buckets_size() && i < int{dataplane::kLatencyBuckets}; ++i) {
    t.latency_buckets[i] = p.latency_buckets(i);
  }
  t.broken_lanes = p.broken_lanes();
  return t;
}

}  // namespace

void Attachments::ExportResumable(v1::DaemonState* state) const {
  // The broadcast half hands out attachment ids without NextAttachmentId.
  state->set_next_attachment_id(std::max(attachment_ids_reserved_, next_attachment_id_ + kIdBlock));
  state->set_next_lane_id(std::max(lane_ids_reserved_, next_lane_id_));
  for (const auto& [id, a] : attachments_) {
    if (!IsResumableRole(a.role) || a.credential_sha256.empty()) continue;
    v1::PersistedAttachment* p = state->add_attachments();
    p->set_attachment_id(id);
    p->set_channel(a.channel);
    p->set_role(a.role);
    p->set_uid(a.peer.uid);
    p->set_credential_sha256(a.credential_sha256);
    p->set_client_name(a.client_name);
  }
  for (const auto& [id, p] : pending_attachments_) *state->add_attachments() = p;
  for (const auto& [name, channel] : channels_) {
    for (const auto& [id, lane] : channel.lanes) {
      if (lane.credential_sha256.empty()) continue;
      v1::PersistedLane* p = state->add_lanes();
      p->set_lane_id(id);
      p->set_channel(name);
      p->set_kind(lane.kind == Lane::Kind::kStream    ? v1::PersistedLane::KIND_STREAM
                  : lane.kind == Lane::Kind::kRequest ? v1::PersistedLane::KIND_REQUEST
                                                      : v1::PersistedLane::KIND_REPLY);
      p->set_client_attachment_id(lane.client_attachment);
      p->set_credential_sha256(lane.credential_sha256);
      p->set_segment_bytes(lane.segment.size());
    }
    for (const auto& [id, p] : channel.pending_lanes) *state->add_lanes() = p;
    // Draining lanes are not resumed: count them as ended now.
    LaneTotals ended = channel.retired;
    for (const auto& [id, lane] : channel.draining) {
      absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
      ended.Add(CountersOf(lane, snap.ok() ? &*snap : nullptr));
    }
    v1::PersistedTotals* totals = state->add_retired_totals();
    totals->set_channel(name);
    ToProto(ended, totals);
  }
}

void Attachments::RestoreResumable(const v1::DaemonState& state, absl::Time deadline) {
  next_lane_id_ = std::max<uint64_t>(next_lane_id_, state.next_lane_id());
  next_attachment_id_ = std::max<uint64_t>(next_attachment_id_, state.next_attachment_id());
  lane_ids_reserved_ = next_lane_id_ + kIdBlock;
  attachment_ids_reserved_ = next_attachment_id_ + kIdBlock;
  state_changed_ = true;  // the new bounds must reach the file before ids are used
  for (const v1::PersistedTotals& p : state.retired_totals()) {
    auto channel = channels_.find(p.channel());
    if (channel != channels_.end()) channel->second.retired.Add(FromProto(p));
  }
  for (const v1::PersistedAttachment& p : state.attachments()) {
    if (!IsResumableRole(p.role()) || p.credential_sha256().size() != 32 ||
        channels_.count(p.channel()) == 0) {
      continue;
    }
    pending_attachments_.emplace(p.attachment_id(), p);
  }
  for (const v1::PersistedLane& p : state.lanes()) {
    auto channel = channels_.find(p.channel());
    auto owner = pending_attachments_.find(p.client_attachment_id());
    if (channel == channels_.end() || owner == pending_attachments_.end() ||
        owner->second.channel() != p.channel() || p.credential_sha256().size() != 32 ||
        p.kind() == v1::PersistedLane::KIND_UNSPECIFIED) {
      metrics_->CountAttach("resume_unclaimed_lane");
      continue;
    }
    if (channel->second.pending_lanes.emplace(p.lane_id(), p).second) ++pending_lanes_;
  }
  // A consumer or server that held no lane has nothing to hand back (the
  // client library does not resume it): it must not hold the channel's one
  // place through the grace period.
  for (auto it = pending_attachments_.begin(); it != pending_attachments_.end();) {
    const bool reader = !IsClientSide(it->second.role());
    auto channel = channels_.find(it->second.channel());
    const bool empty = channel == channels_.end() || channel->second.pending_lanes.empty();
    it = reader && empty ? pending_attachments_.erase(it) : std::next(it);
  }
  resume_deadline_ = deadline;
}

// ---------------------------------------------------------------------------
// Resume.

absl::Status Attachments::CheckResume(const PeerCredentials& peer, const v1::Resume& resume) const {
  auto it = pending_attachments_.find(resume.attachment_id());
  if (it == pending_attachments_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "attachment ", resume.attachment_id(), " to channel \"", resume.channel(),
        "\" is not one shmlaned is waiting for since its restart (it was retired after "
        "--resume-grace, was made just before the crash, or was never made); attach again"));
  }
  const v1::PersistedAttachment& p = it->second;
  if (p.channel() != resume.channel() || p.role() != resume.role()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "attachment ", resume.attachment_id(), " was a ", ShortName(p.role()), " of channel \"",
        p.channel(), "\", not a ", ShortName(resume.role()), " of \"", resume.channel(), "\""));
  }
  if (peer.uid != p.uid()) {
    return absl::PermissionDeniedError(absl::StrCat("attachment ", resume.attachment_id(),
                                                    " was made by uid ", p.uid(), "; uid ",
                                                    peer.uid, " may not resume it"));
  }
  if (!CredentialMatches(resume.credential(), p.credential_sha256())) {
    return absl::PermissionDeniedError(absl::StrCat(
        "wrong resume credential for attachment ", resume.attachment_id(),
        ": only the process that attached (AttachReply.resume_credential) may resume it"));
  }
  if (resume.lanes() > kMaxResumeLanes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a resume may hand back at most ", kMaxResumeLanes, " lanes, not ", resume.lanes()));
  }
  return absl::OkStatus();
}

absl::Status Attachments::AdoptLane(const std::string& name, LiveChannel& channel,
                                    uint64_t attachment_id, bool client_side, ResumedLaneFds& in,
                                    bool* newly_adopted) {
  *newly_adopted = false;
  const uint64_t lane_id = in.lane.lane_id();
  const std::string label = absl::StrCat("lane ", lane_id, " of channel \"", name, "\"");
  if (auto live = channel.lanes.find(lane_id); live != channel.lanes.end()) {
    // The other side came back first: this side must hold the same lane.
    const Lane& lane = live->second;
    if (client_side && lane.client_attachment != attachment_id) {
      return absl::PermissionDeniedError(
          absl::StrCat(label, " belongs to attachment ", lane.client_attachment));
    }
    if (!CredentialMatches(in.lane.credential(), lane.credential_sha256)) {
      return absl::PermissionDeniedError(absl::StrCat("wrong resume credential for ", label));
    }
    if (!in.segment.valid() || !SameFile(in.segment.get(), lane.segment.fd())) {
      return absl::PermissionDeniedError(
          absl::StrCat(label,
                       ": the memfd handed back is not the lane's (its other holder handed back "
                       "another one first)"));
    }
    return absl::OkStatus();
  }
  auto pit = channel.pending_lanes.find(lane_id);
  if (pit == channel.pending_lanes.end()) {
    return absl::NotFoundError(absl::StrCat(
        label,
        " is not one shmlaned knows from before its restart (it ended, was retired after "
        "--resume-grace, or was made just before the crash)"));
  }
  const v1::PersistedLane& p = pit->second;
  if (client_side && p.client_attachment_id() != attachment_id) {
    return absl::PermissionDeniedError(
        absl::StrCat(label, " belongs to attachment ", p.client_attachment_id()));
  }
  if (!CredentialMatches(in.lane.credential(), p.credential_sha256())) {
    return absl::PermissionDeniedError(absl::StrCat("wrong resume credential for ", label));
  }
  // The fds are as untrusted as anything else the client sends.
  const int seals = in.segment.valid() ? ::fcntl(in.segment.get(), F_GET_SEALS) : -1;
  constexpr int kNeeded = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  if (seals < 0 || (seals & kNeeded) != kNeeded) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": the segment handed back is not a memfd sealed against shrinking and growing"));
  }
  absl::StatusOr<dataplane::Segment> segment =
      dataplane::Segment::Map(std::move(in.segment), dataplane::Access::kReadWrite);
  if (!segment.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", segment.status().message()));
  }
  if (segment->size() != p.segment_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": the memfd is ", segment->size(),
                                                   " bytes; the lane's is ", p.segment_bytes()));
  }
  absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(*segment);
  if (!snap.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": the lane header does not validate: ", snap.status().message()));
  }
  if (snap->lane_id != lane_id ||
      snap->ring_bytes + dataplane::kLaneHeaderBytes != p.segment_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": the memfd holds lane ", snap->lane_id,
                                                   " of ", snap->ring_bytes,
                                                   " ring bytes, not this lane"));
  }
  absl::StatusOr<dataplane::Doorbell> producer_bell =
      dataplane::Doorbell::Adopt(std::move(in.producer_bell));
  absl::StatusOr<dataplane::Doorbell> consumer_bell =
      dataplane::Doorbell::Adopt(std::move(in.consumer_bell));
  if (!producer_bell.ok() || !consumer_bell.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": a doorbell handed back is not an eventfd"));
  }
  Lane lane;
  lane.id = lane_id;
  lane.kind = p.kind() == v1::PersistedLane::KIND_STREAM    ? Lane::Kind::kStream
              : p.kind() == v1::PersistedLane::KIND_REQUEST ? Lane::Kind::kRequest
                                                            : Lane::Kind::kReply;
  lane.segment = *std::move(segment);
  lane.producer_bell = std::make_shared<dataplane::Doorbell>(*std::move(producer_bell));
  lane.consumer_bell = std::make_shared<dataplane::Doorbell>(*std::move(consumer_bell));
  lane.client_attachment = p.client_attachment_id();
  lane.credential = in.lane.credential();
  lane.credential_sha256 = p.credential_sha256();
  // Its memory counts again against its creator (the client side's uid).
  uint32_t uid = 0;
  if (auto owner = pending_attachments_.find(p.client_attachment_id());
      owner != pending_attachments_.end()) {
    uid = owner->second.uid();
  } else if (auto a = attachments_.find(p.client_attachment_id()); a != attachments_.end()) {
    uid = a->second.peer.uid;
  }
  lane.charge = ledger_->Charge(uid, lane.segment.size());
  // Totals continue from what is in shared memory; no backpressure edge
  // for what happened while no daemon watched.
  lane.last_seen = CountersOf(lane, &*snap);
  lane.last_backpressure = snap->producer.backpressure_events;
  if (snap->producer.broken != 0 || snap->consumer.broken != 0) lane.seen_broken = true;
  channel.pending_lanes.erase(pit);
  --pending_lanes_;
  channel.lanes.emplace(lane_id, std::move(lane));
  *newly_adopted = true;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Attachments::Resume(const ChannelRecord& record, int socket_fd,
                                             const PeerCredentials& peer, const v1::Resume& resume,
                                             std::vector<ResumedLaneFds> lanes) {
  if (absl::Status s = CheckResume(peer, resume); !s.ok()) return s;
  auto cit = channels_.find(record.spec.name());
  if (cit == channels_.end()) return ChannelCatalog::NotFound(record.spec.name());
  const std::string& name = cit->first;
  LiveChannel& channel = cit->second;
  const v1::PersistedAttachment p = pending_attachments_.at(resume.attachment_id());
  const bool client_side = IsClientSide(p.role());

  v1::AttachMessage reply_message;
  v1::ResumeReply* reply = reply_message.mutable_resume_reply();
  std::vector<uint64_t> held;   // lanes re-adopted for this attachment, in order
  std::vector<uint64_t> fresh;  // of those, lanes nobody had handed back before
  absl::Status first_error;
  std::set<uint64_t> seen;
  for (ResumedLaneFds& in : lanes) {
    const uint64_t lane_id = in.lane.lane_id();
    absl::Status s;
    bool newly = false;
    if (!seen.insert(lane_id).second) {
      s = absl::InvalidArgumentError(absl::StrCat("lane ", lane_id, " handed back twice"));
    } else {
      s = AdoptLane(name, channel, p.attachment_id(), client_side, in, &newly);
    }
    v1::ResumeLaneResult* r = reply->add_lanes();
    r->set_lane_id(lane_id);
    r->set_code(static_cast<int32_t>(s.code()));
    r->set_message(std::string(s.message()));
    if (!s.ok()) {
      metrics_->CountAttach(absl::StrCat("resume_lane_", ResultLabel(s.code())));
      first_error.Update(s);
      continue;
    }
    held.push_back(lane_id);
    if (newly) fresh.push_back(lane_id);
  }
  if (client_side && held.empty()) {
    // A producer or client is its lanes: without one there is nothing to resume.
    return first_error.ok() ? absl::InvalidArgumentError(absl::StrCat(
                                  "attachment ", p.attachment_id(), " handed back no lane"))
                            : first_error;
  }

  Attachment attachment;
  attachment.id = p.attachment_id();
  attachment.fd = socket_fd;
  attachment.channel = name;
  attachment.role = p.role();
  attachment.peer = peer;
  attachment.client_name = p.client_name();
  attachment.credential_sha256 = p.credential_sha256();
  if (dataplane::UniqueFd pidfd = ReadPeerPidfd(socket_fd); pidfd.valid()) {
    attachment.pidfd = std::make_shared<const dataplane::UniqueFd>(std::move(pidfd));
  }
  if (client_side) {
    const Lane& first = channel.lanes.at(held.front());
    attachment.bell = first.kind == Lane::Kind::kReply ? first.consumer_bell : first.producer_bell;
    attachment.lanes = held;
    // Lanes of this attachment that the other side handed back but this
    // process did not are not its any more: close them.
    std::vector<uint64_t> orphans;
    for (const auto& [id, lane] : channel.lanes) {
      if (lane.client_attachment == p.attachment_id() &&
          std::find(held.begin(), held.end(), id) == held.end()) {
        orphans.push_back(id);
      }
    }
    for (uint64_t id : orphans) {
      const bool produces = channel.lanes.at(id).kind != Lane::Kind::kReply;
      RetireLane(name, channel, id,
                 produces ? dataplane::kClosedProducerGone : dataplane::kClosedConsumerGone,
                 "its holder did not hand it back", /*tell_consumer=*/true);
    }
  } else {
    attachment.bell = channel.consumer_bell;
    channel.consumer_attachment = attachment.id;
  }
  pending_attachments_.erase(p.attachment_id());
  auto [it, inserted] = attachments_.emplace(attachment.id, std::move(attachment));
  const Attachment& stored = it->second;
  if (client_side) channel.client_attachments.push_back(stored.id);
  state_changed_ = true;
  Send(stored, reply_message);

  // The lanes the reader does not hold yet, in packets of at most
  // kMaxFdsPerPacket fds.
  std::vector<uint64_t> offer;
  uint64_t reader = 0;
  if (client_side) {
    reader = channel.consumer_attachment;
    offer = fresh;
  } else {
    reader = stored.id;
    for (const auto& [id, lane] : channel.lanes) {
      if (std::find(held.begin(), held.end(), id) == held.end()) offer.push_back(id);
    }
  }
  auto consumer = attachments_.find(reader);
  if (consumer != attachments_.end() && !offer.empty()) {
    v1::AttachMessage message;
    std::vector<dataplane::UniqueFd> fds;
    OutboundHolds holds;
    PidfdIndices pidfds;
    auto flush = [&] {
      if (message.lane_added().lanes_size() == 0) return;
      Send(consumer->second, message, std::move(fds), std::move(holds));
      message.Clear();
      fds.clear();
      holds.clear();
      pidfds.clear();
    };
    for (uint64_t id : offer) {
      if (fds.size() + 4 > kMaxFdsPerPacket) flush();
      if (!DescribeLane(record.spec, channel, channel.lanes.at(id), /*for_consumer_side=*/true,
                        message.mutable_lane_added()->add_lanes(), &fds, &holds, &pidfds)
               .ok()) {
        ::shutdown(consumer->second.fd, SHUT_RDWR);
        break;
      }
    }
    flush();
  }
  metrics_->CountAttach("resumed");
  Publish(v1::EVENT_TYPE_ATTACHED, stored.channel, &stored,
          absl::StrCat(ShortName(stored.role), " resumed after a daemon restart with ", held.size(),
                       " of ", lanes.size(), " lanes"));
  return stored.id;
}

void Attachments::EndConsumerSide(const std::string& name, LiveChannel& channel,
                                  absl::string_view why) {
  std::vector<uint64_t> lane_ids;
  for (const auto& [id, lane] : channel.lanes) lane_ids.push_back(id);
  for (uint64_t id : lane_ids) {
    const bool client_produces = channel.lanes.at(id).kind != Lane::Kind::kReply;
    RetireLane(name, channel, id,
               client_produces ? dataplane::kClosedConsumerGone : dataplane::kClosedProducerGone,
               why, /*tell_consumer=*/false);
  }
  const std::string bye =
      absl::StrCat("the consumer of channel \"", name, "\" went away (", why, "); attach again");
  const std::vector<uint64_t> clients = channel.client_attachments;
  for (uint64_t id : clients) {
    EndAttachment(id, v1::EVENT_TYPE_DETACHED, "consumer gone", bye, /*holder_alive=*/true);
  }
}

void Attachments::RetireUnclaimed(absl::Time now) {
  if (now < resume_deadline_) return;
  if (pending_attachments_.empty() && pending_lanes_ == 0) return;
  const std::string why = "it did not come back within --resume-grace after shmlaned restarted";
  const std::map<uint64_t, v1::PersistedAttachment> pending = std::move(pending_attachments_);
  pending_attachments_.clear();
  for (const auto& [id, p] : pending) {
    auto cit = channels_.find(p.channel());
    if (cit == channels_.end()) continue;
    const std::string& name = cit->first;
    LiveChannel& channel = cit->second;
    if (IsClientSide(p.role())) {
      std::vector<uint64_t> lanes;
      for (const auto& [lane_id, lane] : channel.lanes) {
        if (lane.client_attachment == id) lanes.push_back(lane_id);
      }
      for (uint64_t lane_id : lanes) {
        const bool produces = channel.lanes.at(lane_id).kind != Lane::Kind::kReply;
        metrics_->CountAttach("resume_unclaimed_lane");
        RetireLane(name, channel, lane_id,
                   produces ? dataplane::kClosedProducerGone : dataplane::kClosedConsumerGone,
                   absl::StrCat("its ", ShortName(p.role()), " ", why), /*tell_consumer=*/true);
      }
    } else if (channel.consumer_attachment == 0) {
      for (size_t i = 0; i < channel.lanes.size(); ++i) {
        metrics_->CountAttach("resume_unclaimed_lane");
      }
      EndConsumerSide(name, channel, absl::StrCat("its ", ShortName(p.role()), " ", why));
    }
    v1::Event event;
    event.set_type(v1::EVENT_TYPE_PEER_DIED);
    event.set_channel(name);
    event.set_attachment_id(id);
    event.set_uid(p.uid());
    event.set_client_name(p.client_name());
    event.set_role(ShortName(p.role()));
    event.set_detail(absl::StrCat("retired: ", why));
    events_->Publish(std::move(event));
  }
  for (auto& [name, channel] : channels_) {
    for (size_t i = 0; i < channel.pending_lanes.size(); ++i) {
      metrics_->CountAttach("resume_unclaimed_lane");
    }
    channel.pending_lanes.clear();
  }
  pending_lanes_ = 0;
  state_changed_ = true;
}

}  // namespace shmlane::control
