#include "clients/internal/inbox.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "dataplane/lane.h"

namespace shmlane::client::internal {
namespace {

// Bounds the control messages handled per check so that a chatty daemon
// cannot starve the data path.
constexpr int kMaxControlMessagesPerCheck = 64;

// The options with the endpoint's resolved wait (the channel's preference
// unless the application overrides it).
AttachOptions WithWait(AttachOptions options, dataplane::WaitOptions wait) {
  options.wait = wait;
  return options;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Inbox>> Inbox::Create(Handshake handshake, v1::Role role,
                                                     const AttachOptions& options,
                                                     PeerEventFn on_event, WriteLaneHooks hooks) {
  std::vector<LaneEnd> lanes = std::move(handshake.lanes);
  std::unique_ptr<Inbox> inbox(
      new Inbox(std::move(handshake), role, options, std::move(on_event), std::move(hooks)));
  if (absl::Status s = inbox->SetUpWakeFd(); !s.ok()) return s;
  if (absl::Status s = inbox->AddLanes(std::move(lanes)); !s.ok()) return s;
  return inbox;
}

Inbox::Inbox(Handshake handshake, v1::Role role, const AttachOptions& options, PeerEventFn on_event,
             WriteLaneHooks hooks)
    : role_(role),
      durable_(handshake.durable),
      options_(WithWait(options, ResolveWait(options, handshake.wait_preference))),
      channel_(std::move(handshake.channel)),
      attachment_id_(handshake.attachment_id),
      socket_(std::move(handshake.socket)),
      own_bell_(handshake.own_bell),
      set_(handshake.own_bell, /*per_lane_batch=*/64, options_.wait),
      on_event_(std::move(on_event)),
      hooks_(std::move(hooks)),
      client_name_(std::move(handshake.client_name)),
      credential_(std::move(handshake.resume_credential)) {}

absl::Status Inbox::SetUpWakeFd() {
  wake_fd_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!wake_fd_.valid()) {
    return absl::ResourceExhaustedError(absl::StrCat("epoll_create1: ", strerror(errno)));
  }
  interrupt_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!interrupt_fd_.valid()) {
    return absl::ResourceExhaustedError(absl::StrCat("eventfd: ", strerror(errno)));
  }
  for (int fd : {interrupt_fd_.get(), socket_.fd()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(wake_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::InternalError(absl::StrCat("epoll_ctl(ADD): ", strerror(errno)));
    }
  }
  return absl::OkStatus();
}

void Inbox::Interrupt() {
  interrupted_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  // A full counter (2^64 - 2 pending interrupts) cannot happen; ignore EAGAIN.
  (void)!::write(interrupt_fd_.get(), &one, sizeof(one));
}

void Inbox::Emit(PeerEvent::Kind kind, const Peer& peer, absl::Status status) {
  if (!on_event_) return;
  PeerEvent event{.kind = kind, .peer = peer, .status = std::move(status)};
  on_event_(event);
}

absl::Status Inbox::AddLanes(std::vector<LaneEnd> lanes) {
  absl::Status first_error;
  for (LaneEnd& lane : lanes) {
    const Peer peer = lane.peer;
    LaneInfo info{.peer = peer,
                  .credential = lane.resume_credential,
                  .segment_fd = lane.segment.fd(),
                  .own_bell = lane.own_bell != nullptr ? lane.own_bell : own_bell_,
                  .peer_bell = lane.peer_bell};
    if (lanes_.contains(peer.lane_id)) {
      first_error.Update(absl::DataLossError(
          absl::StrCat("shmlaned added lane ", peer.lane_id, " which is already attached")));
      continue;
    }
    if (lane.direction == v1::LANE_DIRECTION_WRITE) {
      if (!hooks_.add) {
        first_error.Update(absl::DataLossError(absl::StrCat(
            "shmlaned handed WRITE lane ", peer.lane_id, " to a ", v1::Role_Name(role_))));
        continue;
      }
      first_error.Update(hooks_.add(std::move(lane)));
      continue;
    }
    auto consumer = dataplane::Consumer::Attach(
        std::move(lane.segment),
        // A lane bell of its own (the daemon gives every consumer-side lane
        // one) makes the LaneSet wait on it through its epoll set.
        {.own = lane.own_bell != nullptr ? lane.own_bell : own_bell_, .peer = lane.peer_bell},
        options_.wait);
    if (!consumer.ok()) {
      first_error.Update(absl::Status(consumer.status().code(),
                                      absl::StrCat("lane ", peer.lane_id, " from '", peer.name,
                                                   "': ", consumer.status().message())));
      continue;
    }
    set_.Add(peer.lane_id, std::move(*consumer));
    lanes_.emplace(peer.lane_id, std::move(info));
    Emit(PeerEvent::Kind::kAttached, peer, absl::OkStatus());
  }
  return first_error;
}

void Inbox::RemoveLane(uint64_t lane_id, absl::Status why) {
  auto it = lanes_.find(lane_id);
  if (it == lanes_.end()) return;
  set_.Remove(lane_id);
  last_peer_ = nullptr;
  const Peer peer = std::move(it->second.peer);
  lanes_.erase(it);
  Emit(PeerEvent::Kind::kDetached, peer, std::move(why));
}

void Inbox::MarkRemoved(uint64_t lane_id, const std::string& reason) {
  if (lanes_.contains(lane_id)) {
    removals_new_.emplace_back(lane_id, reason);
  } else if (hooks_.remove) {
    hooks_.remove(lane_id);
  }
}

void Inbox::Hangup(absl::Status why) {
  if (attach_status_.ok()) attach_status_ = std::move(why);
  // Out of the epoll set first: a hung-up socket is readable forever.
  if (socket_.is_open() && wake_fd_.valid()) {
    (void)::epoll_ctl(wake_fd_.get(), EPOLL_CTL_DEL, socket_.fd(), nullptr);
  }
  socket_.Close();
}

void Inbox::CheckControl() {
  polls_since_check_ = 0;
  for (int i = 0; i < kMaxControlMessagesPerCheck && socket_.is_open(); ++i) {
    auto got = socket_.TryReceive();
    if (!got.ok()) {
      Hangup(got.status());
      // No Goodbye: the daemon died or stopped with --on-stop=keep. A
      // consumer hands its lanes to the next one.
      if ((role_ == v1::ROLE_CONSUMER || role_ == v1::ROLE_SERVER) && !credential_.empty() &&
          !lanes_.empty()) {
        resume_pending_ = true;
        resume_backoff_.Start(CoarseNowNs());
      }
      return;
    }
    if (!got->has_value()) return;
    ReceivedMessage& received = **got;
    const v1::AttachMessage& m = received.message;
    switch (m.body_case()) {
      case v1::AttachMessage::kLaneAdded: {
        auto lanes = TakeLanes(m.lane_added().lanes(), received.fds);
        absl::Status s = lanes.status();
        if (s.ok()) s = CheckDirections(role_, *lanes);
        if (s.ok()) s = AddLanes(std::move(*lanes));
        if (!s.ok()) Emit(PeerEvent::Kind::kDetached, Peer{}, s);
        break;
      }
      case v1::AttachMessage::kLaneRemoved:
        MarkRemoved(m.lane_removed().lane_id(), m.lane_removed().reason());
        break;
      case v1::AttachMessage::kGoodbye: {
        // The daemon ended this attachment (shutdown, channel deleted): its
        // lanes end too, once what was committed to them has been read. (A
        // daemon that just dies says nothing, and the lanes keep flowing.)
        const std::string reason =
            absl::StrCat("shmlaned ended the attachment: ", m.goodbye().reason());
        for (const auto& [id, info] : lanes_) removals_new_.emplace_back(id, reason);
        Hangup(absl::UnavailableError(absl::StrCat("shmlaned ended the attachment to ",
                                                   ChannelLabel(channel_), ": ",
                                                   m.goodbye().reason())));
        return;
      }
      default:
        // Unknown or misdirected messages are ignored: newer daemons may
        // send more, and nothing here depends on them.
        break;
    }
  }
}

void Inbox::OnFrame(FrameFn fn, uint64_t lane_id, std::span<const std::byte> frame) {
  if (last_peer_ == nullptr || last_lane_id_ != lane_id) {
    static const Peer unknown_peer;
    auto it = lanes_.find(lane_id);
    last_peer_ = it == lanes_.end() ? &unknown_peer : &it->second.peer;
    last_lane_id_ = lane_id;
  }
  fn(*last_peer_, frame);
}

void Inbox::OnEnd(uint64_t lane_id, dataplane::ReadResult why, const absl::Status& status) {
  // LaneSet drops the lane itself after this returns.
  auto it = lanes_.find(lane_id);
  if (it == lanes_.end()) return;
  const Peer peer = std::move(it->second.peer);
  lanes_.erase(it);
  last_peer_ = nullptr;
  absl::Status s;
  if (why != dataplane::ReadResult::kClosed) {
    s = status.ok() ? absl::DataLossError(absl::StrCat("lane ", lane_id, " from '", peer.name,
                                                       "' ended: ", ToString(why)))
                    : status;
  }
  Emit(PeerEvent::Kind::kDetached, peer, std::move(s));
}

size_t Inbox::Pass(FrameFn fn) {
  // Removals known before this pass began may be applied after it if it
  // finds every lane empty: every frame committed before the peer went has
  // then been delivered.
  removals_armed_.insert(removals_armed_.end(), removals_new_.begin(), removals_new_.end());
  removals_new_.clear();
  const size_t n = set_.Poll(
      [&](uint64_t lane_id, std::span<const std::byte> frame) { OnFrame(fn, lane_id, frame); },
      [&](uint64_t lane_id, dataplane::ReadResult why, const absl::Status& status) {
        OnEnd(lane_id, why, status);
      });
  if (n == 0 && !removals_armed_.empty()) {
    auto armed = std::move(removals_armed_);
    removals_armed_.clear();
    for (auto& [id, reason] : armed) {
      RemoveLane(id,
                 absl::UnavailableError(absl::StrCat("shmlaned removed lane ", id, ": ", reason)));
    }
  }
  return n;
}

void Inbox::MaybeResume() {
  if (!resume_pending_) return;
  const int64_t now = CoarseNowNs();
  if (resume_backoff_.Due(now)) TryResume(now);
}

absl::Time Inbox::ParkDeadline(absl::Time deadline) const {
  if (!resume_pending_) return deadline;
  const int64_t wait_ns = std::max<int64_t>(resume_backoff_.next_ns() - CoarseNowNs(), 1'000'000);
  return std::min(deadline, absl::Now() + absl::Nanoseconds(wait_ns));
}

void Inbox::TryResume(int64_t now) {
  if (lanes_.empty()) {
    resume_pending_ = false;  // nothing to hand back; finished() says so
    return;
  }
  ResumeRequest request;
  request.channel = channel_;
  request.role = role_;
  request.attachment_id = attachment_id_;
  request.credential = credential_;
  request.client_name = client_name_;
  for (const auto& [id, info] : lanes_) {
    // A READ lane: its producer parks on the peer bell, this side on its own.
    request.lanes.push_back({.lane_id = id,
                             .credential = info.credential,
                             .segment_fd = info.segment_fd,
                             .producer_bell_fd = info.peer_bell->fd(),
                             .consumer_bell_fd = info.own_bell->fd()});
  }
  if (hooks_.resume_lanes) hooks_.resume_lanes(&request.lanes);
  bool refused = false;
  auto result = Resume(request, options_, kResumeAttemptTimeout, &refused);
  if (!result.ok()) {
    if (refused) {
      // Final: the lanes flow on unsupervised until their producers close.
      resume_pending_ = false;
      attach_status_ = absl::UnavailableError(result.status().message());
      return;
    }
    resume_backoff_.Failed(now);
    return;
  }
  resume_pending_ = false;
  socket_ = std::move(result->socket);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = socket_.fd();
  (void)::epoll_ctl(wake_fd_.get(), EPOLL_CTL_ADD, socket_.fd(), &ev);
  attach_status_ = absl::OkStatus();
  control_maybe_ = true;
  ++resumes_;
}

size_t Inbox::Poll(FrameFn fn) {
  MaybeResume();
  const size_t n = Pass(fn);
  if (++polls_since_check_ >= kControlCheckEvery) CheckControl();
  return n;
}

absl::Status Inbox::FinishedStatus() const {
  if (!attach_status_.ok()) {
    return absl::UnavailableError(absl::StrCat("no producer is left on ", ChannelLabel(channel_),
                                               " and none can attach: ", attach_status_.message()));
  }
  return absl::UnavailableError(
      absl::StrCat("the attachment to ", ChannelLabel(channel_), " is closed"));
}

absl::StatusOr<size_t> Inbox::Wait(FrameFn fn, absl::Time deadline) {
  auto take_interrupt = [&]() -> bool {
    if (!interrupted_.exchange(false, std::memory_order_acquire)) return false;
    uint64_t count;
    (void)!::read(interrupt_fd_.get(), &count, sizeof(count));  // drain; EAGAIN is fine
    return true;
  };
  for (;;) {
    size_t n = Poll(fn);
    if (n > 0) return n;
    if (take_interrupt()) return absl::CancelledError("interrupted");
    // Idle: the attach socket is worth a system call now, unless nothing
    // can have come since the last look. The socket is in the park's wake
    // fd, so a message that arrives (or waits) ends the park and marks it.
    if (control_maybe_) {
      control_maybe_ = false;
      CheckControl();
    }
    if (finished()) return FinishedStatus();
    if (absl::Now() >= deadline) return Pass(fn);
    if (set_.empty()) {
      // No lane, so no waiter flag to announce: sleep until the daemon says
      // something or we are interrupted (a stray ring is harmless).
      own_bell_->Wait(ParkDeadline(deadline), wake_fd_.get());
      control_maybe_ = true;
      continue;
    }
    // Spins, announces itself on every lane, re-checks, then parks on the
    // doorbell and the wake fd. 0: deadline, or the wake fd woke us.
    n = set_.Wait(
        [&](uint64_t lane_id, std::span<const std::byte> frame) { OnFrame(fn, lane_id, frame); },
        [&](uint64_t lane_id, dataplane::ReadResult why, const absl::Status& status) {
          OnEnd(lane_id, why, status);
        },
        // The socket and the interrupt fd themselves, not the epoll set of
        // both (wake_fd_): a park through a nested epoll fd costs more.
        ParkDeadline(deadline), socket_.is_open() ? socket_.fd() : -1, interrupt_fd_.get());
    if (n > 0) return n;
    control_maybe_ = true;  // woken by the wake fd (or the deadline): look at the socket
  }
}

std::vector<Peer> Inbox::peers() const {
  std::vector<Peer> out;
  out.reserve(lanes_.size());
  for (const auto& [id, info] : lanes_) out.push_back(info.peer);
  return out;
}

void Inbox::Close() {
  resume_pending_ = false;
  // A durable channel's lanes stay open for the next reader: let go of them
  // (what was released is published) before the daemon learns we left, so
  // that the next one starts from our last release.
  if (durable_) set_.LeaveAll();
  if (socket_.is_open()) {
    v1::AttachMessage bye;
    bye.mutable_detach();
    (void)socket_.Send(bye);  // best effort: the hang-up says the same
    Hangup(absl::OkStatus());
  }
  std::vector<uint64_t> ids;
  for (const auto& [id, info] : lanes_) ids.push_back(id);
  for (uint64_t id : ids) set_.Remove(id);
  lanes_.clear();
  last_peer_ = nullptr;
  if (attach_status_.ok()) {
    attach_status_ = absl::FailedPreconditionError(
        absl::StrCat("the attachment to ", ChannelLabel(channel_), " was closed by this process"));
  }
}

}  // namespace shmlane::client::internal
