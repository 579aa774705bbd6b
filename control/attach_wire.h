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
#include "absl/strings/string_view.h"
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

// What a non-blocking send of one packet came to. The daemon queues the
// packet on the two "later" outcomes instead of dropping the peer: a busy
// consumer reads its attach socket only now and then.
enum class PacketSendResult {
  kSent,
  // EAGAIN: the socket's send budget is used up by packets the peer has not
  // read yet; EPOLLOUT says when it has room again.
  kWouldBlock,
  // ENOBUFS (kernel memory) or ETOOMANYREFS (this process has more fds in
  // flight than its RLIMIT_NOFILE): nothing to poll for, retry after a pause.
  kRetryLater,
  // Anything else (EPIPE, ECONNRESET, ...): the peer is gone.
  kFailed,
};

// Sends one already serialized AttachMessage (at most kMaxAttachMessageBytes)
// with at most kMaxFdsPerPacket fds, without blocking. `error` receives errno
// when the result is not kSent.
PacketSendResult SendAttachPacket(int socket_fd, absl::string_view bytes, std::span<const int> fds,
                                  int* error = nullptr);

// The attach peer's pidfd as the kernel took it at connect(2) (SO_PEERPIDFD,
// Linux 6.5+), close-on-exec; an invalid fd where the kernel lacks
// SO_PEERPIDFD or has none for the peer. Never pidfd_open(pid) instead: the
// pid may already name another process.
dataplane::UniqueFd ReadPeerPidfd(int socket_fd);

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
