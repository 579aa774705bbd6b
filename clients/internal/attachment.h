// The attach handshake and the turning of LaneDescriptions plus received fds
// into mapped lane segments and doorbells. Shared by every role.
//
// Everything in a message is checked against what came with it: an fd index
// that is out of range, a direction the role cannot have, a duplicate lane id
// is a DataLoss error; fds no description refers to are closed.
//
// Thread safety: free functions on values; no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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
  int wait_preference = 0;  // AttachReply.wait_preference (see ResolveWait)
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

// Checks that every lane in `lanes` has a direction `role` may receive.
absl::Status CheckDirections(v1::Role role, const std::vector<LaneEnd>& lanes);

// "channel 'x'" prefix for messages.
std::string ChannelLabel(std::string_view channel);

}  // namespace shmlane::client::internal
