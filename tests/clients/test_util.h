// Helpers for the client integration tests: a real shmlaned in a temporary
// runtime directory, its control plane through the generated gRPC stubs, and
// child processes (fork + exec only, so the test process may hold gRPC
// threads) whose stdout the test reads line by line.
//
// Thread safety: none; one test thread drives these.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::testing {

// The samples of a Prometheus text exposition: "name{labels}" (labels as
// exposed, sorted by the exporter) -> value. Comment lines are skipped.
std::map<std::string, double> ParseMetrics(const std::string& text);

// SHMLANE_TEST_SCALE (default 1) times `n`, at least `min`.
uint64_t Scaled(uint64_t n, uint64_t min = 1);

// A directory made with mkdtemp and chmod 0755, removed (recursively) at the end.
class TempDir {
 public:
  static absl::StatusOr<TempDir> Make();
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// A child process with its stdout (and stderr) on a pipe.
class Child {
 public:
  // Runs argv[0] with argv. With `uid`, the child drops to that uid (and
  // gid) with setresgid/setresuid before exec.
  static absl::StatusOr<Child> Spawn(const std::vector<std::string>& argv,
                                     std::optional<uid_t> uid = std::nullopt);
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  ~Child();  // SIGKILLs and reaps a child still running

  pid_t pid() const { return pid_; }
  // The next line of output (without '\n'); DeadlineExceeded, or NotFound
  // at end of output.
  absl::StatusOr<std::string> ReadLine(absl::Time deadline);
  // Waits for an output line starting with `prefix`, skipping others.
  absl::StatusOr<std::string> ExpectLine(const std::string& prefix, absl::Time deadline);
  void Signal(int sig) const;
  // Waits for exit until `deadline`: the exit code, 128 + signal, or
  // DeadlineExceeded.
  absl::StatusOr<int> Wait(absl::Time deadline);
  // Everything it printed that ReadLine has not returned (drains the pipe
  // until end of output or `deadline`).
  std::string RestOfOutput(absl::Time deadline);

 private:
  Child(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {}
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int pidfd_ = -1;
  std::string buffered_;
  bool reaped_ = false;
  int exit_code_ = 0;
};

// A real shmlaned on a fresh runtime directory.
class Daemon {
 public:
  struct StartOptions {
    // Serve /metrics on <dir>/metrics.sock (--metrics-listen unix:PATH);
    // else no metrics listener.
    bool metrics = false;
    bool per_lane_metrics = false;  // --per-lane-metrics
  };
  static absl::StatusOr<std::unique_ptr<Daemon>> Start() { return Start(StartOptions()); }
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const StartOptions& options);
  ~Daemon();

  const std::string& dir() const { return dir_.path(); }
  void Kill();  // SIGKILL, reaped

  absl::Status CreateChannel(
      const std::string& name, shmlane::v1::ChannelPattern pattern, uint64_t ring_bytes = 0,
      uint32_t max_frame_bytes = 0,
      shmlane::v1::BackpressurePolicy policy = shmlane::v1::BACKPRESSURE_POLICY_BLOCK,
      shmlane::v1::WaitPreference wait = shmlane::v1::WAIT_PREFERENCE_UNSPECIFIED);
  absl::Status DeleteChannel(const std::string& name, bool force);
  absl::Status GrantUid(const std::string& channel, uint32_t uid, shmlane::v1::GrantRole role);
  absl::StatusOr<shmlane::v1::ChannelStats> Stats(const std::string& channel,
                                                  bool include_lanes = false);
  // GET /metrics on the metrics socket (StartOptions::metrics): the body.
  absl::StatusOr<std::string> Metrics();

 private:
  Daemon(TempDir dir, Child child) : dir_(std::move(dir)), child_(std::move(child)) {}
  TempDir dir_;
  Child child_;
  bool killed_ = false;
};

}  // namespace shmlane::testing
