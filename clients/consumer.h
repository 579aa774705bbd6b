// shmlane::client::Consumer: the reading end of a STREAM channel. It reads
// every producer's lane (fan-in) and learns of producers that attach or go
// away by itself, from inside Read/Poll/Wait: the application only reads.
//
//   auto consumer = shmlane::client::Consumer::Attach("telemetry");
//   if (!consumer.ok()) return consumer.status();   // Unavailable, PermissionDenied, ...
//   for (;;) {
//     auto frame = consumer->Read(absl::Now() + absl::Seconds(1));
//     if (absl::IsDeadlineExceeded(frame.status())) continue;
//     if (!frame.ok()) break;                        // no producer left, daemon gone
//     Handle(frame->peer.name, frame->data);
//   }
//
// Zero-copy reading is Poll()/Wait()/Drain() with a callback, or Peek() and
// Release(): the bytes live in shared memory, valid only during the callback
// (until Release), and are untrusted input (a hostile producer may change
// them while you look). Read() copies.
//
// Durable channels (ChannelSpec.durable): when this consumer exits or dies,
// the producers' lanes stay open and the next consumer continues from the
// last *released* frame, so a frame is delivered at least once. Released
// means: a Poll/Wait/Drain callback returned; Release() after Peek(); for
// Read(), the next call on the Consumer (Read, Peek, Poll, Wait, Drain,
// Close) began. A frame delivered again after a restart has the same
// (peer.lane_id, position) as before: deduplicate on that pair.
//
// When the daemon goes away (crash, restart, Goodbye) the lanes already
// attached keep delivering until their producers close; Read() then returns
// Unavailable. After a crash or an --on-stop=keep stop (no Goodbye) the
// consumer hands its lanes back to the restarted daemon by itself, from
// inside Read/Poll/Wait (reconnecting with backoff), so that producers that
// die are reported again and new producers arrive. A producer's death is seen after every frame it
// committed has been delivered.
//
// Thread safety: a Consumer is used by one thread at a time, except
// Interrupt(), which any thread may call while the Consumer lives. Peer events are
// delivered on that thread, inside the call that noticed them; do not call
// back into the Consumer from the event callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"

namespace shmlane::client {

namespace internal {
class Inbox;
}  // namespace internal

// A copied frame and where it came from.
struct Frame {
  std::string data;
  Peer peer;
  // The frame's position in its lane (bytes written to the lane before it):
  // grows with every frame, and (peer.lane_id, position) names one frame
  // across consumer restarts of a durable channel.
  uint64_t position = 0;
};

// A frame returned by Peek(), not yet released: `data` points into shared
// memory (or into the Consumer's copy of a frame Read() fetched ahead) and
// `peer` into the Consumer; both are valid until Release() or the next call
// on the Consumer other than Peek().
struct FrameView {
  const Peer* peer = nullptr;
  std::span<const std::byte> data;
  uint64_t position = 0;
};

class Consumer {
 public:
  struct Options : AttachOptions {
    // Called when a producer attaches or goes (see PeerEvent).
    PeerEventFn on_peer_event;
  };

  // Attaches to `channel` as its consumer. Errors: Unavailable (no daemon),
  // PermissionDenied (no consume grant), NotFound (no such channel),
  // FailedPrecondition (wrong pattern, a consumer already attached), ...
  static absl::StatusOr<Consumer> Attach(std::string_view channel, Options options);
  static absl::StatusOr<Consumer> Attach(std::string_view channel) {
    return Attach(channel, Options());
  }

  Consumer(Consumer&&) noexcept;
  Consumer& operator=(Consumer&&) noexcept;
  ~Consumer();

  // The next frame from any producer, copied. DeadlineExceeded on timeout,
  // Cancelled after Interrupt(), Unavailable when no producer is left and
  // none can come (the daemon is gone or said goodbye).
  absl::StatusOr<Frame> Read(absl::Time deadline = absl::InfiniteFuture());
  // As above into `*frame`, reusing its buffer's capacity.
  absl::Status Read(Frame* frame, absl::Time deadline = absl::InfiniteFuture());

  // The next frame from any producer without consuming it: Peek() again
  // returns the same frame until Release(). DeadlineExceeded, Cancelled and
  // Unavailable as for Read. Zero-copy.
  absl::StatusOr<FrameView> Peek(absl::Time deadline = absl::InfiniteFuture());
  // Consumes the frame of the last Peek() (on a durable channel: the next
  // consumer will not see it again). No-op if none is peeked.
  void Release();
  // The lane position of the frame being delivered, inside a Poll/Wait/
  // Drain callback; elsewhere that of the frame the last Read or Peek
  // returned (see Frame::position).
  uint64_t position() const;
  // The channel is durable (its lanes outlive this consumer).
  bool durable() const;

  // Zero-copy callback: `data` points into shared memory, valid during the call.
  using FrameFn = absl::FunctionRef<void(const Peer& peer, std::span<const std::byte> data)>;

  // One fair pass over all lanes without blocking; returns frames delivered.
  size_t Poll(FrameFn fn);
  // Polls; when nothing is there, spins, then sleeps until a frame, a new
  // producer, or `deadline`. Returns frames delivered (0 at the deadline);
  // Cancelled and Unavailable as for Read.
  absl::StatusOr<size_t> Wait(FrameFn fn, absl::Time deadline = absl::InfiniteFuture());
  // Polls until every lane is empty or at least `max_frames` were delivered
  // (a pass takes up to 64 frames per lane). Never blocks.
  size_t Drain(FrameFn fn, size_t max_frames = SIZE_MAX);

  // Producers currently attached.
  std::vector<Peer> peers() const;
  uint64_t attachment_id() const;
  const std::string& channel() const;
  // OK while attached to the daemon; Unavailable (why) once it is gone, OK
  // again once the lanes were handed to a restarted daemon (Resume).
  absl::Status attach_status() const;
  // How often the lanes were handed to a restarted daemon.
  uint64_t resumes() const;

  // Makes the blocked (or the next) Read/Wait return Cancelled, once. The
  // only call that may come from another thread (e.g. a signal watcher).
  void Interrupt();

  // Detaches: producers blocked on this consumer return kClosed. Idempotent;
  // the destructor calls it.
  void Close();

 private:
  // Peer events that a Read() pass noticed after it had copied frames ahead:
  // each waits until the frames copied before it were returned, so that a
  // producer's death is seen after every frame it committed (shared with the
  // Inbox's event callback, which outlives moves of the Consumer).
  struct EventGate {
    PeerEventFn user;
    bool copying = false;                                // inside Read()'s pass
    size_t copied = 0;                                   // frames that pass copied so far
    size_t returned = 0;                                 // of those, returned by Read()/Poll()
    std::vector<std::pair<size_t, PeerEvent>> deferred;  // (frames before it, event)
  };
  Consumer(std::unique_ptr<internal::Inbox> inbox, std::shared_ptr<EventGate> gate);
  bool PopPending(Frame* frame);
  // Delivers the deferred events whose preceding frames were all returned.
  void DeliverDueEvents();
  // Releases the frame a durable Read() returned (it is done with once the
  // application calls again).
  void ReleaseRead() {
    if (release_on_next_call_) {
      release_on_next_call_ = false;
      Release();
    }
  }
  // Delivers (and releases) a frame the application peeked but did not
  // release, before a pass could deliver it again; 1 if there was one.
  size_t FlushPeeked(FrameFn fn);

  std::unique_ptr<internal::Inbox> inbox_;
  std::shared_ptr<EventGate> gate_;
  // Frames copied by Read() ahead of the caller (one fair pass takes up to
  // 64 frames per lane); slots are reused so that a steady stream does not
  // allocate.
  std::vector<Frame> pending_;
  size_t pending_head_ = 0;
  size_t pending_count_ = 0;
  // Peek: the frame held (kept in its lane, or pending_'s head slot).
  bool peeked_ = false;
  bool peeked_from_pending_ = false;
  bool release_on_next_call_ = false;  // durable Read(): peeked_ until the next call
  FrameView peeked_view_;
  uint64_t last_position_ = 0;
};

}  // namespace shmlane::client
