#include "clients/request_reply.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "clients/internal/attach_socket.h"
#include "clients/internal/attachment.h"
#include "clients/internal/framing.h"
#include "clients/internal/inbox.h"
#include "clients/producer.h"

namespace shmlane::client {
namespace internal {

// The server's reply lanes, keyed by the client attachment they lead to.
// Owned by the Server behind a stable pointer, because the Inbox's lane hooks
// point at it.
struct ServerReplies {
  std::shared_ptr<const dataplane::Doorbell> own_bell;
  dataplane::WaitOptions wait;
  absl::flat_hash_map<uint64_t, dataplane::Producer> by_client;
  absl::flat_hash_map<uint64_t, uint64_t> client_of_lane;  // reply lane id -> client
  // What a resume hands back for each reply lane, by client.
  struct Held {
    uint64_t lane_id = 0;
    std::string credential;
    std::shared_ptr<const dataplane::Doorbell> own;
    std::shared_ptr<const dataplane::Doorbell> peer;
  };
  absl::flat_hash_map<uint64_t, Held> held;
  std::vector<std::byte> scratch;
  uint64_t dropped = 0;

  absl::Status Add(LaneEnd lane) {
    auto producer = dataplane::Producer::Attach(
        std::move(lane.segment),
        {.own = lane.own_bell != nullptr ? lane.own_bell : own_bell, .peer = lane.peer_bell}, wait);
    if (!producer.ok()) return producer.status();
    const uint64_t client = lane.peer.attachment_id;
    by_client.erase(client);  // a replaced lane closes the old one
    by_client.emplace(client, std::move(*producer));
    client_of_lane[lane.peer.lane_id] = client;
    held[client] = Held{.lane_id = lane.peer.lane_id,
                        .credential = lane.resume_credential,
                        .own = lane.own_bell != nullptr ? lane.own_bell : own_bell,
                        .peer = lane.peer_bell};
    return absl::OkStatus();
  }
  void Remove(uint64_t lane_id) {
    auto it = client_of_lane.find(lane_id);
    if (it == client_of_lane.end()) return;
    by_client.erase(it->second);
    held.erase(it->second);
    client_of_lane.erase(it);
  }
  // A reply lane: the server produces (parks on its own bell), the client
  // consumes (parks on the peer bell).
  void ResumeLanes(std::vector<ResumeLane>* out) const {
    for (const auto& [client, lane] : by_client) {
      auto h = held.find(client);
      if (h == held.end()) continue;
      out->push_back({.lane_id = h->second.lane_id,
                      .credential = h->second.credential,
                      .segment_fd = lane.segment().fd(),
                      .producer_bell_fd = h->second.own->fd(),
                      .consumer_bell_fd = h->second.peer->fd()});
    }
  }
};

}  // namespace internal

// ------------------------------- Client -----------------------------------

absl::StatusOr<Client> Client::Attach(std::string_view channel, const Options& options) {
  auto handshake = internal::Attach(channel, v1::ROLE_CLIENT, options);
  if (!handshake.ok()) return handshake.status();
  Client c;
  // The client's wait for a reply (its READ lane) and for room to send a
  // request follow the channel's preference, as every endpoint does.
  const dataplane::WaitOptions wait = ResolveWait(options, handshake->wait_preference);
  for (internal::LaneEnd& end : handshake->lanes) {
    const dataplane::LaneBells bells{.own = handshake->own_bell, .peer = end.peer_bell};
    if (end.direction == v1::LANE_DIRECTION_WRITE && !c.requests_.has_value()) {
      auto lane = dataplane::Producer::Attach(std::move(end.segment), bells, wait);
      if (!lane.ok()) return lane.status();
      c.requests_.emplace(std::move(*lane));
      c.server_ = end.peer;
      c.request_lane_id_ = end.peer.lane_id;
      c.request_credential_ = end.resume_credential;
      c.request_peer_bell_ = end.peer_bell;
    } else if (end.direction == v1::LANE_DIRECTION_READ && !c.replies_.has_value()) {
      auto lane = dataplane::Consumer::Attach(std::move(end.segment), bells, wait);
      if (!lane.ok()) return lane.status();
      c.replies_.emplace(std::move(*lane));
      c.reply_lane_id_ = end.peer.lane_id;
      c.reply_credential_ = end.resume_credential;
      c.reply_peer_bell_ = end.peer_bell;
    } else {
      return absl::DataLossError(absl::StrCat("shmlaned handed this client an extra lane (",
                                              end.peer.lane_id, ") on ",
                                              internal::ChannelLabel(channel)));
    }
  }
  if (!c.requests_.has_value() || !c.replies_.has_value()) {
    return absl::DataLossError(
        absl::StrCat("shmlaned did not hand this client both a request and a reply lane on ",
                     internal::ChannelLabel(channel)));
  }
  c.channel_ = handshake->channel;
  c.attachment_id_ = handshake->attachment_id;
  c.socket_ = std::make_unique<internal::AttachSocket>(std::move(handshake->socket));
  c.inbound_.resize(4096);
  c.options_ = options;
  c.client_name_ = handshake->client_name;
  c.attach_credential_ = handshake->resume_credential;
  c.own_bell_ = handshake->own_bell;
  c.daemon_ = std::make_unique<internal::DaemonWatch>();
  c.next_daemon_check_ns_ = internal::CoarseNowNs() + internal::kDaemonCheckIntervalNs;
  return c;
}

void Client::CheckDaemon(int64_t now) {
  next_daemon_check_ns_ = now + internal::kDaemonCheckIntervalNs;
  if (!requests_.has_value() || resume_refused_) return;
  const bool resume_due = daemon_->Check(now, socket_.get(), [this](const v1::AttachMessage& m) {
    if (m.has_goodbye()) resume_refused_ = true;  // ended: do not resume
  });
  if (resume_due && !resume_refused_) TryResume(now);
}

void Client::TryResume(int64_t now) {
  if (requests_->PeerClosed()) {
    daemon_->Reconnected();
    return;
  }
  internal::ResumeRequest request;
  request.channel = channel_;
  request.role = v1::ROLE_CLIENT;
  request.attachment_id = attachment_id_;
  request.credential = attach_credential_;
  request.client_name = client_name_;
  // Request lane: this side produces and parks on its own bell; reply lane:
  // the server produces (parks on the peer bell), this side consumes.
  request.lanes.push_back({.lane_id = request_lane_id_,
                           .credential = request_credential_,
                           .segment_fd = requests_->segment().fd(),
                           .producer_bell_fd = own_bell_->fd(),
                           .consumer_bell_fd = request_peer_bell_->fd()});
  request.lanes.push_back({.lane_id = reply_lane_id_,
                           .credential = reply_credential_,
                           .segment_fd = replies_->segment().fd(),
                           .producer_bell_fd = reply_peer_bell_->fd(),
                           .consumer_bell_fd = own_bell_->fd()});
  bool refused = false;
  auto result = internal::Resume(request, options_, internal::kResumeAttemptTimeout, &refused);
  if (result.ok()) {
    for (const auto& [id, status] : result->lanes) {
      if (!status.ok()) refused = true;
    }
  }
  if (!result.ok() && !refused) {
    daemon_->RetryLater(now);
    return;
  }
  daemon_->Reconnected();
  if (refused) {
    // Unknown to the new daemon: end the lanes (calls then say Unavailable).
    resume_refused_ = true;
    requests_->Close();
    replies_->Close();
    requests_.reset();
    replies_.reset();
    return;
  }
  socket_ = std::make_unique<internal::AttachSocket>(std::move(result->socket));
  ++resumes_;
}

Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    Close();
    channel_ = std::move(other.channel_);
    attachment_id_ = other.attachment_id_;
    socket_ = std::move(other.socket_);
    requests_ = std::move(other.requests_);
    other.requests_.reset();
    replies_ = std::move(other.replies_);
    other.replies_.reset();
    server_ = std::move(other.server_);
    next_call_id_ = other.next_call_id_;
    scratch_ = std::move(other.scratch_);
    inbound_ = std::move(other.inbound_);
    options_ = std::move(other.options_);
    client_name_ = std::move(other.client_name_);
    attach_credential_ = std::move(other.attach_credential_);
    own_bell_ = std::move(other.own_bell_);
    request_lane_id_ = other.request_lane_id_;
    reply_lane_id_ = other.reply_lane_id_;
    request_credential_ = std::move(other.request_credential_);
    reply_credential_ = std::move(other.reply_credential_);
    request_peer_bell_ = std::move(other.request_peer_bell_);
    reply_peer_bell_ = std::move(other.reply_peer_bell_);
    next_daemon_check_ns_ = other.next_daemon_check_ns_;
    daemon_ = std::move(other.daemon_);
    resume_refused_ = other.resume_refused_;
    resumes_ = other.resumes_;
  }
  return *this;
}
Client::~Client() { Close(); }

void Client::Close() {
  if (requests_.has_value()) requests_->Close();
  if (replies_.has_value()) replies_->Close();
  requests_.reset();
  replies_.reset();
  if (socket_ != nullptr && socket_->is_open()) {
    v1::AttachMessage detach;
    detach.mutable_detach();
    (void)socket_->Send(detach);
    socket_->Close();
  }
}

size_t Client::max_request_bytes() const {
  if (!requests_.has_value() || requests_->max_frame_bytes() < kCallHeaderBytes) return 0;
  return requests_->max_frame_bytes() - kCallHeaderBytes;
}

absl::Status Client::Call(std::span<const std::byte> request, std::string* reply,
                          absl::Time deadline) {
  if (const int64_t now = internal::CoarseNowNs(); now >= next_daemon_check_ns_) {
    CheckDaemon(now);
  }
  if (resume_refused_ && !requests_.has_value()) {
    return absl::UnavailableError(
        absl::StrCat("call on ", internal::ChannelLabel(channel_),
                     ": the restarted shmlaned does not know this client's lanes; attach again"));
  }
  if (!requests_.has_value() || !replies_.has_value()) {
    return absl::FailedPreconditionError("the client is closed");
  }
  const std::string context = absl::StrCat("call on ", internal::ChannelLabel(channel_));
  const uint64_t call_id = next_call_id_++;
  const dataplane::WriteResult w = internal::WriteFramed(
      *requests_, internal::CallHeader{.call_id = call_id}, request, deadline, &scratch_);
  if (w != dataplane::WriteResult::kOk) {
    if (w == dataplane::WriteResult::kClosed) {
      return absl::UnavailableError(absl::StrCat(context, ": the server closed the channel"));
    }
    if (w == dataplane::WriteResult::kBroken) return requests_->status();
    return ToStatus(w, context);
  }
  for (;;) {
    size_t length = 0;
    const dataplane::ReadResult r = replies_->Read(inbound_, &length, deadline);
    switch (r) {
      case dataplane::ReadResult::kOk:
        break;
      case dataplane::ReadResult::kTooSmall:
        // The frame stays; read it again with room for it (bounded by the
        // lane's max frame, which the data plane enforces).
        inbound_.resize(length);
        continue;
      case dataplane::ReadResult::kTimeout:
        return absl::DeadlineExceededError(absl::StrCat(context, ": no reply before the deadline"));
      case dataplane::ReadResult::kClosed:
        return absl::UnavailableError(absl::StrCat(context, ": the server went away"));
      case dataplane::ReadResult::kBroken:
        return replies_->status();
      case dataplane::ReadResult::kEmpty:
        continue;
    }
    std::span<const std::byte> frame(inbound_.data(), length);
    internal::CallHeader header;
    if (!internal::DecodeCallHeader(frame, &header)) {
      return absl::DataLossError(
          absl::StrCat(context, ": reply of ", length, " bytes is shorter than its header"));
    }
    if (header.call_id != call_id) continue;  // the late reply of an earlier, timed-out call
    const std::span<const std::byte> body = frame.subspan(kCallHeaderBytes);
    if (header.code != 0) {
      return {internal::CodeFromRpc(header.code),
              absl::string_view(reinterpret_cast<const char*>(body.data()), body.size())};
    }
    reply->assign(reinterpret_cast<const char*>(body.data()), body.size());
    return absl::OkStatus();
  }
}

absl::StatusOr<std::string> Client::Call(std::string_view request, absl::Time deadline) {
  std::string reply;
  if (absl::Status s = Call(std::as_bytes(std::span(request)), &reply, deadline); !s.ok()) {
    return s;
  }
  return reply;
}

// ------------------------------- Server -----------------------------------

absl::StatusOr<Server> Server::Attach(std::string_view channel, Options options) {
  auto handshake = internal::Attach(channel, v1::ROLE_SERVER, options);
  if (!handshake.ok()) return handshake.status();
  Server s;
  s.reply_timeout_ = options.reply_timeout;
  s.replies_ = std::make_unique<internal::ServerReplies>();
  s.replies_->own_bell = handshake->own_bell;
  s.replies_->wait = ResolveWait(options, handshake->wait_preference);
  internal::ServerReplies* replies = s.replies_.get();
  internal::Inbox::WriteLaneHooks hooks{
      .add = [replies](internal::LaneEnd lane) { return replies->Add(std::move(lane)); },
      .remove = [replies](uint64_t lane_id) { replies->Remove(lane_id); },
      .resume_lanes =
          [replies](std::vector<internal::ResumeLane>* lanes) { replies->ResumeLanes(lanes); },
  };
  auto inbox = internal::Inbox::Create(std::move(*handshake), v1::ROLE_SERVER, options,
                                       std::move(options.on_peer_event), std::move(hooks));
  if (!inbox.ok()) return inbox.status();
  s.inbox_ = std::move(*inbox);
  return s;
}

Server::Server(Server&&) noexcept = default;
Server& Server::operator=(Server&& other) noexcept {
  if (this != &other) {
    Close();
    inbox_ = std::move(other.inbox_);
    replies_ = std::move(other.replies_);
    reply_timeout_ = other.reply_timeout_;
    reply_ = std::move(other.reply_);
  }
  return *this;
}
Server::~Server() { Close(); }

void Server::Close() {
  // A durable channel's reply lanes stay open for the next server: what was
  // committed is published before the daemon learns that this one left.
  const bool durable = inbox_ != nullptr && inbox_->durable();
  if (durable && replies_ != nullptr) {
    for (auto& [client, lane] : replies_->by_client) lane.Leave();
  }
  if (inbox_ != nullptr) inbox_->Close();
  if (replies_ != nullptr) {
    for (auto& [client, lane] : replies_->by_client) lane.Close();
    replies_->by_client.clear();
    replies_->client_of_lane.clear();
  }
}

void Server::Handle(Handler handler, const Peer& peer, std::span<const std::byte> frame) {
  internal::CallHeader header;
  auto it = replies_->by_client.find(peer.attachment_id);
  if (!internal::DecodeCallHeader(frame, &header) || it == replies_->by_client.end()) {
    // A request too short to carry its call id cannot be answered; neither
    // can one from a client whose reply lane is gone.
    ++replies_->dropped;
    return;
  }
  reply_.clear();
  const Request request{
      .client = peer, .call_id = header.call_id, .data = frame.subspan(kCallHeaderBytes)};
  const absl::Status status = handler(request, &reply_);
  internal::CallHeader out{.call_id = header.call_id, .code = static_cast<int32_t>(status.code())};
  std::span<const std::byte> body =
      status.ok() ? std::as_bytes(std::span(reply_)) : std::as_bytes(std::span(status.message()));
  if (!status.ok()) {
    // Error text must fit one frame; cut it rather than lose the status.
    const size_t room = it->second.max_frame_bytes() - kCallHeaderBytes;
    if (body.size() > room) body = body.first(room);
  }
  const dataplane::WriteResult w = internal::WriteFramed(
      it->second, out, body, absl::Now() + reply_timeout_, &replies_->scratch);
  if (w == dataplane::WriteResult::kTooLarge) {
    const std::string text =
        absl::StrCat("reply of ", body.size(), " bytes exceeds the channel's max frame");
    out.code = static_cast<int32_t>(absl::StatusCode::kResourceExhausted);
    if (internal::WriteFramed(it->second, out, std::as_bytes(std::span(text)),
                              absl::Now() + reply_timeout_,
                              &replies_->scratch) != dataplane::WriteResult::kOk) {
      ++replies_->dropped;
    }
    return;
  }
  if (w != dataplane::WriteResult::kOk) ++replies_->dropped;
}

size_t Server::ServeReady(Handler handler) {
  if (inbox_ == nullptr) return 0;
  return inbox_->Poll(
      [&](const Peer& peer, std::span<const std::byte> frame) { Handle(handler, peer, frame); });
}

absl::StatusOr<size_t> Server::ServeOnce(Handler handler, absl::Time deadline) {
  if (inbox_ == nullptr) return absl::FailedPreconditionError("the server is closed");
  return inbox_->Wait(
      [&](const Peer& peer, std::span<const std::byte> frame) { Handle(handler, peer, frame); },
      deadline);
}

absl::Status Server::Serve(Handler handler, absl::Time deadline) {
  for (;;) {
    auto n = ServeOnce(handler, deadline);
    if (!n.ok()) return absl::IsCancelled(n.status()) ? absl::OkStatus() : n.status();
    if (*n == 0 && absl::Now() >= deadline) return absl::OkStatus();
  }
}

void Server::Stop() {
  if (inbox_ != nullptr) inbox_->Interrupt();
}

std::vector<Peer> Server::clients() const {
  return inbox_ == nullptr ? std::vector<Peer>() : inbox_->peers();
}
uint64_t Server::attachment_id() const { return inbox_ == nullptr ? 0 : inbox_->attachment_id(); }
const std::string& Server::channel() const {
  static const std::string no_channel;
  return inbox_ == nullptr ? no_channel : inbox_->channel();
}
uint64_t Server::dropped_replies() const { return replies_ == nullptr ? 0 : replies_->dropped; }

}  // namespace shmlane::client
