// OutboundQueues: the attach-protocol packets the daemon could not send yet,
// one FIFO per attach connection. The daemon sends AttachReply, LaneAdded,
// LaneRemoved and Goodbye on sockets it never blocks on: when the kernel has
// no room (the peer reads its socket only now and then, or too many fds are
// in flight) the packet and its own duplicates of the fds wait here, and the
// attach loop flushes them when the socket turns writable (OutboundWaker).
// Only a queue beyond the kMaxOutbound* bounds disconnects its peer, counted
// as shmlane_attach_send_overflows_total.
//
// The attach server owns every connection fd and closes it only after
// Remove(); to end a connection this class shuts the socket down, which the
// attach server sees as a hang-up.
//
// Thread safety: every method may be called from any thread. mu_ guards all
// queues. Lock order: Registry::mu_ (held by callers of Send/SendLast/Remove)
// before OutboundQueues::mu_ before the waker's own state; the waker is
// called with mu_ held and must not call back into this class.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "control/daemon_metrics.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/attach.pb.h"

namespace shmlane::control {

// Per-connection bounds: a peer that lets more than this pile up unread is
// disconnected. Generous on purpose: a consumer of a 4096-producer channel
// that sleeps through a full churn of its producers queues 2 × 4096 packets
// and 8192 fds (16384 for a REQUEST_REPLY server), while each queued fd is a
// daemon fd.
inline constexpr size_t kMaxOutboundMessages = 16384;
inline constexpr size_t kMaxOutboundBytes = size_t{64} << 20;  // serialized
inline constexpr size_t kMaxOutboundFds = 32768;
// Pause before retrying a send the kernel refused with ENOBUFS or
// ETOOMANYREFS (no poll event announces the end of either).
inline constexpr absl::Duration kOutboundRetryDelay = absl::Milliseconds(10);
// How long a connection the daemon ended (Goodbye) may take to read what is
// still queued for it before its socket is shut down anyway.
inline constexpr absl::Duration kEndedFlushTimeout = absl::Seconds(2);

// What a queued packet keeps alive besides its fds (the ShmCharge of each
// lane memfd it carries, so that the memory stays on its owner's quota
// while the daemon holds a copy of the fd).
using OutboundHolds = std::vector<std::shared_ptr<const void>>;

// Daemon-wide bounds, set from the configuration (--max-queued-fds,
// --max-queue-age).
struct OutboundLimits {
  size_t max_total_fds = 65536;
  absl::Duration max_age = absl::Seconds(30);
};

// How the queues ask the attach loop to flush them later. The attach server
// implements it; methods are called with OutboundQueues::mu_ held, from any
// thread, and must not call back into OutboundQueues or the Registry.
class OutboundWaker {
 public:
  virtual ~OutboundWaker() = default;
  // Starts (true) or stops (false) calling Flush for the connection on
  // `socket_fd` whenever the socket is writable.
  virtual void WatchWritable(int socket_fd, bool watch) = 0;
  // Asks for a Service() call no later than `when`.
  virtual void WakeAt(absl::Time when) = 0;
};

class OutboundQueues {
 public:
  explicit OutboundQueues(DaemonMetrics* metrics, OutboundLimits limits = {})
      : metrics_(metrics), limits_(limits) {}
  OutboundQueues(const OutboundQueues&) = delete;
  OutboundQueues& operator=(const OutboundQueues&) = delete;

  // Installs (or, with nullptr, removes) the loop that flushes queues.
  // Without one, a packet that cannot be sent at once disconnects the peer;
  // removing it drops every queue and shuts those sockets down.
  void SetWaker(OutboundWaker* waker) ABSL_LOCKS_EXCLUDED(mu_);

  // Sends now, or queues behind what is already queued for `connection`
  // (order is per connection). Takes the fds and what they keep alive.
  // Beyond the daemon-wide fd bound the connection holding the most queued
  // fds is disconnected; so is one whose oldest packet waits too long.
  void Send(uint64_t connection, int socket_fd, const shmlane::v1::AttachMessage& message,
            std::vector<dataplane::UniqueFd> fds, OutboundHolds holds = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  // Sends `message` (a Goodbye) as the connection's last packet and shuts
  // the socket down once everything queued is through, or after
  // kEndedFlushTimeout, so that a peer that never reads cannot pin the fd.
  void SendLast(uint64_t connection, int socket_fd, const shmlane::v1::AttachMessage& message)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets the connection's queue (its fd is about to close). Returns true
  // if the queue had overflowed, i.e. our own shutdown caused the hang-up.
  bool Remove(uint64_t connection) ABSL_LOCKS_EXCLUDED(mu_);

  // The socket of `connection` is writable: sends what is queued.
  void Flush(uint64_t connection) ABSL_LOCKS_EXCLUDED(mu_);
  // Retries sends refused with ENOBUFS/ETOOMANYREFS and shuts down ended
  // connections whose flush timed out; asks the waker for the next call.
  void Service() ABSL_LOCKS_EXCLUDED(mu_);
  // True while some queue holds packets.
  bool HasPending() const ABSL_LOCKS_EXCLUDED(mu_);
  // Fds waiting in all queues together.
  size_t queued_fds() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A packet the kernel could not take yet: serialized, with its own
  // duplicates of the fds, so a lane retired meanwhile does not matter.
  struct Packet {
    std::string bytes;
    std::vector<dataplane::UniqueFd> fds;
    OutboundHolds holds;
    absl::Time queued_at;
  };
  // The packets waiting for one connection, in send order. Exists only
  // while non-empty, or to mark a peer that overflowed (until Remove).
  struct Outbox {
    int fd = -1;
    std::deque<Packet> packets;
    size_t bytes = 0;
    size_t fds = 0;
    bool watching = false;                         // EPOLLOUT armed through the waker
    absl::Time retry_at = absl::InfiniteFuture();  // ENOBUFS/ETOOMANYREFS
    // Set when the daemon ended the connection (Goodbye queued): shut the
    // socket down once flushed, or at this deadline.
    absl::Time end_deadline = absl::InfiniteFuture();
    bool ended = false;
    bool overflowed = false;  // dropped; further sends are discarded
  };

  void SendLocked(uint64_t connection, int socket_fd, const shmlane::v1::AttachMessage& message,
                  std::vector<dataplane::UniqueFd> fds, OutboundHolds holds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Enforces max_total_fds and max_age by disconnecting the worst queues.
  void EnforceLimitsLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends queued packets until the kernel refuses; erases the outbox once
  // empty (shutting an ended connection's socket down).
  void FlushLocked(uint64_t connection) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WatchLocked(Outbox& outbox, bool watch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the queue of a peer that let it grow beyond the bounds and shuts
  // its socket down; Remove then reports the overflow.
  void OverflowLocked(Outbox& outbox) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the waker when Service is next due.
  void ScheduleServiceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  DaemonMetrics* const metrics_;
  const OutboundLimits limits_;
  mutable absl::Mutex mu_;
  size_t total_fds_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Outbox> outboxes_ ABSL_GUARDED_BY(mu_);
  OutboundWaker* waker_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace shmlane::control
