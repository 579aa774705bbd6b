// AttachSocket: the client end of the daemon's SOCK_SEQPACKET attach socket.
//
// One packet carries one serialized shmlane.v1.AttachMessage and, as
// SCM_RIGHTS ancillary data, the file descriptors the message refers to by
// index. Everything the daemon sends is bounded and checked here before it is
// used: the packet size, the fd count, truncation of either. Received fds are
// close-on-exec from the moment they exist (MSG_CMSG_CLOEXEC).
//
// Thread safety: one thread at a time per socket.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/attach.pb.h"

namespace shmlane::client::internal {

// Largest packet the protocol allows (attach.proto).
inline constexpr size_t kMaxAttachMessageBytes = 65536;
// Most fds one packet may carry: the kernel's own limit (SCM_MAX_FD).
inline constexpr size_t kMaxFdsPerMessage = 253;

struct ReceivedMessage {
  v1::AttachMessage message;
  std::vector<dataplane::UniqueFd> fds;  // in the packet's order
};

class AttachSocket {
 public:
  // Connects to the attach socket at `path`. Unavailable (with advice) when
  // no daemon listens there, PermissionDenied when the socket's mode keeps
  // this user out, DeadlineExceeded when the daemon's backlog stays full
  // for `timeout`.
  // PermissionDenied when the process that accepted is not the daemon we
  // expect: `expected_uid`, or else root or the owner of the socket's
  // directory.
  static absl::StatusOr<AttachSocket> Connect(const std::string& path, absl::Duration timeout,
                                              std::optional<uint32_t> expected_uid = std::nullopt);

  AttachSocket() = default;
  AttachSocket(AttachSocket&&) noexcept = default;
  AttachSocket& operator=(AttachSocket&&) noexcept = default;

  // Sends one message in one packet. Never raises SIGPIPE.
  absl::Status Send(const v1::AttachMessage& message);
  // The same with `fds` as SCM_RIGHTS (a Resume's lanes; the daemon refuses
  // fds on every other message). The fds stay this process's.
  absl::Status Send(const v1::AttachMessage& message, std::span<const int> fds);

  // Waits for the next packet until `deadline`: DeadlineExceeded on timeout,
  // Unavailable when the daemon hung up (the socket is then closed), DataLoss
  // when the packet is malformed.
  absl::StatusOr<ReceivedMessage> Receive(absl::Time deadline);

  // Non-blocking Receive: std::nullopt when nothing is queued.
  absl::StatusOr<std::optional<ReceivedMessage>> TryReceive();

  // Closes the connection (the daemon sees the hang-up).
  void Close() { fd_.Reset(); }

  int fd() const { return fd_.get(); }
  bool is_open() const { return fd_.valid(); }
  const std::string& path() const { return path_; }

 private:
  AttachSocket(dataplane::UniqueFd fd, std::string path)
      : fd_(std::move(fd)), path_(std::move(path)) {}
  // One recvmsg with `flags`; nullopt on EAGAIN.
  absl::StatusOr<std::optional<ReceivedMessage>> ReceiveOnce(int flags);

  dataplane::UniqueFd fd_;
  std::string path_;
};

// The absl code for a google.rpc.Code value (unknown values map to kUnknown).
absl::StatusCode CodeFromRpc(int32_t code);

// Waits until `fd` is readable or `deadline` passes; true when readable (or
// hung up). Retries on EINTR.
bool WaitReadable(int fd, absl::Time deadline);

}  // namespace shmlane::client::internal
