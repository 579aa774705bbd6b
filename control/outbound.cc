#include "control/outbound.h"

#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "control/attach_wire.h"

namespace shmlane::control {

void OutboundQueues::SetWaker(OutboundWaker* waker) {
  absl::MutexLock lock(&mu_);
  if (waker == nullptr) {
    // Nobody will flush what is queued: give those peers a hang-up.
    for (auto& [id, outbox] : outboxes_) ::shutdown(outbox.fd, SHUT_RDWR);
    outboxes_.clear();
  }
  waker_ = waker;
}

void OutboundQueues::Send(uint64_t connection, int socket_fd,
                          const shmlane::v1::AttachMessage& message,
                          std::vector<dataplane::UniqueFd> fds) {
  absl::MutexLock lock(&mu_);
  SendLocked(connection, socket_fd, message, std::move(fds));
}

void OutboundQueues::SendLast(uint64_t connection, int socket_fd,
                              const shmlane::v1::AttachMessage& message) {
  absl::MutexLock lock(&mu_);
  SendLocked(connection, socket_fd, message, {});
  auto it = outboxes_.find(connection);
  if (it == outboxes_.end()) {
    ::shutdown(socket_fd, SHUT_RDWR);
  } else if (!it->second.overflowed) {
    // The Goodbye waits behind packets the peer has not read yet.
    it->second.ended = true;
    it->second.end_deadline = absl::Now() + kEndedFlushTimeout;
    ScheduleServiceLocked();
  }
}

bool OutboundQueues::Remove(uint64_t connection) {
  absl::MutexLock lock(&mu_);
  auto it = outboxes_.find(connection);
  if (it == outboxes_.end()) return false;
  // The fd closes next, which also takes it out of the epoll set.
  const bool overflowed = it->second.overflowed;
  outboxes_.erase(it);
  return overflowed;
}

void OutboundQueues::SendLocked(uint64_t connection, int socket_fd,
                                const shmlane::v1::AttachMessage& message,
                                std::vector<dataplane::UniqueFd> fds) {
  Packet packet;
  packet.fds = std::move(fds);
  if (!message.SerializeToString(&packet.bytes) || packet.bytes.size() > kMaxAttachMessageBytes ||
      packet.fds.size() > kMaxFdsPerPacket) {
    // Cannot happen (packets are built within the bounds); if it did, the
    // peer would miss a message, so end it rather than let it run on wrong.
    ::shutdown(socket_fd, SHUT_RDWR);
    return;
  }
  auto it = outboxes_.find(connection);
  if (it != outboxes_.end()) {
    Outbox& outbox = it->second;
    if (outbox.overflowed) return;  // already disconnected; the fds close here
    outbox.bytes += packet.bytes.size();
    outbox.fds += packet.fds.size();
    outbox.packets.push_back(std::move(packet));
    if (outbox.packets.size() > kMaxOutboundMessages || outbox.bytes > kMaxOutboundBytes ||
        outbox.fds > kMaxOutboundFds) {
      OverflowLocked(outbox);
    }
    return;
  }
  // Nothing queued: the common case sends at once.
  std::vector<int> raw;
  raw.reserve(packet.fds.size());
  for (const auto& fd : packet.fds) raw.push_back(fd.get());
  const PacketSendResult result = SendAttachPacket(socket_fd, packet.bytes, raw);
  if (result == PacketSendResult::kSent) return;
  if (result == PacketSendResult::kFailed || waker_ == nullptr) {
    // The peer is gone (or nobody could flush a queue): make the attach
    // server see a hang-up, which ends the attachment through Detach().
    ::shutdown(socket_fd, SHUT_RDWR);
    return;
  }
  Outbox& outbox = outboxes_[connection];
  outbox.fd = socket_fd;
  outbox.bytes = packet.bytes.size();
  outbox.fds = packet.fds.size();
  outbox.packets.push_back(std::move(packet));
  if (result == PacketSendResult::kWouldBlock) {
    WatchLocked(outbox, true);
  } else {
    outbox.retry_at = absl::Now() + kOutboundRetryDelay;
    ScheduleServiceLocked();
  }
}

void OutboundQueues::WatchLocked(Outbox& outbox, bool watch) {
  if (outbox.watching == watch) return;
  if (waker_ != nullptr) waker_->WatchWritable(outbox.fd, watch);
  outbox.watching = watch;
}

void OutboundQueues::OverflowLocked(Outbox& outbox) {
  metrics_->CountAttachSendOverflow();
  outbox.packets.clear();  // closes the queued fds
  outbox.bytes = 0;
  outbox.fds = 0;
  WatchLocked(outbox, false);
  outbox.retry_at = absl::InfiniteFuture();
  outbox.overflowed = true;
  ::shutdown(outbox.fd, SHUT_RDWR);
}

void OutboundQueues::FlushLocked(uint64_t connection) {
  auto it = outboxes_.find(connection);
  if (it == outboxes_.end()) return;
  Outbox& outbox = it->second;
  if (outbox.overflowed) return;
  std::vector<int> raw;
  while (!outbox.packets.empty()) {
    Packet& packet = outbox.packets.front();
    raw.clear();
    for (const auto& fd : packet.fds) raw.push_back(fd.get());
    switch (SendAttachPacket(outbox.fd, packet.bytes, raw)) {
      case PacketSendResult::kSent:
        outbox.bytes -= packet.bytes.size();
        outbox.fds -= packet.fds.size();
        outbox.packets.pop_front();
        continue;
      case PacketSendResult::kWouldBlock:
        outbox.retry_at = absl::InfiniteFuture();
        WatchLocked(outbox, true);
        return;
      case PacketSendResult::kRetryLater:
        // The socket may well be writable: EPOLLOUT would spin.
        WatchLocked(outbox, false);
        outbox.retry_at = absl::Now() + kOutboundRetryDelay;
        ScheduleServiceLocked();
        return;
      case PacketSendResult::kFailed:
        // The peer is gone; its hang-up reaches the attach server.
        WatchLocked(outbox, false);
        ::shutdown(outbox.fd, SHUT_RDWR);
        outboxes_.erase(it);
        return;
    }
  }
  WatchLocked(outbox, false);
  if (outbox.ended) ::shutdown(outbox.fd, SHUT_RDWR);
  outboxes_.erase(it);
}

void OutboundQueues::ScheduleServiceLocked() {
  if (waker_ == nullptr) return;
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, outbox] : outboxes_) {
    next = std::min({next, outbox.retry_at, outbox.end_deadline});
  }
  if (next != absl::InfiniteFuture()) waker_->WakeAt(next);
}

void OutboundQueues::Flush(uint64_t connection) {
  absl::MutexLock lock(&mu_);
  FlushLocked(connection);
}

void OutboundQueues::Service() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  std::vector<uint64_t> due;
  for (const auto& [id, outbox] : outboxes_) {
    if (outbox.retry_at <= now || outbox.end_deadline <= now) due.push_back(id);
  }
  for (uint64_t id : due) {
    auto it = outboxes_.find(id);
    if (it == outboxes_.end()) continue;
    Outbox& outbox = it->second;
    if (outbox.end_deadline <= now) {
      // An ended connection that did not read its last packets in time.
      WatchLocked(outbox, false);
      ::shutdown(outbox.fd, SHUT_RDWR);
      outboxes_.erase(it);
      continue;
    }
    outbox.retry_at = absl::InfiniteFuture();
    FlushLocked(id);
  }
  ScheduleServiceLocked();
}

bool OutboundQueues::HasPending() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, outbox] : outboxes_) {
    if (!outbox.packets.empty()) return true;
  }
  return false;
}

}  // namespace shmlane::control
