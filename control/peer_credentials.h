// The kernel-verified identity of a process on the other end of a Unix
// socket: SO_PEERCRED (uid, gid, pid recorded at connect) and SO_PEERGROUPS
// (its supplementary groups). Used by the attach server and the control
// socket's acceptor; the client cannot forge either.
//
// Thread safety: stateless functions.
#pragma once

#include <sys/socket.h>

#include <functional>

#include "absl/status/statusor.h"
#include "control/access.h"

namespace shmlane::control {

// getsockopt(2), injectable for tests.
using GetSockOptFn = std::function<int(int fd, int level, int name, void* value, socklen_t* len)>;

// Reads SO_PEERCRED and SO_PEERGROUPS. Fails closed: if the group list
// cannot be read (anything but a buffer too small, which is retried with the
// size the kernel asks for), the whole identity is refused rather than
// taken with a wrong or empty group list.
absl::StatusOr<PeerCredentials> ReadPeerCredentials(int fd);
absl::StatusOr<PeerCredentials> ReadPeerCredentials(int fd, const GetSockOptFn& getsockopt_fn);

}  // namespace shmlane::control
