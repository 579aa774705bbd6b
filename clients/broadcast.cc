#include "clients/broadcast.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "clients/internal/attach_socket.h"
#include "clients/internal/attachment.h"
#include "clients/internal/broadcast_end.h"

namespace shmlane::client {

// ------------------------------- Publisher ---------------------------------

absl::StatusOr<Publisher> Publisher::Attach(std::string_view channel, const Options& options) {
  auto hs = internal::Attach(channel, v1::ROLE_PUBLISHER, options);
  if (!hs.ok()) return hs.status();
  const v1::AttachReply& reply = hs->reply;
  if (!reply.has_broadcast()) {
    return absl::DataLossError(absl::StrCat("shmlaned attached a publisher to ",
                                            internal::ChannelLabel(channel),
                                            " without describing its ring"));
  }
  auto ring = internal::TakeRing(reply.broadcast(), hs->reply_fds, dataplane::Access::kReadWrite);
  if (!ring.ok()) return ring.status();
  // The channel's wait preference unless the options override it.
  const dataplane::WaitOptions wait = ResolveWait(options, hs->wait_preference);
  auto writer = dataplane::BroadcastWriter::Attach(*std::move(ring), {.own = hs->own_bell}, wait);
  if (!writer.ok()) return writer.status();
  Publisher p;
  p.wait_ = wait;
  p.channel_ = hs->channel;
  p.attachment_id_ = hs->attachment_id;
  p.socket_ = std::make_unique<internal::AttachSocket>(std::move(hs->socket));
  p.writer_.emplace(*std::move(writer));
  p.slots_generation_ =
      &reinterpret_cast<const dataplane::BroadcastBlocks*>(p.writer_->segment().data())
           ->supervisor.slots_generation;
  for (const v1::BroadcastDescription& d : reply.subscribers()) {
    auto slot = internal::TakeSlot(d, hs->reply_fds, dataplane::Access::kReadOnly);
    if (!slot.ok()) return slot.status();
    const uint32_t s = slot->slot;
    if (absl::Status st =
            p.writer_->AddReader(s, std::move(slot->page), slot->reader_bell, slot->writer_bell);
        !st.ok()) {
      return st;
    }
    p.slots_[s] = slot->subscriber_attachment;
  }
  // Subscribers that did not fit in the reply follow at once.
  if (absl::Status s = p.Poll(); !s.ok()) return s;
  return p;
}

Publisher::Publisher(Publisher&&) noexcept = default;
Publisher& Publisher::operator=(Publisher&& other) noexcept {
  if (this != &other) {
    Close();
    channel_ = std::move(other.channel_);
    attachment_id_ = other.attachment_id_;
    socket_ = std::move(other.socket_);
    writer_ = std::move(other.writer_);
    other.writer_.reset();
    slots_ = std::move(other.slots_);
    daemon_status_ = std::move(other.daemon_status_);
    writes_since_check_ = other.writes_since_check_;
    slots_generation_ = other.slots_generation_;
    seen_generation_ = other.seen_generation_;
    subscriber_messages_ = other.subscriber_messages_;
    generation_tries_ = other.generation_tries_;
    closed_here_ = other.closed_here_;
    wait_ = other.wait_;
  }
  return *this;
}
Publisher::~Publisher() { Close(); }

void Publisher::Handle(internal::ReceivedMessage& received) {
  const v1::AttachMessage& m = received.message;
  if (m.has_subscriber_added() || m.has_subscriber_removed()) ++subscriber_messages_;
  if (m.has_subscriber_added()) {
    for (const v1::BroadcastDescription& d : m.subscriber_added().subscribers()) {
      auto slot = internal::TakeSlot(d, received.fds, dataplane::Access::kReadOnly);
      if (!slot.ok()) {
        daemon_status_ = slot.status();
        continue;
      }
      const uint32_t s = slot->slot;
      if (slots_.count(s) != 0) {
        // A SubscriberRemoved always comes first; be safe all the same.
        (void)writer_->RemoveReader(s);
        slots_.erase(s);
      }
      if (absl::Status st =
              writer_->AddReader(s, std::move(slot->page), slot->reader_bell, slot->writer_bell);
          !st.ok()) {
        daemon_status_ = st;
        continue;
      }
      slots_[s] = slot->subscriber_attachment;
    }
  } else if (m.has_subscriber_removed()) {
    const uint32_t s = m.subscriber_removed().slot();
    if (slots_.erase(s) != 0) (void)writer_->RemoveReader(s);
  } else if (m.has_goodbye()) {
    daemon_status_ = absl::UnavailableError(
        absl::StrCat("shmlaned ended this publisher: ", m.goodbye().reason()));
  }
}

absl::Status Publisher::Poll() {
  if (socket_ == nullptr || !socket_->is_open()) return daemon_status_;
  for (;;) {
    absl::StatusOr<std::optional<internal::ReceivedMessage>> r = socket_->TryReceive();
    if (!r.ok()) {
      if (daemon_status_.ok()) daemon_status_ = r.status();
      return daemon_status_;
    }
    if (!r->has_value()) return daemon_status_;
    Handle(**r);
  }
}

WriteResult Publisher::TryWrite(std::span<const std::byte> frame) {
  if (!writer_.has_value()) return WriteResult::kClosed;
  CheckDue();
  WriteResult r = writer_->TryWrite(frame);
  if (r == WriteResult::kFull) (void)Poll();
  return r;
}

WriteResult Publisher::Write(std::span<const std::byte> frame, absl::Time deadline) {
  if (!writer_.has_value()) return WriteResult::kClosed;
  CheckDue();
  // Fast path: room now. Otherwise learn of departed or new subscribers
  // first, then wait (a dead subscriber's release also rings our bell).
  WriteResult r = writer_->TryWrite(frame);
  if (r != WriteResult::kFull) return r;
  (void)Poll();
  return writer_->Write(frame, deadline);
}

Reservation Publisher::Reserve(size_t n) {
  if (!writer_.has_value()) return Reservation{};
  CheckDue();
  return writer_->Reserve(n);
}

void Publisher::Commit(size_t used, PublishMode mode) {
  if (writer_.has_value()) writer_->Commit(used, mode);
}

void Publisher::Close() {
  if (!writer_.has_value()) return;
  writer_->Close();
  closed_here_ = true;
  if (socket_ != nullptr && socket_->is_open()) {
    v1::AttachMessage detach;
    detach.mutable_detach();
    (void)socket_->Send(detach);
    socket_->Close();
  }
}

absl::Status Publisher::status() const {
  if (!daemon_status_.ok()) return daemon_status_;
  if (closed_here_) return absl::FailedPreconditionError("this publisher was closed");
  if (writer_.has_value()) return writer_->status();
  return absl::FailedPreconditionError("moved-from publisher");
}

uint32_t Publisher::max_frame_bytes() const {
  return writer_.has_value() ? writer_->max_frame_bytes() : 0;
}
uint64_t Publisher::frames_published() const {
  return writer_.has_value() ? writer_->frames_published() : 0;
}

// ------------------------------- Subscriber --------------------------------

absl::StatusOr<Subscriber> Subscriber::Attach(std::string_view channel, ReaderStart start,
                                              const Options& options) {
  auto hs = internal::Attach(channel, v1::ROLE_SUBSCRIBER, options);
  if (!hs.ok()) return hs.status();
  const v1::AttachReply& reply = hs->reply;
  if (!reply.has_broadcast()) {
    return absl::DataLossError(absl::StrCat("shmlaned attached a subscriber to ",
                                            internal::ChannelLabel(channel),
                                            " without describing its ring"));
  }
  // The ring fd is O_RDONLY: map it read-only (it can never become writable).
  auto ring = internal::TakeRing(reply.broadcast(), hs->reply_fds, dataplane::Access::kReadOnly);
  if (!ring.ok()) return ring.status();
  auto slot = internal::TakeSlot(reply.broadcast(), hs->reply_fds, dataplane::Access::kReadWrite);
  if (!slot.ok()) return slot.status();
  const dataplane::WaitOptions wait = ResolveWait(options, hs->wait_preference);
  auto reader = dataplane::BroadcastReader::Attach(
      *std::move(ring), std::move(slot->page), slot->slot,
      {.own = slot->reader_bell, .writer = slot->writer_bell}, start, wait);
  if (!reader.ok()) return reader.status();
  Subscriber s;
  s.wait_ = wait;
  s.channel_ = hs->channel;
  s.attachment_id_ = hs->attachment_id;
  s.socket_ = std::make_unique<internal::AttachSocket>(std::move(hs->socket));
  s.reader_.emplace(*std::move(reader));
  return s;
}

Subscriber::Subscriber(Subscriber&&) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&& other) noexcept {
  if (this != &other) {
    Close();
    channel_ = std::move(other.channel_);
    attachment_id_ = other.attachment_id_;
    socket_ = std::move(other.socket_);
    reader_ = std::move(other.reader_);
    other.reader_.reset();
    goodbye_ = std::move(other.goodbye_);
    closed_here_ = other.closed_here_;
    wait_ = other.wait_;
  }
  return *this;
}
Subscriber::~Subscriber() { Close(); }

BroadcastReadResult Subscriber::TryRead(std::span<std::byte> out, size_t* length, FrameInfo* info) {
  if (!reader_.has_value()) return BroadcastReadResult::kClosed;
  return reader_->TryRead(out, length, info);
}

BroadcastReadResult Subscriber::Read(std::span<std::byte> out, size_t* length, absl::Time deadline,
                                     FrameInfo* info) {
  if (!reader_.has_value()) return BroadcastReadResult::kClosed;
  return reader_->Read(out, length, deadline, info);
}

BroadcastPeek Subscriber::Peek() {
  if (!reader_.has_value()) {
    BroadcastPeek closed{};
    closed.result = BroadcastReadResult::kClosed;
    return closed;
  }
  return reader_->Peek();
}

ReleaseResult Subscriber::Release() {
  if (!reader_.has_value()) return ReleaseResult::kOk;
  return reader_->Release();
}

BroadcastReadResult Subscriber::WaitReadable(absl::Time deadline) {
  if (!reader_.has_value()) return BroadcastReadResult::kClosed;
  return reader_->WaitReadable(deadline);
}

uint64_t Subscriber::missed_frames() const {
  return reader_.has_value() ? reader_->missed_frames() : 0;
}
uint64_t Subscriber::frames_read() const {
  return reader_.has_value() ? reader_->frames_read() : 0;
}
uint32_t Subscriber::slot() const { return reader_.has_value() ? reader_->slot() : 0; }
uint32_t Subscriber::max_frame_bytes() const {
  return reader_.has_value() ? reader_->max_frame_bytes() : 0;
}

void Subscriber::Close() {
  if (!reader_.has_value() || closed_here_) return;
  reader_->Close();
  closed_here_ = true;
  if (socket_ != nullptr && socket_->is_open()) {
    v1::AttachMessage detach;
    detach.mutable_detach();
    (void)socket_->Send(detach);
    socket_->Close();
  }
}

void Subscriber::Note() const {
  if (socket_ == nullptr || !socket_->is_open() || !goodbye_.empty()) return;
  for (;;) {
    absl::StatusOr<std::optional<internal::ReceivedMessage>> r = socket_->TryReceive();
    if (!r.ok() || !r->has_value()) return;
    if ((*r)->message.has_goodbye()) {
      goodbye_ = (*r)->message.goodbye().reason();
      return;
    }
  }
}

absl::Status Subscriber::status() const {
  if (closed_here_) return absl::FailedPreconditionError("this subscriber was closed");
  if (!reader_.has_value()) return absl::FailedPreconditionError("moved-from subscriber");
  if (absl::Status s = reader_->status(); !s.ok()) return s;
  Note();
  if (!goodbye_.empty()) return absl::UnavailableError(goodbye_);
  return absl::OkStatus();
}

}  // namespace shmlane::client
