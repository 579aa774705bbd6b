// Test harness for daemon integration tests: runs a REAL shmlaned (fork/exec
// of the built binary) in a private temporary runtime directory, drives it
// with the real shmlanectl, speaks the attach protocol with a tiny raw client
// (attach.proto + sendmsg/recvmsg, independent of clients/), and fetches
// /metrics over plain HTTP.
//
// Thread safety: test-thread only. Child processes are killed in destructors.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/attach.pb.h"

namespace shmlane::testing {

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;
  std::string err;
};

// Runs a program to completion (with a timeout), capturing its output.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout = absl::Seconds(20));

// A process identity for tests that act as another user (needs root).
struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
};

// RunCommand as `who`: the child sets its groups, gid and uid before it
// executes a copy of argv[0] that any uid can run.
CommandResult RunCommandAs(const Identity& who, const std::vector<std::string>& argv,
                           absl::Duration timeout = absl::Seconds(20));

class TestDaemon {
 public:
  // Creates a fresh base directory (mkdtemp, chmod 0755); the runtime dir is
  // base/rt, created by the daemon.
  TestDaemon();
  ~TestDaemon();

  // Starts shmlaned with --runtime-dir, --metrics-listen 127.0.0.1:0 and
  // `extra` flags, and waits until it prints "ready". Fails if it exits.
  // With `max_fds` > 0 the daemon runs under RLIMIT_NOFILE = max_fds.
  absl::Status Start(std::vector<std::string> extra = {}, int max_fds = 0);
  // Starts shmlaned without waiting; for tests that expect it to refuse.
  // Returns its exit code and stderr (or a timeout error).
  absl::StatusOr<CommandResult> RunExpectingExit(std::vector<std::string> args,
                                                 absl::Duration timeout = absl::Seconds(10));
  // Sends `sig` and waits up to `timeout` for the exit; returns the exit code
  // (or 128+signal), or DeadlineExceeded.
  absl::StatusOr<int> Stop(int sig = 15, absl::Duration timeout = absl::Seconds(5));
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // shmlanectl --runtime-dir DIR args...
  CommandResult Ctl(std::vector<std::string> args) const;
  // The same as another user.
  CommandResult CtlAs(const Identity& who, std::vector<std::string> args) const;

  const std::string& base_dir() const { return base_; }
  const std::string& runtime_dir() const { return runtime_dir_; }
  std::string attach_socket() const { return runtime_dir_ + "/attach.sock"; }
  int metrics_port() const { return metrics_port_; }
  std::string stderr_text() const;
  // What the latest Start()ed daemon printed (its "ready" description).
  std::string stdout_text() const;

 private:
  std::string base_;
  std::string runtime_dir_;
  pid_t pid_ = -1;
  int metrics_port_ = 0;
  int starts_ = 0;
};

// A received attach packet.
struct Packet {
  shmlane::v1::AttachMessage message;
  std::vector<dataplane::UniqueFd> fds;
};

// A raw attach-protocol connection.
class RawAttach {
 public:
  static absl::StatusOr<RawAttach> Connect(const std::string& socket_path);
  RawAttach(RawAttach&&) = default;
  RawAttach& operator=(RawAttach&&) = default;

  // Sends raw bytes as one packet.
  absl::Status SendBytes(const std::string& bytes);
  absl::Status Send(const shmlane::v1::AttachMessage& message);
  absl::Status SendRequest(const std::string& channel, shmlane::v1::Role role, uint32_t version = 1,
                           const std::string& name = "test");
  // Next packet; Unavailable on EOF, DeadlineExceeded on timeout.
  absl::StatusOr<Packet> Receive(absl::Duration timeout = absl::Seconds(5));
  // Waits for EOF (skipping packets); true if it came before the timeout.
  bool WaitClosed(absl::Duration timeout);
  int fd() const { return fd_.get(); }
  void Close() { fd_.Reset(); }

 private:
  explicit RawAttach(dataplane::UniqueFd fd) : fd_(std::move(fd)) {}
  dataplane::UniqueFd fd_;
};

// Connects, sends an AttachRequest, and returns the connection and reply.
struct Attached {
  RawAttach conn;
  Packet reply;
};
absl::StatusOr<Attached> AttachTo(const std::string& socket_path, const std::string& channel,
                                  shmlane::v1::Role role, const std::string& name = "test");

// GET http://127.0.0.1:port/path; the body, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Value of the sample `name{labels}` (labels exactly as printed) in a
// Prometheus text exposition, if present.
std::optional<double> MetricValue(const std::string& text, const std::string& series);

// Runs `fn` in a forked child after switching to uid/gid; returns fn's
// result (0..255) as the child's exit code, or -1 if it died.
int RunAsUser(uid_t uid, gid_t gid, int (*fn)(const std::string&), const std::string& arg);
int RunAsIdentity(const Identity& who, int (*fn)(const std::string&), const std::string& arg);

// Count of entries in /dev/shm.
size_t CountDevShm();

// A duplicate of fd number `index` of a packet (the packet keeps its own).
dataplane::UniqueFd DupFd(const Packet& packet, uint32_t index);

}  // namespace shmlane::testing
