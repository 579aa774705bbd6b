// The attach handshake and the turning of LaneDescriptions plus received fds
// into mapped lane segments and doorbells. Shared by every role.
//
// Everything in a message is checked against what came with it: an fd index
// that is out of range, a direction the role cannot have, a duplicate lane id
// is a DataLoss error; fds no description refers to are closed.
//
// Thread safety: free functions on values; no shared state.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "clients/attach_options.h"
#include "clients/internal/attach_socket.h"
#include "dataplane/doorbell.h"
#include "dataplane/segment.h"

namespace shmlane::client::internal {

// One lane handed to this process, mapped and ready for Producer/Consumer.
struct LaneEnd {
  v1::LaneDirection direction = v1::LANE_DIRECTION_UNSPECIFIED;
  Peer peer;
  dataplane::Segment segment;
  std::shared_ptr<const dataplane::Doorbell> peer_bell;
  // This side's doorbell for the lane when the daemon gave it one of its own
  // (consumer and server sides); null: park on the attachment's doorbell.
  std::shared_ptr<const dataplane::Doorbell> own_bell;
  uint64_t ring_bytes = 0;
  uint32_t max_frame_bytes = 0;
  std::string resume_credential;  // LaneDescription.resume_credential
};

// Maps every lane in `lanes`, taking the fds it refers to from `fds`.
absl::StatusOr<std::vector<LaneEnd>> TakeLanes(
    const google::protobuf::RepeatedPtrField<v1::LaneDescription>& lanes,
    const std::vector<dataplane::UniqueFd>& fds);

struct Handshake {
  AttachSocket socket;
  std::string channel;
  uint64_t attachment_id = 0;
  std::shared_ptr<const dataplane::Doorbell> own_bell;
  std::vector<LaneEnd> lanes;
  uint32_t max_frame_bytes = 0;
  uint64_t ring_bytes = 0;
  int wait_preference = 0;        // AttachReply.wait_preference (see ResolveWait)
  std::string client_name;        // as sent in the AttachRequest
  std::string resume_credential;  // AttachReply.resume_credential
  bool durable = false;           // AttachReply.durable
  // BROADCAST roles only: the AttachReply and its packet's fds, which
  // clients/broadcast.cc maps (clients/internal/broadcast_end.h); what it
  // does not take closes with the Handshake. Empty for the other roles.
  v1::AttachReply reply;
  std::vector<dataplane::UniqueFd> reply_fds;
};

// Connects, sends the AttachRequest and waits for the AttachReply, then for
// the LaneAdded packets carrying its `lanes_following` lanes, so that the
// returned lanes are every peer attached at that moment. All of it must
// arrive within options.attach_timeout. A non-zero reply code becomes the
// matching absl status carrying the daemon's message.
absl::StatusOr<Handshake> Attach(std::string_view channel, v1::Role role,
                                 const AttachOptions& options);

// ---- Resume: handing an attachment over to a restarted daemon ----

// One lane to hand back: its id, credential and (borrowed) fds.
struct ResumeLane {
  uint64_t lane_id = 0;
  std::string credential;
  int segment_fd = -1;
  int producer_bell_fd = -1;  // the bell the lane's producer parks on
  int consumer_bell_fd = -1;  // the bell the lane's consumer parks on
};

struct ResumeRequest {
  std::string channel;
  v1::Role role = v1::ROLE_UNSPECIFIED;
  uint64_t attachment_id = 0;
  std::string credential;
  std::string client_name;
  std::vector<ResumeLane> lanes;
};

struct ResumeResult {
  AttachSocket socket;  // the new attach connection
  // The daemon's verdict per lane handed back (OK: re-adopted).
  std::vector<std::pair<uint64_t, absl::Status>> lanes;
};

// Connects to the daemon at options.runtime_dir and hands `request` back
// (attach.proto, Resume), all within `timeout`. On error, `*refused` says
// whether the daemon answered and refused (final: retrying cannot help) or
// there was no daemon to ask yet (retry later).
absl::StatusOr<ResumeResult> Resume(const ResumeRequest& request, const AttachOptions& options,
                                    absl::Duration timeout, bool* refused);

// CLOCK_MONOTONIC_COARSE in nanoseconds: read from the vDSO, no system call,
// a few nanoseconds; its resolution (1-4 ms) is plenty for "has 50 ms passed".
inline int64_t CoarseNowNs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Backoff between resume attempts: 5 ms, doubling to at most 1 s.
class ResumeBackoff {
 public:
  void Start(int64_t now_ns) {
    delay_ns_ = kFirstNs;
    next_ns_ = now_ns;
  }
  bool Due(int64_t now_ns) const { return now_ns >= next_ns_; }
  void Failed(int64_t now_ns) {
    next_ns_ = now_ns + delay_ns_;
    delay_ns_ = std::min<int64_t>(delay_ns_ * 2, kMaxNs);
  }
  int64_t next_ns() const { return next_ns_; }

 private:
  static constexpr int64_t kFirstNs = 5'000'000;
  static constexpr int64_t kMaxNs = 1'000'000'000;
  int64_t delay_ns_ = kFirstNs;
  int64_t next_ns_ = 0;
};

// How long one resume attempt may take (connect, two round trips).
inline constexpr absl::Duration kResumeAttemptTimeout = absl::Seconds(1);

// How often an endpoint without a thread of its own (Producer, Client) looks
// at its attach socket from inside its calls: a daemon's hang-up is noticed
// within this much of coarse clock, at the caller's next call.
inline constexpr int64_t kDaemonCheckIntervalNs = 50'000'000;

// The daemon-hang-up check that Producer and Client run every
// kDaemonCheckIntervalNs: reads what the daemon sent without blocking, notices
// the hang-up (a crash, or a stop with --on-stop=keep), and paces the resume
// attempts that follow (ResumeBackoff). The caller keeps the time of its next
// check itself (one compare per call on its hot path) and does the resume,
// which differs per role.
class DaemonWatch {
 public:
  // Unless the hang-up was seen already, looks at `socket` (null or closed:
  // nothing to look at) without blocking: each pending message, at most 16,
  // goes to `on_message`; a hang-up closes the socket and starts the backoff.
  // Returns true when the daemon is gone and a resume attempt is due now (the
  // caller decides whether one still makes sense, e.g. after a Goodbye).
  bool Check(int64_t now_ns, AttachSocket* socket,
             absl::FunctionRef<void(const v1::AttachMessage&)> on_message);
  // The attach connection hung up and no resume has succeeded since.
  bool gone() const { return gone_; }
  // A resume succeeded, or nothing is left to resume: watching again.
  void Reconnected() { gone_ = false; }
  // A resume attempt found no daemon (yet): the next one after the backoff.
  void RetryLater(int64_t now_ns) { backoff_.Failed(now_ns); }

 private:
  bool gone_ = false;
  ResumeBackoff backoff_;
};

// Checks that every lane in `lanes` has a direction `role` may receive.
absl::Status CheckDirections(v1::Role role, const std::vector<LaneEnd>& lanes);

// "channel 'x'" prefix for messages.
std::string ChannelLabel(std::string_view channel);

}  // namespace shmlane::client::internal
