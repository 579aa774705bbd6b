// shmlane::client::Publisher and Subscriber: the two ends of a BROADCAST
// channel. The publisher writes each frame once into the channel's one ring;
// every subscriber reads it in place from a read-only mapping
// (dataplane/broadcast.h). The calls below are the data plane's own, with no
// system call while everyone is busy.
//
//   auto pub = shmlane::client::Publisher::Attach("camera");
//   pub->Write(frame, absl::Now() + absl::Milliseconds(10));
//
//   auto sub = shmlane::client::Subscriber::Attach("camera");
//   size_t n;
//   switch (sub->Read(buffer, &n, absl::Now() + absl::Seconds(1))) { ... }
//
// One publisher per channel (a second is refused with FailedPrecondition);
// subscribers may attach before it. The channel's slow-subscriber policy
// (block, drop-oldest, disconnect) decides what a subscriber that falls
// behind costs: under block the publisher waits for it (Write's deadline);
// under drop-oldest it is lapped and told how many frames it missed.
//
// The daemon tells the publisher of subscribers that come and go on its
// attach socket; the publisher reads it without blocking when the ring's
// slot generation changes (one shared-memory load per write), every
// kSocketCheckEvery writes, and whenever a write finds no room, so a new
// subscriber is linked at the next write after its message arrives. A subscriber that dies
// stops holding a blocked publisher at once (the daemon releases its slot).
// When the publisher goes, subscribers read what was committed, then see
// kClosed; attach again for the next publisher.
//
// Blocked calls (a BLOCK publisher on a full ring, a subscriber's Read or
// WaitReadable) spin or park as the channel's wait preference says
// (ChannelSpec.wait_preference, sent at attach), unless
// AttachOptions::wait_preference overrides it for this endpoint; the spin
// budget is AttachOptions::wait.spin (see clients/attach_options.h).
//
// Thread safety: one thread at a time per object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"
#include "dataplane/broadcast.h"

namespace shmlane::client {

using dataplane::BroadcastPeek;
using dataplane::BroadcastReadResult;
using dataplane::FrameInfo;
using dataplane::PublishMode;
using dataplane::ReaderStart;
using dataplane::ReleaseResult;
using dataplane::Reservation;
using dataplane::WriteResult;

namespace internal {
class AttachSocket;
struct ReceivedMessage;
}  // namespace internal

class Publisher {
 public:
  using Options = AttachOptions;
  static constexpr uint32_t kSocketCheckEvery = 64;

  // Attaches to the BROADCAST `channel` as its publisher. Errors:
  // Unavailable (no daemon), PermissionDenied (no PRODUCE grant), NotFound,
  // FailedPrecondition (it already has a publisher), InvalidArgument (not a
  // BROADCAST channel), ResourceExhausted (quota).
  static absl::StatusOr<Publisher> Attach(std::string_view channel, const Options& options = {});

  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;
  ~Publisher();

  // Never blocks; kFull when a BLOCK subscriber has no room for it.
  WriteResult TryWrite(std::span<const std::byte> frame);
  WriteResult TryWrite(std::string_view frame) { return TryWrite(std::as_bytes(std::span(frame))); }
  // Applies the policy: BLOCK waits for the slowest subscriber until
  // `deadline` (kTimeout); the others never wait.
  WriteResult Write(std::span<const std::byte> frame, absl::Time deadline = absl::InfiniteFuture());
  WriteResult Write(std::string_view frame, absl::Time deadline = absl::InfiniteFuture()) {
    return Write(std::as_bytes(std::span(frame)), deadline);
  }
  // Zero-copy: reserve, fill, Commit. One reservation open at a time.
  Reservation Reserve(size_t n);
  void Commit(size_t used, PublishMode mode = PublishMode::kNow);

  // Reads what the daemon sent (subscribers added or removed, Goodbye)
  // without blocking. Writes do it every kSocketCheckEvery calls.
  absl::Status Poll();
  // Subscribers linked now.
  size_t subscribers() const { return slots_.size(); }

  // Closes the ring (subscribers read what was committed, then see closed)
  // and detaches. Idempotent; the destructor calls it.
  void Close();

  absl::Status status() const;
  uint64_t attachment_id() const { return attachment_id_; }
  const std::string& channel() const { return channel_; }
  uint32_t max_frame_bytes() const;
  uint64_t frames_published() const;
  // How this publisher waits: the channel's preference or the override.
  const dataplane::WaitOptions& wait_options() const { return wait_; }

 private:
  Publisher() = default;
  void Handle(internal::ReceivedMessage& message);
  // Per write: one load of the ring's slots_generation (bumped by the
  // daemon on every slot activation or release; a rarely written line). On
  // a change, read the socket until the matching SubscriberAdded/Removed
  // came (at most kSocketCheckEvery tries); else every kSocketCheckEvery
  // writes. No system call per frame while nothing changes.
  void CheckDue() {
    const uint64_t g = __atomic_load_n(slots_generation_, __ATOMIC_ACQUIRE);
    if (g == seen_generation_ && ++writes_since_check_ < kSocketCheckEvery) return;
    writes_since_check_ = 0;
    const uint64_t before = subscriber_messages_;
    (void)Poll();
    if (subscriber_messages_ != before || ++generation_tries_ >= kSocketCheckEvery) {
      seen_generation_ = g;
      generation_tries_ = 0;
    }
  }

  std::string channel_;
  uint64_t attachment_id_ = 0;
  std::unique_ptr<internal::AttachSocket> socket_;
  std::optional<dataplane::BroadcastWriter> writer_;
  std::map<uint32_t, uint64_t> slots_;  // linked slot -> subscriber attachment
  absl::Status daemon_status_;          // why the daemon ended us, or a bad message
  uint32_t writes_since_check_ = 0;
  const uint64_t* slots_generation_ = nullptr;  // in the ring's supervisor block
  uint64_t seen_generation_ = 0;
  uint64_t subscriber_messages_ = 0;  // SubscriberAdded/Removed handled
  uint32_t generation_tries_ = 0;
  bool closed_here_ = false;
  dataplane::WaitOptions wait_;
};

class Subscriber {
 public:
  using Options = AttachOptions;

  // Attaches to the BROADCAST `channel` as a subscriber, starting at
  // `start` (the live tail, up to N frames of history still in the ring, or
  // the channel's history_frames). Errors as Publisher::Attach, with the
  // CONSUME grant, and ResourceExhausted at max_subscribers.
  static absl::StatusOr<Subscriber> Attach(std::string_view channel, ReaderStart start = {},
                                           const Options& options = {});

  Subscriber(Subscriber&&) noexcept;
  Subscriber& operator=(Subscriber&&) noexcept;
  ~Subscriber();

  // Copies the next frame; kEmpty when there is none now. `info` gets its
  // sequence number and the frames missed just before it.
  BroadcastReadResult TryRead(std::span<std::byte> out, size_t* length, FrameInfo* info = nullptr);
  // Waits for a frame until `deadline` (kTimeout).
  BroadcastReadResult Read(std::span<std::byte> out, size_t* length,
                           absl::Time deadline = absl::InfiniteFuture(), FrameInfo* info = nullptr);
  // Zero-copy: the next frame in place (read-only), valid until Release(),
  // which says whether the publisher overwrote it meanwhile (drop-oldest).
  BroadcastPeek Peek();
  ReleaseResult Release();
  BroadcastReadResult WaitReadable(absl::Time deadline);

  // Frames lapped (drop-oldest) or lost while held; frames read intact.
  uint64_t missed_frames() const;
  uint64_t frames_read() const;
  uint32_t slot() const;
  uint32_t max_frame_bytes() const;
  // How this subscriber waits: the channel's preference or the override.
  const dataplane::WaitOptions& wait_options() const { return wait_; }

  // Detaches: the daemon releases the slot (a BLOCK publisher stops waiting
  // for it). Idempotent; the destructor calls it.
  void Close();

  // OK; or why reads end (publisher gone, slot released, ring corrupt).
  absl::Status status() const;
  uint64_t attachment_id() const { return attachment_id_; }
  const std::string& channel() const { return channel_; }

 private:
  Subscriber() = default;
  // Reads a Goodbye, if one came, for status().
  void Note() const;

  std::string channel_;
  uint64_t attachment_id_ = 0;
  std::unique_ptr<internal::AttachSocket> socket_;
  std::optional<dataplane::BroadcastReader> reader_;
  mutable std::string goodbye_;
  bool closed_here_ = false;
  dataplane::WaitOptions wait_;
};

}  // namespace shmlane::client
