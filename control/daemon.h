// Daemon: wires the runtime directory, state file, Registry, AttachServer,
// gRPC control server and Prometheus exporter into one shmlaned instance.
//
// Thread safety: Start() and Shutdown() are for the main thread; between them
// the components run on their own threads.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "control/config.h"

namespace shmlane::control {

class Daemon {
 public:
  // Opens and checks the runtime directory, takes its lock, restores the
  // state file and starts every listener. InvalidArgument and
  // FailedPrecondition are the operator's to fix (exit code 2).
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const Config& config);

  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Stops accepting, says Goodbye to every attached process, stops the gRPC
  // server (open calls get a short grace period), saves the state. The
  // metrics listener keeps serving until destruction (stopping it takes about
  // a second, so shmlaned exits instead). Idempotent.
  absl::Status Shutdown();

  // Re-reads and re-applies the --declare file soon (SIGHUP); no-op without
  // one.
  void Reload();

  // Multi-line "where to find me" text printed at start.
  std::string Describe() const;

 private:
  struct Impl;
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmlane::control
