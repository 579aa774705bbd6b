#include "clients/internal/attachment.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace shmlane::client::internal {
namespace {

constexpr size_t kMaxClientNameBytes = 63;

// A new close-on-exec fd for the fd at `index`, leaving the packet's copy to
// be closed with the packet (an index may be referenced more than once).
absl::StatusOr<dataplane::UniqueFd> DupAt(const std::vector<dataplane::UniqueFd>& fds,
                                          uint32_t index, const char* what) {
  if (index >= fds.size()) {
    return absl::DataLossError(absl::StrCat("shmlaned referred to fd index ", index, " for ", what,
                                            " but sent only ", fds.size(), " fds"));
  }
  const int fd = ::fcntl(fds[index].get(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot duplicate the ", what, " fd: ", strerror(errno)));
  }
  return dataplane::UniqueFd(fd);
}

std::string DefaultClientName() {
  std::string name = program_invocation_short_name != nullptr ? program_invocation_short_name : "";
  if (name.empty()) name = "shmlane-client";
  return name;
}

// Reads the LaneAdded packets that complete an AttachReply with
// `lanes_following` > 0 (lanes that did not fit in the reply's fd budget).
// The daemon queues them right behind the reply, so anything else in between,
// or more lanes than announced, is a protocol violation.
absl::Status ReceiveFollowingLanes(AttachSocket& socket, std::string_view channel, v1::Role role,
                                   uint32_t lanes_following, absl::Time deadline, Handshake* out) {
  absl::flat_hash_set<uint64_t> lane_ids;
  for (const LaneEnd& lane : out->lanes) lane_ids.insert(lane.peer.lane_id);
  uint32_t received_lanes = 0;
  while (received_lanes < lanes_following) {
    auto received = socket.Receive(deadline);
    if (!received.ok()) {
      return absl::Status(
          received.status().code(),
          absl::StrCat("attaching to ", ChannelLabel(channel), " at ", socket.path(),
                       ": waiting for ", lanes_following - received_lanes, " of ", lanes_following,
                       " announced lanes: ", received.status().message()));
    }
    if (!received->message.has_lane_added() || received->message.lane_added().lanes().empty()) {
      return absl::DataLossError(absl::StrCat(
          "shmlaned announced ", lanes_following, " more lanes for ", ChannelLabel(channel),
          " but sent something other than a LaneAdded after ", received_lanes));
    }
    const auto& descriptions = received->message.lane_added().lanes();
    if (static_cast<uint32_t>(descriptions.size()) > lanes_following - received_lanes) {
      return absl::DataLossError(absl::StrCat("shmlaned announced ", lanes_following,
                                              " more lanes for ", ChannelLabel(channel),
                                              " but sent ", received_lanes + descriptions.size()));
    }
    auto lanes = TakeLanes(descriptions, received->fds);
    if (!lanes.ok()) return lanes.status();
    if (absl::Status s = CheckDirections(role, *lanes); !s.ok()) return s;
    for (LaneEnd& lane : *lanes) {
      if (!lane_ids.insert(lane.peer.lane_id).second) {
        return absl::DataLossError(
            absl::StrCat("shmlaned described lane ", lane.peer.lane_id, " twice"));
      }
      out->lanes.push_back(std::move(lane));
    }
    received_lanes += static_cast<uint32_t>(descriptions.size());
  }
  return absl::OkStatus();
}

}  // namespace

std::string ChannelLabel(std::string_view channel) {
  return absl::StrCat("channel '", std::string(channel), "'");
}

absl::StatusOr<std::vector<LaneEnd>> TakeLanes(
    const google::protobuf::RepeatedPtrField<v1::LaneDescription>& lanes,
    const std::vector<dataplane::UniqueFd>& fds) {
  std::vector<LaneEnd> out;
  out.reserve(static_cast<size_t>(lanes.size()));
  absl::flat_hash_map<uint32_t, std::shared_ptr<const dataplane::Doorbell>> bells;
  // The lanes of one peer share its pidfd.
  absl::flat_hash_map<uint32_t, std::shared_ptr<const dataplane::UniqueFd>> pidfds;
  absl::flat_hash_set<uint32_t> segment_indices;
  absl::flat_hash_set<uint64_t> lane_ids;
  for (const v1::LaneDescription& d : lanes) {
    if (!lane_ids.insert(d.lane_id()).second) {
      return absl::DataLossError(absl::StrCat("shmlaned described lane ", d.lane_id(), " twice"));
    }
    if (d.direction() != v1::LANE_DIRECTION_READ && d.direction() != v1::LANE_DIRECTION_WRITE) {
      return absl::DataLossError(
          absl::StrCat("lane ", d.lane_id(), " has no valid direction (", d.direction(), ")"));
    }
    if (!segment_indices.insert(d.segment_fd_index()).second) {
      return absl::DataLossError(
          absl::StrCat("lane ", d.lane_id(), " shares its segment fd with another lane"));
    }
    LaneEnd lane;
    lane.direction = d.direction();
    lane.peer = Peer{.lane_id = d.lane_id(),
                     .attachment_id = d.peer_attachment_id(),
                     .name = d.peer_name().substr(0, kMaxClientNameBytes),
                     .has_credentials = d.has_peer_credentials(),
                     .uid = d.peer_uid(),
                     .gid = d.peer_gid(),
                     .pid = d.peer_pid(),
                     .pidfd = nullptr};
    lane.ring_bytes = d.ring_bytes();
    lane.max_frame_bytes = d.max_frame_bytes();
    lane.resume_credential = d.resume_credential();
    if (d.has_peer_pidfd()) {
      const uint32_t index = d.peer_pidfd_fd_index();
      if (index == d.segment_fd_index() || index == d.peer_doorbell_fd_index() ||
          (d.has_own_doorbell() && index == d.own_doorbell_fd_index())) {
        return absl::DataLossError(
            absl::StrCat("lane ", d.lane_id(), " names one fd for two purposes"));
      }
      auto pit = pidfds.find(index);
      if (pit == pidfds.end()) {
        auto pidfd = DupAt(fds, index, "peer pidfd");
        if (!pidfd.ok()) return pidfd.status();
        pit = pidfds.emplace(index, std::make_shared<const dataplane::UniqueFd>(std::move(*pidfd)))
                  .first;
      }
      lane.peer.pidfd = pit->second;
    }

    auto segment_fd = DupAt(fds, d.segment_fd_index(), "lane segment");
    if (!segment_fd.ok()) return segment_fd.status();
    auto segment = dataplane::Segment::Map(std::move(*segment_fd), dataplane::Access::kReadWrite);
    if (!segment.ok()) {
      return absl::Status(segment.status().code(),
                          absl::StrCat("lane ", d.lane_id(), ": ", segment.status().message()));
    }
    lane.segment = std::move(*segment);

    auto it = bells.find(d.peer_doorbell_fd_index());
    if (it == bells.end()) {
      auto bell_fd = DupAt(fds, d.peer_doorbell_fd_index(), "peer doorbell");
      if (!bell_fd.ok()) return bell_fd.status();
      auto bell = dataplane::Doorbell::Adopt(std::move(*bell_fd));
      if (!bell.ok()) return bell.status();
      it = bells
               .emplace(d.peer_doorbell_fd_index(),
                        std::make_shared<const dataplane::Doorbell>(std::move(*bell)))
               .first;
    }
    lane.peer_bell = it->second;
    if (d.has_own_doorbell()) {
      if (d.own_doorbell_fd_index() == d.peer_doorbell_fd_index() ||
          d.own_doorbell_fd_index() == d.segment_fd_index()) {
        return absl::DataLossError(
            absl::StrCat("lane ", d.lane_id(), " names one fd for two purposes"));
      }
      auto own_fd = DupAt(fds, d.own_doorbell_fd_index(), "own lane doorbell");
      if (!own_fd.ok()) return own_fd.status();
      auto own = dataplane::Doorbell::Adopt(std::move(*own_fd));
      if (!own.ok()) return own.status();
      lane.own_bell = std::make_shared<const dataplane::Doorbell>(std::move(*own));
    }
    out.push_back(std::move(lane));
  }
  return out;
}

absl::Status CheckDirections(v1::Role role, const std::vector<LaneEnd>& lanes) {
  for (const LaneEnd& lane : lanes) {
    const bool ok = (role == v1::ROLE_PRODUCER && lane.direction == v1::LANE_DIRECTION_WRITE) ||
                    (role == v1::ROLE_CONSUMER && lane.direction == v1::LANE_DIRECTION_READ) ||
                    role == v1::ROLE_CLIENT || role == v1::ROLE_SERVER;
    if (!ok) {
      return absl::DataLossError(
          absl::StrCat("shmlaned handed lane ", lane.peer.lane_id, " with direction ",
                       v1::LaneDirection_Name(lane.direction), " to a ", v1::Role_Name(role)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Handshake> Attach(std::string_view channel, v1::Role role,
                                 const AttachOptions& options) {
  if (channel.empty()) return absl::InvalidArgumentError("channel name is empty");
  const absl::Time deadline = absl::Now() + options.attach_timeout;
  auto socket = AttachSocket::Connect(AttachSocketPath(options.runtime_dir), options.attach_timeout,
                                      options.expected_daemon_uid);
  if (!socket.ok()) return socket.status();

  v1::AttachMessage request;
  v1::AttachRequest* req = request.mutable_attach_request();
  req->set_protocol_version(v1::ATTACH_PROTOCOL_VERSION_1);
  req->set_channel(std::string(channel));
  req->set_role(role);
  std::string name = options.client_name.empty() ? DefaultClientName() : options.client_name;
  req->set_client_name(name.substr(0, kMaxClientNameBytes));
  if (absl::Status s = socket->Send(request); !s.ok()) return s;

  auto received = socket->Receive(deadline);
  if (!received.ok()) {
    if (absl::IsDeadlineExceeded(received.status())) {
      return absl::DeadlineExceededError(absl::StrCat("attaching to ", ChannelLabel(channel),
                                                      " at ", socket->path(), ": ",
                                                      received.status().message()));
    }
    return received.status();
  }
  if (!received->message.has_attach_reply()) {
    return absl::DataLossError(absl::StrCat("shmlaned answered the attach request for ",
                                            ChannelLabel(channel),
                                            " with something other than an AttachReply"));
  }
  const v1::AttachReply& reply = received->message.attach_reply();
  if (reply.code() != 0) {
    std::string message = reply.message().empty() ? absl::StrCat("shmlaned refused to attach to ",
                                                                 ChannelLabel(channel))
                                                  : reply.message();
    return absl::Status(CodeFromRpc(reply.code()), message);
  }

  Handshake out;
  out.channel = std::string(channel);
  out.attachment_id = reply.attachment_id();
  out.max_frame_bytes = reply.max_frame_bytes();
  out.ring_bytes = reply.ring_bytes();
  out.wait_preference = reply.wait_preference();
  out.client_name = req->client_name();
  out.resume_credential = reply.resume_credential();
  out.durable = reply.durable();
  auto bell_fd = DupAt(received->fds, reply.doorbell_fd_index(), "own doorbell");
  if (!bell_fd.ok()) return bell_fd.status();
  auto bell = dataplane::Doorbell::Adopt(std::move(*bell_fd));
  if (!bell.ok()) return bell.status();
  out.own_bell = std::make_shared<const dataplane::Doorbell>(std::move(*bell));
  auto lanes = TakeLanes(reply.lanes(), received->fds);
  if (!lanes.ok()) return lanes.status();
  if (absl::Status s = CheckDirections(role, *lanes); !s.ok()) return s;
  out.lanes = std::move(*lanes);
  if (absl::Status s =
          ReceiveFollowingLanes(*socket, channel, role, reply.lanes_following(), deadline, &out);
      !s.ok()) {
    return s;
  }
  out.socket = std::move(*socket);
  if (role == v1::ROLE_PUBLISHER || role == v1::ROLE_SUBSCRIBER) {
    // Their descriptions are read by clients/broadcast.cc, which takes what
    // it needs; the rest close with the Handshake.
    out.reply = reply;
    out.reply_fds = std::move(received->fds);
  }
  return out;
}

namespace {

constexpr int kMaxResumeLanesPerPacket = 21;  // 63 fds (the daemon takes 64)

absl::StatusOr<v1::ResumeReply> ReceiveResumeReply(AttachSocket& socket, absl::Time deadline,
                                                   std::string_view channel, bool* refused) {
  auto received = socket.Receive(deadline);
  if (!received.ok()) return received.status();
  if (!received->message.has_resume_reply()) {
    // An AttachReply here is the daemon shedding load at accept (retry), or
    // a daemon that does not know Resume (final).
    if (received->message.has_attach_reply() && received->message.attach_reply().code() != 0) {
      const absl::StatusCode code = CodeFromRpc(received->message.attach_reply().code());
      *refused = code != absl::StatusCode::kResourceExhausted;
      return absl::Status(
          code, absl::StrCat("shmlaned did not take the resume of ", ChannelLabel(channel), ": ",
                             received->message.attach_reply().message()));
    }
    *refused = true;
    return absl::DataLossError(absl::StrCat("shmlaned answered a resume of ", ChannelLabel(channel),
                                            " with something other than a ResumeReply"));
  }
  const v1::ResumeReply& reply = received->message.resume_reply();
  if (reply.code() != 0) {
    *refused = true;
    return absl::Status(CodeFromRpc(reply.code()),
                        absl::StrCat("shmlaned refused to resume the attachment to ",
                                     ChannelLabel(channel), ": ", reply.message()));
  }
  return reply;
}

}  // namespace

absl::StatusOr<ResumeResult> Resume(const ResumeRequest& request, const AttachOptions& options,
                                    absl::Duration timeout, bool* refused) {
  *refused = false;
  const absl::Time deadline = absl::Now() + timeout;
  auto socket = AttachSocket::Connect(AttachSocketPath(options.runtime_dir), timeout,
                                      options.expected_daemon_uid);
  if (!socket.ok()) return socket.status();
  v1::AttachMessage message;
  v1::Resume* r = message.mutable_resume();
  r->set_protocol_version(v1::ATTACH_PROTOCOL_VERSION_1);
  r->set_channel(request.channel);
  r->set_role(request.role);
  r->set_attachment_id(request.attachment_id);
  r->set_credential(request.credential);
  r->set_client_name(request.client_name);
  r->set_lanes(static_cast<uint32_t>(request.lanes.size()));
  if (absl::Status s = socket->Send(message); !s.ok()) return s;
  auto reply = ReceiveResumeReply(*socket, deadline, request.channel, refused);
  if (!reply.ok()) return reply.status();
  if (!request.lanes.empty()) {
    if (!reply->ready()) {
      *refused = true;
      return absl::DataLossError("shmlaned did not ask for the lanes of a resume");
    }
    for (size_t i = 0; i < request.lanes.size(); i += kMaxResumeLanesPerPacket) {
      v1::AttachMessage packet;
      std::vector<int> fds;
      const size_t end = std::min(request.lanes.size(), i + kMaxResumeLanesPerPacket);
      for (size_t k = i; k < end; ++k) {
        const ResumeLane& lane = request.lanes[k];
        v1::ResumedLane* d = packet.mutable_resume_lanes()->add_lanes();
        d->set_lane_id(lane.lane_id);
        d->set_credential(lane.credential);
        d->set_segment_fd_index(static_cast<uint32_t>(fds.size()));
        fds.push_back(lane.segment_fd);
        d->set_producer_doorbell_fd_index(static_cast<uint32_t>(fds.size()));
        fds.push_back(lane.producer_bell_fd);
        d->set_consumer_doorbell_fd_index(static_cast<uint32_t>(fds.size()));
        fds.push_back(lane.consumer_bell_fd);
      }
      if (absl::Status s = socket->Send(packet, fds); !s.ok()) return s;
    }
    reply = ReceiveResumeReply(*socket, deadline, request.channel, refused);
    if (!reply.ok()) return reply.status();
  }
  ResumeResult out;
  for (const v1::ResumeLaneResult& lane : reply->lanes()) {
    out.lanes.emplace_back(
        lane.lane_id(), lane.code() == 0 ? absl::OkStatus()
                                         : absl::Status(CodeFromRpc(lane.code()), lane.message()));
  }
  out.socket = std::move(*socket);
  return out;
}

bool DaemonWatch::Check(int64_t now_ns, AttachSocket* socket,
                        absl::FunctionRef<void(const v1::AttachMessage&)> on_message) {
  if (!gone_) {
    if (socket == nullptr || !socket->is_open()) return false;
    for (int i = 0; i < 16; ++i) {
      auto got = socket->TryReceive();
      if (!got.ok()) {
        // Hung up without a Goodbye: the daemon died or stopped with
        // --on-stop=keep. The lanes flow on; they go to the next daemon.
        socket->Close();
        gone_ = true;
        backoff_.Start(now_ns);
        break;
      }
      if (!got->has_value()) break;
      on_message((*got)->message);
    }
  }
  return gone_ && backoff_.Due(now_ns);
}

}  // namespace shmlane::client::internal
