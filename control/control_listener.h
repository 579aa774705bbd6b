// ControlListener: the daemon's own accept loop for control.sock. For every
// connection it reads the caller's SO_PEERCRED / SO_PEERGROUPS, records them
// in the CallerTable under the fd, and hands the fd to the gRPC server
// (grpc::AddInsecureChannelFromFd), which names it "fd:N" in
// ServerContext::peer(). So every control call has a kernel-verified caller,
// which gRPC alone cannot tell a handler for a Unix socket.
//
// Per-uid cap: a uid other than root and the daemon's may hold at most
// max_connections_per_uid connections at once; one more is closed at accept
// (counted, and logged at most once a second). gRPC owns each fd once it
// has it, so the listener learns that a connection ended without holding a
// reference to it (a dup would keep the socket open after gRPC closed it):
//  - it watches the fd number in its own epoll set for EPOLLRDHUP/EPOLLHUP,
//    which come when the peer hangs up or gRPC shuts the socket down;
//  - and, because gRPC may close an fd without either (the kernel then drops
//    it from our epoll set silently), it remembers the socket's inode and
//    checks with fstat whether the fd number still names that socket: every
//    second, and for a uid at its cap before refusing it. A socket's inode
//    cannot be reused while it is open, and a closed one no longer matches.
//
// Thread safety: Bind(), Start() and Stop() from one owner thread; the
// accept loop and all its bookkeeping run on its own thread.
#pragma once

#include <grpcpp/server.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "control/caller.h"
#include "control/daemon_metrics.h"
#include "dataplane/unique_fd.h"

namespace shmlane::control {

struct ControlListenerOptions {
  // The socket is `socket_name` in the runtime directory open as `dir_fd`
  // (OpenRuntimeDir; it must outlive the listener); `socket_path` names it
  // in messages.
  int dir_fd = -1;
  std::string socket_name;
  std::string socket_path;
  uint32_t socket_mode = 0600;
  int socket_gid = -1;  // chown group, -1 = keep
  // Connections one uid may hold at once; root and `daemon_uid` are exempt.
  size_t max_connections_per_uid = 64;
  uint32_t daemon_uid = 0;
  DaemonMetrics* metrics = nullptr;  // refusals are counted here when set
};

class ControlListener {
 public:
  ControlListener(ControlListenerOptions options, CallerTable* callers)
      : options_(std::move(options)), callers_(callers) {}
  ~ControlListener() { Stop(); }
  ControlListener(const ControlListener&) = delete;
  ControlListener& operator=(const ControlListener&) = delete;

  // Creates, binds and chmods the socket; connections wait in its backlog
  // until Start().
  absl::Status Bind();
  // Starts handing connections to `server` (which must outlive Stop()).
  void Start(grpc::Server* server);
  // Stops accepting and removes the socket file.
  void Stop();

 private:
  // A capped uid's connection, handed to gRPC.
  struct Tracked {
    int fd = -1;  // gRPC's fd number (not ours to close)
    dev_t dev = 0;
    ino_t ino = 0;
    uint32_t uid = 0;
  };

  void Loop(grpc::Server* server);
  void AcceptAll(grpc::Server* server);
  // Whether `t.fd` still names the socket it named at accept.
  static bool StillOpen(const Tracked& t);
  // Stops counting connection `id` (ended).
  void Forget(uint64_t id);
  // Forgets the connections (of `uid`, or all with `all`) gRPC has closed.
  void Sweep(bool all, uint32_t uid);
  void Refuse(uint32_t uid, int32_t pid);

  const ControlListenerOptions options_;
  CallerTable* const callers_;
  dataplane::UniqueFd listen_fd_;
  dataplane::UniqueFd wake_fd_;
  dataplane::UniqueFd epoll_fd_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  // Loop-thread state.
  std::map<uint64_t, Tracked> tracked_;  // by epoll id
  std::map<uint32_t, size_t> per_uid_;   // tracked connections per uid
  uint64_t next_id_ = 2;                 // 0: listening socket, 1: wake_fd_
  absl::Time next_sweep_;
  absl::Time last_refusal_log_ = absl::InfinitePast();
  uint64_t refusals_unlogged_ = 0;
};

}  // namespace shmlane::control
