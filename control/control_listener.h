// ControlListener: the daemon's own accept loop for control.sock. For every
// connection it reads the caller's SO_PEERCRED / SO_PEERGROUPS, records them
// in the CallerTable under the fd, and hands the fd to the gRPC server
// (grpc::AddInsecureChannelFromFd), which names it "fd:N" in
// ServerContext::peer(). So every control call has a kernel-verified caller,
// which gRPC alone cannot tell a handler for a Unix socket.
//
// Thread safety: Bind(), Start() and Stop() from one owner thread; the
// accept loop runs on its own thread.
#pragma once

#include <grpcpp/server.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "control/caller.h"
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
  void Loop(grpc::Server* server);

  const ControlListenerOptions options_;
  CallerTable* const callers_;
  dataplane::UniqueFd listen_fd_;
  dataplane::UniqueFd wake_fd_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace shmlane::control
