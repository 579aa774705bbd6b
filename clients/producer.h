// shmlane::client::Producer: the writing end of a STREAM channel. Attaching
// hands this process one lane into the channel's consumer; the calls below
// are the data plane's own (dataplane/lane.h), with no system call while the
// pipeline is busy.
//
//   auto producer = shmlane::client::Producer::Attach("telemetry");
//   if (!producer.ok()) return producer.status();
//   switch (producer->Write(bytes, absl::Now() + absl::Milliseconds(10))) {
//     case WriteResult::kOk: break;
//     case WriteResult::kClosed: return producer->status();   // consumer gone
//     ...
//   }
//
// The lane's backpressure policy (block, fail fast, drop) is the channel's,
// chosen by whoever created it. The lane exists from the moment Attach
// returns, whether or not a consumer is attached yet: frames wait in the ring
// for it. When the consumer detaches or dies, the daemon closes the lane: a
// blocked Write returns kClosed within milliseconds, and any write returns it
// within kClosedCheckEvery (64) calls even while the ring has room; status()
// then says why. Reattach() (one call) to write to the next consumer. A daemon that
// stops with --on-stop=close (the default) or deletes the channel closes the
// lane the same way, with or without a consumer.
//
// The daemon is not on the data path: if it dies, or stops with
// --on-stop=keep, the lane keeps flowing, and the producer hands its lane
// back to the restarted daemon by itself (Resume), from inside its normal
// calls: each call reads the coarse monotonic clock (vDSO, no system call)
// and at most every internal::kDaemonCheckIntervalNs (50 ms) looks at its attach socket
// without blocking; once that hung up it reconnects with backoff (5 ms
// doubling to 1 s). A blocking Write waits in slices of at most that
// interval so that a producer parked on a full ring resumes too. A producer
// that makes no call at all for longer than the daemon's --resume-grace
// loses its lane (it then reads closed). If the restarted daemon refuses the
// resume (it does not know the lane), the lane is closed here and status()
// says to attach again.
//
// Thread safety: one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"
#include "dataplane/lane.h"

namespace shmlane::client {

using dataplane::PublishMode;
using dataplane::Reservation;
using dataplane::WriteResult;

namespace internal {
class AttachSocket;
class DaemonWatch;
}  // namespace internal

// A status for a write outcome that is not kOk: kClosed is Unavailable,
// kFull/kDropped ResourceExhausted, kTooLarge InvalidArgument, kTimeout
// DeadlineExceeded, kBroken DataLoss.
absl::Status ToStatus(WriteResult result, std::string_view context = {});

class Producer {
 public:
  using Options = AttachOptions;

  // Attaches to `channel` as a producer. Errors: Unavailable (no daemon),
  // PermissionDenied (no produce grant), NotFound, ResourceExhausted (quota).
  static absl::StatusOr<Producer> Attach(std::string_view channel, const Options& options = {});

  Producer(Producer&&) noexcept;
  Producer& operator=(Producer&&) noexcept;
  ~Producer();

  // dataplane::Producer::TryWrite: copies and publishes one frame, never blocks.
  WriteResult TryWrite(std::span<const std::byte> frame);
  WriteResult TryWrite(std::string_view frame) { return TryWrite(std::as_bytes(std::span(frame))); }
  // dataplane::Producer::Write: applies the lane's backpressure policy.
  WriteResult Write(std::span<const std::byte> frame, absl::Time deadline = absl::InfiniteFuture());
  WriteResult Write(std::string_view frame, absl::Time deadline = absl::InfiniteFuture()) {
    return Write(std::as_bytes(std::span(frame)), deadline);
  }
  // Writes as many leading frames as fit with one publication.
  size_t TryWriteBatch(std::span<const std::span<const std::byte>> frames, WriteResult* result);
  // Zero-copy: reserve, fill, Commit. One reservation open at a time. The
  // daemon hang-up check runs at a Reserve outside a batch (no deferred
  // commit waiting for Publish), so a batch pays for it once.
  Reservation Reserve(size_t n);
  void Commit(size_t used, PublishMode mode = PublishMode::kNow);
  void Publish();

  // Closes the lane cleanly (the consumer reads what was committed, then sees
  // this producer go) and detaches. Idempotent; the destructor calls it.
  void Close();

  // After kClosed (the consumer of a non-durable channel went away): closes
  // this lane and attaches again with the same channel and options, in one
  // call; frames then wait in the new lane for the next consumer. Retries
  // while the daemon is unavailable (5 ms doubling to 1 s) until `deadline`;
  // other errors (PermissionDenied, NotFound, ...) return at once, and leave
  // this producer closed. On a durable channel the lane never closes for a
  // consumer's sake, so this is not needed there.
  absl::Status Reattach(absl::Time deadline = absl::InfiniteFuture());
  // How often Reattach() succeeded.
  uint64_t reattaches() const { return reattaches_; }

  // OK; or why writes fail (consumer gone, lane corrupt, closed here).
  absl::Status status() const;
  // True once the consumer or the daemon closed the lane.
  bool PeerClosed() const;
  // The consumer on the other end (lane id, attachment, name).
  const Peer& peer() const { return peer_; }
  uint64_t attachment_id() const { return attachment_id_; }
  // How often this producer handed its lane to a restarted daemon.
  uint64_t resumes() const { return resumes_; }
  // True while the attach connection is up (not waiting to resume).
  bool daemon_connected() const;
  const std::string& channel() const { return channel_; }
  uint32_t max_frame_bytes() const;

 private:
  Producer() = default;
  // On kClosed: reads what the daemon said (LaneRemoved, Goodbye) without
  // blocking, so that status() can tell why.
  void Note();
  // The data plane notices a closed lane only when the ring is full; a
  // producer whose consumer is gone should not need to fill the ring to
  // learn it. Every kClosedCheckEvery writes, look at the close flags (two
  // loads of rarely written lines, no system call).
  bool ClosedCheckDue() {
    if (++writes_since_check_ < kClosedCheckEvery) return false;
    writes_since_check_ = 0;
    if (!lane_->PeerClosed()) return false;
    Note();
    return true;
  }
  static constexpr uint32_t kClosedCheckEvery = 64;
  // Looks at the attach socket when kDaemonCheckIntervalNs passed: one coarse
  // clock read (vDSO) per call otherwise.
  void MaybeCheckDaemon();
  // Out of line: the socket check (internal::DaemonWatch, shared with
  // Client) and, once the daemon hung up, the resume.
  void CheckDaemon(int64_t now_ns);
  void TryResume(int64_t now_ns);

  std::string channel_;
  uint64_t attachment_id_ = 0;
  AttachOptions options_;
  std::unique_ptr<internal::AttachSocket> socket_;
  std::shared_ptr<const dataplane::Doorbell> own_bell_;
  std::optional<dataplane::Producer> lane_;
  Peer peer_;
  std::string closed_reason_;     // from the daemon, when it said
  bool ended_by_daemon_ = false;  // a Goodbye came: shutdown, channel deleted, consumer gone
  bool closed_here_ = false;
  uint32_t writes_since_check_ = 0;
  // Resume.
  std::string client_name_;
  std::string attach_credential_;
  std::string lane_credential_;
  std::shared_ptr<const dataplane::Doorbell> peer_bell_;
  // When CheckDaemon is next due (every internal::kDaemonCheckIntervalNs).
  int64_t next_daemon_check_ns_ = 0;
  // The hang-up check and resume backoff (clients/internal/attachment.h);
  // null only when moved-from.
  std::unique_ptr<internal::DaemonWatch> daemon_;
  uint64_t resumes_ = 0;
  uint64_t reattaches_ = 0;
};

}  // namespace shmlane::client
