#include "clients/consumer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "clients/internal/attachment.h"
#include "clients/internal/inbox.h"

namespace shmlane::client {

absl::StatusOr<Consumer> Consumer::Attach(std::string_view channel, Options options) {
  auto handshake = internal::Attach(channel, v1::ROLE_CONSUMER, options);
  if (!handshake.ok()) return handshake.status();
  auto gate = std::make_shared<EventGate>();
  gate->user = std::move(options.on_peer_event);
  PeerEventFn on_event;
  if (gate->user) {
    on_event = [g = gate.get()](const PeerEvent& e) {
      if (g->copying || !g->deferred.empty()) {
        g->deferred.emplace_back(g->copying ? g->copied : g->returned, e);
      } else {
        g->user(e);
      }
    };
  }
  auto inbox = internal::Inbox::Create(std::move(*handshake), v1::ROLE_CONSUMER, options,
                                       std::move(on_event));
  if (!inbox.ok()) return inbox.status();
  return Consumer(std::move(*inbox), std::move(gate));
}

Consumer::Consumer(std::unique_ptr<internal::Inbox> inbox, std::shared_ptr<EventGate> gate)
    : inbox_(std::move(inbox)), gate_(std::move(gate)) {}
Consumer::Consumer(Consumer&& other) noexcept
    : inbox_(std::move(other.inbox_)),
      gate_(std::move(other.gate_)),
      pending_(std::move(other.pending_)),
      pending_head_(std::exchange(other.pending_head_, 0)),
      pending_count_(std::exchange(other.pending_count_, 0)),
      peeked_(std::exchange(other.peeked_, false)),
      peeked_from_pending_(std::exchange(other.peeked_from_pending_, false)),
      release_on_next_call_(std::exchange(other.release_on_next_call_, false)),
      peeked_view_(other.peeked_view_),
      last_position_(other.last_position_) {}
Consumer& Consumer::operator=(Consumer&& other) noexcept {
  if (this != &other) {
    Close();
    inbox_ = std::move(other.inbox_);
    gate_ = std::move(other.gate_);
    pending_ = std::move(other.pending_);
    pending_head_ = std::exchange(other.pending_head_, 0);
    pending_count_ = std::exchange(other.pending_count_, 0);
    peeked_ = std::exchange(other.peeked_, false);
    peeked_from_pending_ = std::exchange(other.peeked_from_pending_, false);
    release_on_next_call_ = std::exchange(other.release_on_next_call_, false);
    peeked_view_ = other.peeked_view_;
    last_position_ = other.last_position_;
  }
  return *this;
}
Consumer::~Consumer() { Close(); }

void Consumer::Close() {
  if (inbox_ == nullptr) return;
  ReleaseRead();  // the application called again: done with the last Read
  peeked_ = false;
  inbox_->Close();
}

void Consumer::Interrupt() {
  if (inbox_ != nullptr) inbox_->Interrupt();
}

bool Consumer::durable() const { return inbox_ != nullptr && inbox_->durable(); }

uint64_t Consumer::position() const {
  if (inbox_ != nullptr && inbox_->delivering()) return inbox_->delivering_position();
  return last_position_;
}

bool Consumer::PopPending(Frame* frame) {
  if (pending_count_ == 0) return false;
  Frame& slot = pending_[pending_head_];
  // Swap rather than move so the caller's old buffer becomes the slot's
  // spare capacity.
  std::swap(frame->data, slot.data);
  frame->peer = slot.peer;
  frame->position = last_position_ = slot.position;
  pending_head_ = (pending_head_ + 1) % pending_.size();
  --pending_count_;
  ++gate_->returned;
  return true;
}

void Consumer::DeliverDueEvents() {
  EventGate& g = *gate_;
  size_t due = 0;
  while (due < g.deferred.size() && g.deferred[due].first <= g.returned) ++due;
  if (due == 0) return;
  // Taken out first: the callback may not call back into the Consumer, but
  // a later event may be deferred while these run.
  std::vector<std::pair<size_t, PeerEvent>> now(std::make_move_iterator(g.deferred.begin()),
                                                std::make_move_iterator(g.deferred.begin() + due));
  g.deferred.erase(g.deferred.begin(), g.deferred.begin() + due);
  for (const auto& [before, event] : now) g.user(event);
}

absl::StatusOr<FrameView> Consumer::Peek(absl::Time deadline) {
  if (inbox_ == nullptr) return absl::FailedPreconditionError("consumer is moved-from");
  ReleaseRead();
  if (peeked_) return peeked_view_;
  if (pending_count_ > 0) {
    const Frame& slot = pending_[pending_head_];
    peeked_view_ = {&slot.peer, std::as_bytes(std::span(slot.data)), slot.position};
    last_position_ = slot.position;
    peeked_ = peeked_from_pending_ = true;
    return peeked_view_;
  }
  auto keep = [&](const Peer& peer, std::span<const std::byte> data) {
    peeked_view_ = {&peer, data, inbox_->delivering_position()};
    inbox_->Keep();
  };
  for (;;) {
    auto n = inbox_->Wait(keep, deadline);
    if (!n.ok()) return n.status();
    if (*n > 0) {
      last_position_ = peeked_view_.position;
      peeked_ = true;
      peeked_from_pending_ = false;
      return peeked_view_;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no frame on ", internal::ChannelLabel(inbox_->channel()), " before the deadline"));
    }
  }
}

void Consumer::Release() {
  if (!peeked_ || inbox_ == nullptr) return;
  peeked_ = false;
  if (peeked_from_pending_) {
    peeked_from_pending_ = false;
    pending_head_ = (pending_head_ + 1) % pending_.size();
    --pending_count_;
    ++gate_->returned;
    return;
  }
  inbox_->ReleaseKept();
}

size_t Consumer::FlushPeeked(FrameFn fn) {
  if (!peeked_) return 0;
  last_position_ = peeked_view_.position;
  fn(*peeked_view_.peer, peeked_view_.data);
  Release();
  return 1;
}

absl::Status Consumer::Read(Frame* frame, absl::Time deadline) {
  if (inbox_ == nullptr) return absl::FailedPreconditionError("consumer is moved-from");
  ReleaseRead();
  if (peeked_ || inbox_->durable()) {
    // One frame at a time, kept in its lane: on a durable channel it is
    // released when the application calls again, so a consumer that dies
    // while handling it leaves it to the next one.
    absl::StatusOr<FrameView> view = Peek(deadline);
    if (!view.ok()) return view.status();
    frame->data.assign(reinterpret_cast<const char*>(view->data.data()), view->data.size());
    if (frame->peer.lane_id != view->peer->lane_id || frame->peer.name != view->peer->name) {
      frame->peer = *view->peer;
    }
    frame->position = view->position;
    if (inbox_->durable()) {
      release_on_next_call_ = true;
    } else {
      Release();
    }
    return absl::OkStatus();
  }
  DeliverDueEvents();
  if (PopPending(frame)) return absl::OkStatus();
  pending_head_ = 0;
  auto copy = [&](const Peer& peer, std::span<const std::byte> data) {
    if (pending_count_ == pending_.size()) pending_.emplace_back();
    Frame& slot = pending_[pending_count_++];
    ++gate_->copied;
    slot.data.assign(reinterpret_cast<const char*>(data.data()), data.size());
    slot.position = inbox_->delivering_position();
    if (slot.peer.lane_id != peer.lane_id || slot.peer.name != peer.name) slot.peer = peer;
  };
  for (;;) {
    // Every frame of the previous pass was returned: its events are all due.
    gate_->copying = true;
    gate_->copied = 0;
    gate_->returned = 0;
    auto n = inbox_->Wait(copy, deadline);
    gate_->copying = false;
    DeliverDueEvents();
    if (!n.ok()) return n.status();
    if (*n > 0) {
      PopPending(frame);
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no frame on ", internal::ChannelLabel(inbox_->channel()), " before the deadline"));
    }
  }
}

absl::StatusOr<Frame> Consumer::Read(absl::Time deadline) {
  Frame frame;
  if (absl::Status s = Read(&frame, deadline); !s.ok()) return s;
  return frame;
}

size_t Consumer::Poll(FrameFn fn) {
  if (inbox_ == nullptr) return 0;
  ReleaseRead();
  size_t n = FlushPeeked(fn);
  Frame frame;
  DeliverDueEvents();
  while (PopPending(&frame)) {
    fn(frame.peer, std::as_bytes(std::span(frame.data)));
    ++n;
    DeliverDueEvents();
  }
  return n + inbox_->Poll(fn);
}

absl::StatusOr<size_t> Consumer::Wait(FrameFn fn, absl::Time deadline) {
  if (inbox_ == nullptr) return absl::FailedPreconditionError("consumer is moved-from");
  const size_t pending = Poll(fn);
  if (pending > 0) return pending;
  return inbox_->Wait(fn, deadline);
}

size_t Consumer::Drain(FrameFn fn, size_t max_frames) {
  size_t total = 0;
  while (total < max_frames) {
    const size_t n = Poll(fn);
    if (n == 0) break;
    total += n;
  }
  return total;
}

std::vector<Peer> Consumer::peers() const {
  return inbox_ == nullptr ? std::vector<Peer>() : inbox_->peers();
}
uint64_t Consumer::attachment_id() const { return inbox_ == nullptr ? 0 : inbox_->attachment_id(); }
const std::string& Consumer::channel() const {
  static const std::string no_channel;
  return inbox_ == nullptr ? no_channel : inbox_->channel();
}
uint64_t Consumer::resumes() const { return inbox_ == nullptr ? 0 : inbox_->resumes(); }
absl::Status Consumer::attach_status() const {
  return inbox_ == nullptr ? absl::FailedPreconditionError("consumer is moved-from")
                           : inbox_->attach_status();
}

}  // namespace shmlane::client
