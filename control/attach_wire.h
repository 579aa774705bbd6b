// Packet framing of the attach protocol (protos/shmlane/v1/attach.proto): one
// serialized AttachMessage per SOCK_SEQPACKET packet, file descriptors in the
// same packet as SCM_RIGHTS. Shared by the daemon's attach server and tools.
//
// Thread safety: stateless functions; concurrent sends on one socket are
// atomic per packet (the kernel queues whole packets).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/attach.pb.h"

namespace shmlane::control {

// Largest serialized AttachMessage in either direction.
inline constexpr size_t kMaxAttachMessageBytes = 64 * 1024;
// Most fds the daemon puts in one packet (well below the kernel's 253). A
// reply with more lanes continues in LaneAdded messages.
inline constexpr size_t kMaxFdsPerPacket = 64;

// Sends one message with `fds` attached, without blocking (MSG_DONTWAIT):
// Unavailable if the peer is gone or its receive queue is full.
absl::Status SendAttachMessage(int socket_fd, const shmlane::v1::AttachMessage& message,
                               std::span<const int> fds);

// One received packet: the parsed message and the fds it carried.
struct ReceivedPacket {
  shmlane::v1::AttachMessage message;
  std::vector<dataplane::UniqueFd> fds;
};

// Blocking receive with a deadline in milliseconds (-1 = forever), for tools
// and tests. Unavailable on hang-up, DeadlineExceeded on timeout, DataLoss on
// an oversized or unparsable packet.
absl::StatusOr<ReceivedPacket> ReceiveAttachMessage(int socket_fd, int timeout_ms);

}  // namespace shmlane::control
