#include "control/peer_credentials.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace shmlane::control {

absl::StatusOr<PeerCredentials> ReadPeerCredentials(int fd) {
  return ReadPeerCredentials(fd, [](int f, int level, int name, void* value, socklen_t* len) {
    return ::getsockopt(f, level, name, value, len);
  });
}

absl::StatusOr<PeerCredentials> ReadPeerCredentials(int fd, const GetSockOptFn& getsockopt_fn) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt_fn(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
    return absl::InternalError(absl::StrCat("SO_PEERCRED: ", std::strerror(errno)));
  }
  PeerCredentials peer;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  peer.pid = cred.pid;
  std::vector<gid_t> groups(64);
  // The kernel caps a process's groups at NGROUPS_MAX (65536).
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt_fn(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      if (glen % sizeof(gid_t) != 0 || glen > groups.size() * sizeof(gid_t)) break;
      groups.resize(glen / sizeof(gid_t));
      peer.groups.assign(groups.begin(), groups.end());
      return peer;
    }
    if (errno != ERANGE || glen > 65536 * sizeof(gid_t) || glen <= groups.size() * sizeof(gid_t)) {
      break;
    }
    groups.resize(glen / sizeof(gid_t));
  }
  return absl::PermissionDeniedError(
      absl::StrCat("cannot read the supplementary groups of pid ", cred.pid, " (uid ", cred.uid,
                   ") from SO_PEERGROUPS: ", std::strerror(errno),
                   "; refused rather than checked against a wrong group list"));
}

}  // namespace shmlane::control
