// AttachServer: the SOCK_SEQPACKET Unix socket applications attach through.
//
// One thread runs an epoll loop over the listening socket and every
// connection. A connection must send one AttachRequest within the handshake
// timeout; the Registry decides (grants, quotas) and replies with the lane
// fds. The connection then stays open for the life of the attachment: a
// Detach message ends it cleanly, a hang-up means the process died. Garbage,
// oversized packets, unexpected fds or a wrong protocol version get an error
// reply and the connection is closed; nothing a client sends can crash the
// loop. EMFILE while accepting is survived by shedding the newest connection.
//
// The loop also flushes the registry's outbound queues: it is the registry's
// OutboundWaker, arming EPOLLOUT on a connection only while packets wait for
// it (level-triggered EPOLLOUT on an idle socket would spin) and waking at
// the registry's retry and deadline times.
//
// Thread safety: Start() and Stop() from one owner thread; the loop thread is
// internal. Stop() sends Goodbye to every attachment before returning, giving
// queued packets at most kShutdownFlushTimeout to leave.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "control/daemon_metrics.h"
#include "control/fd_closer.h"
#include "control/registry.h"
#include "dataplane/unique_fd.h"

namespace shmlane::control {

// At shutdown, how long queued packets (Goodbye included) may take to reach
// peers before their sockets are shut down anyway; SIGTERM must stay fast.
inline constexpr absl::Duration kShutdownFlushTimeout = absl::Milliseconds(250);

struct AttachServerOptions {
  // The socket is `socket_name` in the runtime directory open as `dir_fd`
  // (OpenRuntimeDir; it must outlive the server); `socket_path` names it in
  // messages.
  int dir_fd = -1;
  std::string socket_name;
  std::string socket_path;
  uint32_t socket_mode = 0666;  // file mode of the socket
  int socket_gid = -1;          // chown group, -1 = keep
  absl::Duration handshake_timeout = absl::Seconds(5);
  size_t max_connections = 4096;
  // Per-uid shares (root and the daemon's uid exempt): connections at once,
  // and of those still handshaking.
  // When the daemon is full, a uid below its fair share (max_connections /
  // uids connected) displaces the oldest handshaking connection of the uid
  // holding the most.
  size_t max_connections_per_uid = 1024;
  size_t max_handshakes_per_uid = 64;
  // How often lanes are checked for backpressure transitions (events).
  absl::Duration backpressure_check_interval = absl::Seconds(1);
  // Stop(): end every attachment with Goodbye and close every lane (waking
  // each blocked side), or (false, --on-stop=keep) only close the sockets and
  // leave the lanes open for their holders.
  bool end_attachments_on_stop = true;
};

class AttachServer final : private OutboundWaker {
 public:
  AttachServer(AttachServerOptions options, Registry* registry, DaemonMetrics* metrics);
  ~AttachServer() override;
  AttachServer(const AttachServer&) = delete;
  AttachServer& operator=(const AttachServer&) = delete;

  // Binds the socket (the caller removed any stale one) and starts the loop.
  absl::Status Start();
  // Stops accepting, ends every attachment with Goodbye (unless
  // end_attachments_on_stop is false), closes every connection and joins
  // the loop thread.
  void Stop();

 private:
  struct Connection {
    dataplane::UniqueFd fd;
    PeerCredentials peer;
    absl::Time deadline;  // handshake deadline while attachment_id == 0
    uint64_t attachment_id = 0;
    // A Resume whose identity checked out: its lanes arrive (with fds) in
    // ResumeLanes packets until `resumed` holds resume->lanes() of them.
    std::unique_ptr<shmlane::v1::Resume> resume;
    std::vector<ResumedLaneFds> resumed;
  };

  // OutboundWaker, called by OutboundQueues under its lock from any thread:
  // epoll_ctl and an eventfd write are safe beside the loop's epoll_wait.
  void WatchWritable(int socket_fd, bool watch) override;
  void WakeAt(absl::Time when) override;

  void Loop();
  // Shutdown: flushes queued packets for at most kShutdownFlushTimeout.
  void DrainOutbound();
  // Calls Registry::ServiceOutbound when the time it asked for has come.
  void ServiceOutboundIfDue();
  // Shutdown: reads and drops what a peer sends (so EPOLLIN cannot spin).
  void DiscardInput(int fd);
  void AcceptAll();
  // Whether a new connection of `uid` may be taken now; may close another
  // uid's handshaking connection to make room (fair share).
  bool AdmitLocked(uint32_t uid);
  // Receives one packet without blocking into receive_buffer_; fds that
  // came along go to closer_, or into `keep` when given (a resume). -1 with
  // errno on failure; `truncated` when fds were cut off.
  ssize_t Receive(int fd, bool* had_fds, std::vector<dataplane::UniqueFd>* keep = nullptr,
                  bool* truncated = nullptr);
  // Resume: step 1 (Resume) and the ResumeLanes packets; false when the
  // connection was closed.
  bool OnResume(int fd, Connection& conn, const shmlane::v1::Resume& resume);
  bool OnResumeLanes(int fd, Connection& conn, const shmlane::v1::AttachMessage& message,
                     std::vector<dataplane::UniqueFd> fds);
  // Replies with an error ResumeReply (best effort) and closes.
  void RejectResume(int fd, const absl::Status& status);
  void OnReadable(int fd);
  // Replies with an error AttachReply (best effort) and closes.
  void Reject(int fd, const absl::Status& status);
  // Closes a connection; an attached one is detached with `kind` first.
  void Close(int fd, Registry::DetachKind kind);
  // Removes a connection from the maps and counts (the fd closes with it).
  void Forget(std::map<int, Connection>::iterator it);
  // Milliseconds until the next timer (handshakes, backpressure check,
  // outbound service).
  int NextTimeoutMs() const;
  void ExpireHandshakes();

  const AttachServerOptions options_;
  Registry* const registry_;
  DaemonMetrics* const metrics_;
  dataplane::UniqueFd listen_fd_;
  dataplane::UniqueFd epoll_fd_;
  dataplane::UniqueFd wake_fd_;   // eventfd: Stop() rings it
  dataplane::UniqueFd spare_fd_;  // released to accept-and-close on EMFILE
  std::atomic<bool> stopping_{false};
  // When the registry wants ServiceOutbound (unix ns; INT64_MAX = never).
  std::atomic<int64_t> outbound_due_ns_{INT64_MAX};
  std::thread thread_;
  // Loop-thread state.
  std::map<int, Connection> connections_;
  std::set<std::pair<absl::Time, int>> handshake_deadlines_;
  absl::Time next_backpressure_check_;
  absl::Time resume_deadline_ = absl::InfiniteFuture();  // Registry::RetireUnclaimed
  std::string receive_buffer_;                           // one packet
  struct UidCount {
    size_t open = 0;
    size_t handshaking = 0;
  };
  std::map<uint32_t, UidCount> per_uid_;
  FdCloser closer_;  // client-sent fds, closed off the loop thread
};

}  // namespace shmlane::control
