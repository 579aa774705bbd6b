#include "clients/producer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/internal/attach_socket.h"
#include "clients/internal/attachment.h"
#include "dataplane/deadline.h"

namespace shmlane::client {

absl::Status ToStatus(WriteResult result, std::string_view context) {
  const std::string prefix =
      context.empty() ? std::string() : absl::StrCat(std::string(context), ": ");
  switch (result) {
    case WriteResult::kOk:
      return absl::OkStatus();
    case WriteResult::kFull:
      return absl::ResourceExhaustedError(
          absl::StrCat(prefix, "the lane is full (the consumer is behind); retry or use Write"));
    case WriteResult::kDropped:
      return absl::ResourceExhaustedError(absl::StrCat(
          prefix, "the lane is full and its policy drops frames; this one was dropped"));
    case WriteResult::kTooLarge:
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "frame larger than the channel's max_frame_bytes"));
    case WriteResult::kClosed:
      return absl::UnavailableError(absl::StrCat(prefix, "the lane is closed (peer gone)"));
    case WriteResult::kBroken:
      return absl::DataLossError(absl::StrCat(prefix, "the lane is corrupt"));
    case WriteResult::kTimeout:
      return absl::DeadlineExceededError(
          absl::StrCat(prefix, "the lane stayed full until the deadline"));
  }
  return absl::UnknownError(absl::StrCat(prefix, "unknown write result"));
}

absl::StatusOr<Producer> Producer::Attach(std::string_view channel, const Options& options) {
  auto handshake = internal::Attach(channel, v1::ROLE_PRODUCER, options);
  if (!handshake.ok()) return handshake.status();
  if (handshake->lanes.size() != 1) {
    return absl::DataLossError(absl::StrCat("shmlaned handed this producer ",
                                            handshake->lanes.size(), " lanes on ",
                                            internal::ChannelLabel(channel), "; expected one"));
  }
  internal::LaneEnd& end = handshake->lanes.front();
  auto lane = dataplane::Producer::Attach(std::move(end.segment),
                                          {.own = handshake->own_bell, .peer = end.peer_bell},
                                          ResolveWait(options, handshake->wait_preference));
  if (!lane.ok()) return lane.status();
  Producer p;
  p.channel_ = handshake->channel;
  p.attachment_id_ = handshake->attachment_id;
  p.options_ = options;
  p.socket_ = std::make_unique<internal::AttachSocket>(std::move(handshake->socket));
  p.own_bell_ = handshake->own_bell;
  p.peer_ = end.peer;
  p.lane_.emplace(std::move(*lane));
  p.client_name_ = handshake->client_name;
  p.attach_credential_ = handshake->resume_credential;
  p.lane_credential_ = end.resume_credential;
  p.peer_bell_ = end.peer_bell;
  p.daemon_ = std::make_unique<internal::DaemonWatch>();
  p.next_daemon_check_ns_ = internal::CoarseNowNs() + internal::kDaemonCheckIntervalNs;
  return p;
}

Producer::Producer(Producer&&) noexcept = default;
Producer& Producer::operator=(Producer&& other) noexcept {
  if (this != &other) {
    Close();
    channel_ = std::move(other.channel_);
    attachment_id_ = other.attachment_id_;
    options_ = std::move(other.options_);
    socket_ = std::move(other.socket_);
    own_bell_ = std::move(other.own_bell_);
    lane_ = std::move(other.lane_);
    other.lane_.reset();
    peer_ = std::move(other.peer_);
    closed_reason_ = std::move(other.closed_reason_);
    ended_by_daemon_ = other.ended_by_daemon_;
    closed_here_ = other.closed_here_;
    writes_since_check_ = other.writes_since_check_;
    client_name_ = std::move(other.client_name_);
    attach_credential_ = std::move(other.attach_credential_);
    lane_credential_ = std::move(other.lane_credential_);
    peer_bell_ = std::move(other.peer_bell_);
    next_daemon_check_ns_ = other.next_daemon_check_ns_;
    daemon_ = std::move(other.daemon_);
    resumes_ = other.resumes_;
    reattaches_ = other.reattaches_;
  }
  return *this;
}
Producer::~Producer() { Close(); }

void Producer::Note() {
  if (socket_ == nullptr || !socket_->is_open()) return;
  for (int i = 0; i < 16; ++i) {
    auto got = socket_->TryReceive();
    if (!got.ok()) {
      if (closed_reason_.empty()) {
        closed_reason_.assign(got.status().message().data(), got.status().message().size());
      }
      break;
    }
    if (!got->has_value()) break;
    const v1::AttachMessage& m = (*got)->message;
    if (m.has_lane_removed()) closed_reason_ = m.lane_removed().reason();
    if (m.has_goodbye()) {
      closed_reason_ = m.goodbye().reason();
      ended_by_daemon_ = true;
    }
  }
}

void Producer::MaybeCheckDaemon() {
  const int64_t now = internal::CoarseNowNs();
  if (now >= next_daemon_check_ns_) CheckDaemon(now);
}

void Producer::CheckDaemon(int64_t now) {
  next_daemon_check_ns_ = now + internal::kDaemonCheckIntervalNs;
  if (!lane_.has_value()) return;
  const bool resume_due = daemon_->Check(now, socket_.get(), [this](const v1::AttachMessage& m) {
    if (m.has_lane_removed()) closed_reason_ = m.lane_removed().reason();
    if (m.has_goodbye()) {
      closed_reason_ = m.goodbye().reason();
      ended_by_daemon_ = true;
    }
  });
  if (resume_due && !ended_by_daemon_) TryResume(now);
}

void Producer::TryResume(int64_t now) {
  if (lane_->PeerClosed()) {
    daemon_->Reconnected();  // nothing left to resume
    return;
  }
  internal::ResumeRequest request;
  request.channel = channel_;
  request.role = v1::ROLE_PRODUCER;
  request.attachment_id = attachment_id_;
  request.credential = attach_credential_;
  request.client_name = client_name_;
  request.lanes.push_back({.lane_id = peer_.lane_id,
                           .credential = lane_credential_,
                           .segment_fd = lane_->segment().fd(),
                           .producer_bell_fd = own_bell_->fd(),
                           .consumer_bell_fd = peer_bell_->fd()});
  bool refused = false;
  auto result = internal::Resume(request, options_, internal::kResumeAttemptTimeout, &refused);
  if (result.ok()) {
    for (const auto& [id, status] : result->lanes) {
      if (!status.ok()) refused = true;
    }
  }
  if (!result.ok() && !refused) {
    // No daemon yet (or a slow one): try again later.
    daemon_->RetryLater(internal::CoarseNowNs());
    return;
  }
  daemon_->Reconnected();
  if (refused) {
    // The restarted daemon does not know this lane: nobody would supervise
    // it, so end it (the consumer reads what was committed, then sees us go).
    closed_reason_ = std::string(result.ok() ? result->lanes.front().second.message()
                                             : result.status().message());
    ended_by_daemon_ = true;
    lane_->Close();
    lane_.reset();  // every write now returns kClosed
    return;
  }
  socket_ = std::make_unique<internal::AttachSocket>(std::move(result->socket));
  ++resumes_;
  (void)now;
}

WriteResult Producer::TryWrite(std::span<const std::byte> frame) {
  MaybeCheckDaemon();
  if (!lane_.has_value() || ClosedCheckDue()) return WriteResult::kClosed;
  const WriteResult r = lane_->TryWrite(frame);
  if (r == WriteResult::kClosed) Note();
  return r;
}

WriteResult Producer::Write(std::span<const std::byte> frame, absl::Time deadline) {
  int64_t now = internal::CoarseNowNs();
  if (now >= next_daemon_check_ns_) CheckDaemon(now);
  if (!lane_.has_value() || ClosedCheckDue()) return WriteResult::kClosed;
  // Blocks (or drops, or fails) per the lane's policy, in slices of at most
  // internal::kDaemonCheckIntervalNs so that a producer parked on a full ring still
  // looks at its attach socket (CheckDaemon). The slice is measured on the
  // coarse clock, which may lag by a few ms: a slightly shorter slice.
  const dataplane::Deadline end = dataplane::Deadline::FromTime(deadline);
  WriteResult r;
  for (;;) {
    const int64_t slice_end = now + internal::kDaemonCheckIntervalNs;
    const bool last = end.ns() <= slice_end;
    r = lane_->Write(frame, last ? end : dataplane::Deadline::AtNs(slice_end));
    if (r != WriteResult::kTimeout || last) break;
    now = internal::CoarseNowNs();
    if (end.ns() <= now) break;
    CheckDaemon(now);
    if (lane_->PeerClosed()) {
      r = WriteResult::kClosed;
      break;
    }
  }
  if (r == WriteResult::kClosed) Note();
  return r;
}

size_t Producer::TryWriteBatch(std::span<const std::span<const std::byte>> frames,
                               WriteResult* result) {
  MaybeCheckDaemon();
  if (!lane_.has_value() || ClosedCheckDue()) {
    if (result != nullptr) *result = WriteResult::kClosed;
    return 0;
  }
  WriteResult r = WriteResult::kOk;
  const size_t n = lane_->TryWriteBatch(frames, &r);
  if (r == WriteResult::kClosed) Note();
  if (result != nullptr) *result = r;
  return n;
}

Reservation Producer::Reserve(size_t n) {
  // Inside a batch (deferred commits not yet published) the daemon check
  // waits for the batch's first Reserve after its Publish: a clock read per
  // frame cost a 64-byte batch a fifth of its producer's time.
  if (!lane_.has_value() || !lane_->has_unpublished()) MaybeCheckDaemon();
  if (!lane_.has_value() || ClosedCheckDue()) return Reservation{WriteResult::kClosed, {}};
  Reservation r = lane_->Reserve(n);
  if (r.result == WriteResult::kClosed) Note();
  return r;
}

void Producer::Commit(size_t used, dataplane::PublishMode mode) {
  if (lane_.has_value()) lane_->Commit(used, mode);
}

void Producer::Publish() {
  if (lane_.has_value()) lane_->Publish();
}

void Producer::Close() {
  if (lane_.has_value()) {
    lane_->Close();  // the consumer drains what we committed, then sees us go
    lane_.reset();
    closed_here_ = true;
  }
  if (socket_ != nullptr && socket_->is_open()) {
    v1::AttachMessage detach;
    detach.mutable_detach();
    (void)socket_->Send(detach);  // best effort: the hang-up says the same
    socket_->Close();
  }
}

absl::Status Producer::Reattach(absl::Time deadline) {
  if (channel_.empty()) return absl::FailedPreconditionError("producer is moved-from");
  const std::string channel = channel_;
  const AttachOptions options = options_;
  const uint64_t resumes = resumes_, reattaches = reattaches_;
  Close();
  absl::Duration backoff = absl::Milliseconds(5);
  for (;;) {
    absl::StatusOr<Producer> fresh = Attach(channel, options);
    if (fresh.ok()) {
      *this = *std::move(fresh);
      resumes_ = resumes;
      reattaches_ = reattaches + 1;
      return absl::OkStatus();
    }
    if (!absl::IsUnavailable(fresh.status()) || absl::Now() + backoff > deadline) {
      return fresh.status();
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

bool Producer::daemon_connected() const { return daemon_ == nullptr || !daemon_->gone(); }

bool Producer::PeerClosed() const { return !lane_.has_value() || lane_->PeerClosed(); }

absl::Status Producer::status() const {
  if (!lane_.has_value() && ended_by_daemon_ && !closed_here_) {
    return absl::UnavailableError(absl::StrCat(
        "shmlaned closed the lane to ", internal::ChannelLabel(channel_), ": ", closed_reason_,
        absl::StrContains(closed_reason_, "attach again") ? "" : "; attach again to write"));
  }
  if (!lane_.has_value()) {
    return absl::FailedPreconditionError(
        closed_here_ ? absl::StrCat("the producer on ", internal::ChannelLabel(channel_),
                                    " was closed by this process")
                     : std::string("the producer is moved-from"));
  }
  if (absl::Status s = lane_->status(); !s.ok()) return s;
  if (lane_->PeerClosed()) {
    // The daemon says why when it closed the lane: not necessarily the
    // consumer's doing (a stopping daemon or a deleted channel closes the
    // lane for both sides, with or without a consumer). Otherwise the
    // consumer closed it.
    const std::string by =
        ended_by_daemon_ || !closed_reason_.empty()
            ? absl::StrCat("shmlaned closed the lane to ", internal::ChannelLabel(channel_),
                           closed_reason_.empty() ? "" : ": ", closed_reason_)
            : absl::StrCat(
                  "the consumer of ", internal::ChannelLabel(channel_),
                  peer_.name.empty() ? std::string() : absl::StrCat(" ('", peer_.name, "')"),
                  " closed the lane");
    return absl::UnavailableError(
        absl::StrCat(by, absl::StrContains(by, "attach again") ? "" : "; attach again to write"));
  }
  return absl::OkStatus();
}

uint32_t Producer::max_frame_bytes() const {
  return lane_.has_value() ? lane_->max_frame_bytes() : 0;
}

}  // namespace shmlane::client
