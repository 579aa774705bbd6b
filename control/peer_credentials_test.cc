#include "control/peer_credentials.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dataplane/unique_fd.h"
#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

TEST(PeerCredentialsTest, ReadsTheRealPeer) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
  dataplane::UniqueFd a(fds[0]), b(fds[1]);
  absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(a.get());
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->uid, ::geteuid());
  EXPECT_EQ(peer->gid, ::getegid());
  EXPECT_EQ(peer->pid, ::getpid());
}

// SO_PEERCRED works, SO_PEERGROUPS fails with `error`.
GetSockOptFn GroupsFailWith(int error) {
  return [error](int fd, int level, int name, void* value, socklen_t* len) {
    if (name == SO_PEERGROUPS) {
      errno = error;
      return -1;
    }
    return ::getsockopt(fd, level, name, value, len);
  };
}

TEST(PeerCredentialsTest, GroupsThatCannotBeReadFailClosed) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
  dataplane::UniqueFd a(fds[0]), b(fds[1]);
  for (int error : {EINVAL, ENOPROTOOPT, EFAULT}) {
    absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(a.get(), GroupsFailWith(error));
    // Before: the identity came back with 64 zero groups, so a grant to gid
    // 0 (root's group) matched every process.
    ASSERT_FALSE(peer.ok()) << "error " << error << " gave groups of size " << peer->groups.size();
    EXPECT_EQ(peer.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_NE(peer.status().message().find("SO_PEERGROUPS"), absl::string_view::npos);
  }
}

TEST(PeerCredentialsTest, ALargeGroupListIsFetchedWhole) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
  dataplane::UniqueFd a(fds[0]), b(fds[1]);
  // The kernel says the buffer is too small and how much it needs: 100 groups.
  auto fake = [](int fd, int level, int name, void* value, socklen_t* len) {
    if (name != SO_PEERGROUPS) return ::getsockopt(fd, level, name, value, len);
    const socklen_t need = 100 * sizeof(gid_t);
    if (*len < need) {
      *len = need;
      errno = ERANGE;
      return -1;
    }
    auto* g = static_cast<gid_t*>(value);
    for (int i = 0; i < 100; ++i) g[i] = 1000 + i;
    *len = need;
    return 0;
  };
  absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(a.get(), fake);
  ASSERT_TRUE(peer.ok()) << peer.status();
  ASSERT_EQ(peer->groups.size(), 100u);
  EXPECT_EQ(peer->groups.back(), 1099u);
}

}  // namespace
}  // namespace shmlane::control
