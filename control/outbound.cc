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
    total_fds_ = 0;
  }
  waker_ = waker;
}

void OutboundQueues::Send(uint64_t connection, int socket_fd,
                          const shmlane::v1::AttachMessage& message,
                          std::vector<dataplane::UniqueFd> fds, OutboundHolds holds) {
  absl::MutexLock lock(&mu_);
  SendLocked(connection, socket_fd, message, std::move(fds), std::move(holds));
}

void OutboundQueues::SendLast(uint64_t connection, int socket_fd,
                              const shmlane::v1::AttachMessage& message) {
  absl::MutexLock lock(&mu_);
  SendLocked(connection, socket_fd, message, {}, {});
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
  total_fds_ -= std::min(total_fds_, it->second.fds);
  outboxes_.erase(it);
  return overflowed;
}

void OutboundQueues::SendLocked(uint64_t connection, int socket_fd,
                                const shmlane::v1::AttachMessage& message,
                                std::vector<dataplane::UniqueFd> fds, OutboundHolds holds) {
  Packet packet;
  packet.fds = std::move(fds);
  packet.holds = std::move(holds);
  packet.queued_at = absl::Now();
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
    total_fds_ += packet.fds.size();
    const absl::Time now = packet.queued_at;
    outbox.packets.push_back(std::move(packet));
    if (outbox.packets.size() > kMaxOutboundMessages || outbox.bytes > kMaxOutboundBytes ||
        outbox.fds > kMaxOutboundFds) {
      OverflowLocked(outbox);
    }
    EnforceLimitsLocked(now);
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
  total_fds_ += packet.fds.size();
  const absl::Time now = packet.queued_at;
  outbox.packets.push_back(std::move(packet));
  if (result == PacketSendResult::kWouldBlock) {
    WatchLocked(outbox, true);
  } else {
    outbox.retry_at = now + kOutboundRetryDelay;
  }
  EnforceLimitsLocked(now);
  ScheduleServiceLocked();  // the age limit is a deadline too
}

void OutboundQueues::EnforceLimitsLocked(absl::Time now) {
  for (auto& [id, outbox] : outboxes_) {
    if (!outbox.overflowed && !outbox.packets.empty() &&
        now - outbox.packets.front().queued_at > limits_.max_age) {
      OverflowLocked(outbox);
    }
  }
  while (total_fds_ > limits_.max_total_fds) {
    Outbox* worst = nullptr;
    for (auto& [id, outbox] : outboxes_) {
      if (!outbox.overflowed && (worst == nullptr || outbox.fds > worst->fds)) worst = &outbox;
    }
    if (worst == nullptr || worst->fds == 0) break;
    OverflowLocked(*worst);
  }
}

void OutboundQueues::WatchLocked(Outbox& outbox, bool watch) {
  if (outbox.watching == watch) return;
  if (waker_ != nullptr) waker_->WatchWritable(outbox.fd, watch);
  outbox.watching = watch;
}

void OutboundQueues::OverflowLocked(Outbox& outbox) {
  metrics_->CountAttachSendOverflow();
  total_fds_ -= std::min(total_fds_, outbox.fds);
  outbox.packets.clear();  // closes the queued fds, releases what they held
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
        total_fds_ -= std::min(total_fds_, packet.fds.size());
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
        total_fds_ -= std::min(total_fds_, outbox.fds);
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
    if (!outbox.overflowed && !outbox.packets.empty()) {
      next = std::min(next,
                      outbox.packets.front().queued_at + limits_.max_age + absl::Milliseconds(1));
    }
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
      total_fds_ -= std::min(total_fds_, outbox.fds);
      outboxes_.erase(it);
      continue;
    }
    outbox.retry_at = absl::InfiniteFuture();
    FlushLocked(id);
  }
  EnforceLimitsLocked(now);
  ScheduleServiceLocked();
}

size_t OutboundQueues::queued_fds() const {
  absl::MutexLock lock(&mu_);
  return total_fds_;
}

bool OutboundQueues::HasPending() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, outbox] : outboxes_) {
    if (!outbox.packets.empty()) return true;
  }
  return false;
}

}  // namespace shmlane::control
