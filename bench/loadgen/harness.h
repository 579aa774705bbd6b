// The harness: runs one benchmark (a RunSpec) as real processes and collects
// what they measured.
//
// One server process and `clients` client processes are forked; each client
// connects, then all wait at a start barrier (a futex in a shared anonymous
// mapping) for the parent to publish the run's clock. Clients send from
// start_ns; the measurement window is [measure_ns, end_ns) after the warmup.
// Each process records into private counters and histograms and copies them
// into its slot of the shared mapping when it is done; the parent merges the
// slots and samples the resources of the server, a client and the daemon
// from /proc at the end of the window.
//
// Thread safety: RunOne() forks; call it from a single-threaded process that
// has not initialized gRPC.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/loadgen/cgroup.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/spec.h"
#include "bench/loadgen/sys.h"

namespace shmlane::bench {

// What the run cost, measured over the window unless a field says otherwise.
struct Resources {
  CpuUsage clients;  // summed over every client process
  CpuUsage server;
  CpuUsage daemon;  // zeros when the transport has no daemon
  int64_t daemon_rss_kb = 0;
  int64_t server_rss_kb = 0;
  int64_t client_rss_kb = 0;       // client 0
  int64_t daemon_memfd_bytes = 0;  // memfds the daemon holds (lane segments)
  int64_t shmem_delta_kb = 0;      // system Shmem growth since before setup
  // --cpu-limit: the run's cgroup throttling in the window.
  bool cpu_limited = false;
  std::string cgroup_version;  // "v1" or "v2"
  ThrottleStats throttle;
};

struct RunResult {
  RunSpec spec;
  double window_s = 0;
  uint64_t frames = 0;  // delivered (stream, openloop) or round trips (pingpong) in the window
  double frames_per_s = 0;
  double mb_per_s = 0;  // payload bytes, 10^6 per MB
  // Pingpong: round-trip time. Openloop: one-way latency from the intended
  // send time (coordinated-omission corrected). Null for stream.
  std::unique_ptr<Histogram> latency;
  // Openloop: one-way latency from the actual send time.
  std::unique_ptr<Histogram> latency_actual;
  uint64_t openloop_unsent = 0;  // scheduled in the window but never sent
  // Stream and openloop: frames the clients sent over the whole run
  // (warm-up included) and frames the server received; RunOne fails when
  // they differ, so every frame is accounted for.
  uint64_t total_sent = 0;
  uint64_t total_received = 0;
  // Stream and openloop: batches the clients handed to the transport over
  // the whole run; total_sent / client_flushes is the batch really used.
  uint64_t client_flushes = 0;
  Resources resources;
  double setup_s = 0;  // fork, connect and barrier
};

// Checks the spec; InvalidArgument says which option is out of range.
absl::Status ValidateSpec(const RunSpec& spec);

// Runs one benchmark. Errors name the process that failed and why.
absl::StatusOr<RunResult> RunOne(const RunSpec& spec);

}  // namespace shmlane::bench
