// Inbox: the reading half shared by Consumer (STREAM) and Server
// (REQUEST_REPLY): a LaneSet of READ lanes on the attachment's doorbell, the
// attach socket that announces new and departed peers, and a wait loop that
// parks on both (LaneSet::Wait / Doorbell::Wait with also_fd = an epoll set
// of the socket and an interrupt eventfd), so a LaneAdded wakes a reader that
// sleeps with no frame in sight.
//
// Control messages are handled from inside the reader's own calls, so the
// application never has to: at every park, and every kControlCheckEvery
// polls while busy. When the daemon dies (hang-up) the lanes already
// attached keep flowing; only new peers stop coming until a consumer hands
// its lanes back to the restarted daemon (Resume): from inside Poll/Wait,
// with backoff (5 ms doubling to 1 s), a parked reader waking for each
// attempt (a server hands its reply lanes back too, through its hooks). (A
// consumer or server whose last lane ended
// while no daemon ran reports Unavailable as before.) When it says Goodbye
// (shutdown, channel deleted) the lanes end once what they hold is read.
//
// Thread safety: one thread at a time, except Interrupt().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"
#include "clients/internal/attachment.h"
#include "dataplane/lane_set.h"

namespace shmlane::client::internal {

inline constexpr uint32_t kControlCheckEvery = 64;

class Inbox {
 public:
  using FrameFn = absl::FunctionRef<void(const Peer&, std::span<const std::byte>)>;
  // Server hooks for the WRITE (reply) lanes that arrive with a client.
  struct WriteLaneHooks {
    std::function<absl::Status(LaneEnd lane)> add;
    std::function<void(uint64_t lane_id)> remove;
    // Resume: appends the WRITE lanes to hand back with the READ lanes.
    std::function<void(std::vector<ResumeLane>* lanes)> resume_lanes;
  };

  // Takes the handshake's READ lanes; WRITE lanes go to hooks.add.
  static absl::StatusOr<std::unique_ptr<Inbox>> Create(Handshake handshake, v1::Role role,
                                                       const AttachOptions& options,
                                                       PeerEventFn on_event,
                                                       WriteLaneHooks hooks = {});

  // One fair non-blocking pass over every lane.
  size_t Poll(FrameFn fn);
  // Poll; if nothing, spin, then park on doorbell and socket until a frame
  // comes or `deadline`. Returns frames delivered (0 on timeout), or
  // Unavailable when no lane is left and no peer can come any more.
  absl::StatusOr<size_t> Wait(FrameFn fn, absl::Time deadline);

  // Makes the current (or next) Wait return Cancelled once. Any thread.
  void Interrupt();

  // Reads and applies every queued control message without blocking.
  void CheckControl();

  // Sends Detach, closes every lane and the socket. On a durable channel
  // the lanes are left open instead (LaneSet::LeaveAll) for the next reader.
  void Close();

  // Peek-style delivery for durable reading (LaneSet::Keep and friends):
  // from inside a FrameFn, keep the frame (it stays unconsumed and the call
  // returns after it); ReleaseKept() consumes it.
  void Keep() { set_.Keep(); }
  bool ReleaseKept() { return set_.ReleaseKept(); }
  // Inside a FrameFn: the lane position of the frame being delivered.
  uint64_t delivering_position() const { return set_.delivering_position(); }
  bool delivering() const { return set_.delivering(); }
  // The channel is durable (AttachReply.durable).
  bool durable() const { return durable_; }

  std::vector<Peer> peers() const;
  size_t lane_count() const { return lanes_.size(); }
  uint64_t attachment_id() const { return attachment_id_; }
  const std::string& channel() const { return channel_; }
  const std::shared_ptr<const dataplane::Doorbell>& own_bell() const { return own_bell_; }
  // OK while attached; Unavailable (why) once the daemon is gone or said
  // goodbye; the lanes may still be delivering.
  const absl::Status& attach_status() const { return attach_status_; }
  // True when no lane is left and none can come.
  bool finished() const { return lanes_.empty() && !socket_.is_open(); }
  // How often the lanes were handed to a restarted daemon.
  uint64_t resumes() const { return resumes_; }
  absl::Status FinishedStatus() const;

 private:
  struct LaneInfo {
    Peer peer;
    // What a resume hands back: the credential, the segment fd (owned by
    // the lane's dataplane::Consumer in set_, which lives exactly as long as
    // this entry) and both bells.
    std::string credential;
    int segment_fd = -1;
    std::shared_ptr<const dataplane::Doorbell> own_bell;
    std::shared_ptr<const dataplane::Doorbell> peer_bell;
  };
  Inbox(Handshake handshake, v1::Role role, const AttachOptions& options, PeerEventFn on_event,
        WriteLaneHooks hooks);
  absl::Status AddLanes(std::vector<LaneEnd> lanes);
  void MarkRemoved(uint64_t lane_id, const std::string& reason);
  void RemoveLane(uint64_t lane_id, absl::Status why);
  size_t Pass(FrameFn fn);
  // The LaneSet callbacks, shared by Pass and the parking wait.
  void OnFrame(FrameFn fn, uint64_t lane_id, std::span<const std::byte> frame);
  void OnEnd(uint64_t lane_id, dataplane::ReadResult why, const absl::Status& status);
  void Emit(PeerEvent::Kind kind, const Peer& peer, absl::Status status);
  void Hangup(absl::Status why);
  // Resume: attempts to hand every lane to a restarted daemon when due.
  void MaybeResume();
  void TryResume(int64_t now_ns);
  // `deadline`, or earlier when a resume attempt is due before it.
  absl::Time ParkDeadline(absl::Time deadline) const;
  absl::Status SetUpWakeFd();

  // epoll set {attach socket, interrupt eventfd}: one fd the parked reader
  // passes to LaneSet::Wait as also_fd, readable when either has news.
  dataplane::UniqueFd wake_fd_;
  dataplane::UniqueFd interrupt_fd_;
  std::atomic<bool> interrupted_{false};

  v1::Role role_;
  bool durable_ = false;
  // Wait looks at the attach socket only when it may hold news: at first,
  // and after a park that the wake fd (socket, interrupt) or the deadline
  // ended. Saves a recvmsg per idle period; Poll still looks every
  // kControlCheckEvery passes.
  bool control_maybe_ = true;
  AttachOptions options_;
  std::string channel_;
  uint64_t attachment_id_;
  AttachSocket socket_;
  std::shared_ptr<const dataplane::Doorbell> own_bell_;
  dataplane::LaneSet set_;
  // Cache of the last lane's peer for OnFrame (node_hash_map: stable).
  const Peer* last_peer_ = nullptr;
  uint64_t last_lane_id_ = 0;
  absl::node_hash_map<uint64_t, LaneInfo> lanes_;
  // Lanes the daemon removed: dropped once a pass that began after the
  // removal was known finds every lane empty (so committed frames are read).
  std::vector<std::pair<uint64_t, std::string>> removals_new_;
  std::vector<std::pair<uint64_t, std::string>> removals_armed_;
  PeerEventFn on_event_;
  WriteLaneHooks hooks_;
  absl::Status attach_status_;
  uint32_t polls_since_check_ = 0;
  // Resume.
  std::string client_name_;
  std::string credential_;
  bool resume_pending_ = false;
  ResumeBackoff resume_backoff_;  // 5 ms doubling to 1 s (attachment.h)
  uint64_t resumes_ = 0;
};

}  // namespace shmlane::client::internal
