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
// Fanout turns the roles round: the server process publishes and the
// `clients` processes subscribe (harness_fanout.cc); frames counts
// deliveries (each frame once per subscriber) and resources.server is the
// publisher's.
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
  int64_t client_rss_kb = 0;       // client 0 (server and client: VmRSS near the end of
                                   // the window, or the peak RSS if it had exited by then)
  int64_t daemon_memfd_bytes = 0;  // memfds the daemon holds (lane segments)
  int64_t shmem_delta_kb = 0;      // system Shmem growth since before setup
  // --cpu-limit: the run's cgroup throttling in the window.
  bool cpu_limited = false;
  std::string cgroup_version;  // "v1" or "v2"
  ThrottleStats throttle;
};

// Fanout: what the publisher sent and what reached the subscribers. The
// byte counts cover the whole run from the start barrier (warm-up
// included) and are per process sums: divide by total_published for a
// figure per frame.
struct FanoutResult {
  int subscribers = 0;
  uint64_t published_frames = 0;  // in the publisher's window
  double published_per_s = 0;
  double per_subscriber_frames_per_s = 0;  // deliveries/s / subscribers
  double min_subscriber_frames_per_s = 0;  // the slowest subscriber
  uint64_t total_published = 0;            // every subscriber received exactly these
  // Bytes the publisher copied into the transport (FanoutPublisher::copied_bytes).
  uint64_t publisher_copied_bytes = 0;
  // read()/write() bytes (/proc/self/io rchar, wchar) of the publisher and
  // summed over the subscribers.
  uint64_t publisher_io_written = 0;
  uint64_t publisher_io_read = 0;
  uint64_t subscribers_io_read = 0;
  uint64_t subscribers_io_written = 0;
};

struct RunResult {
  RunSpec spec;
  double window_s = 0;
  // Delivered (stream, openloop; fanout: summed over subscribers) or round
  // trips (pingpong) in the window.
  uint64_t frames = 0;
  double frames_per_s = 0;
  double mb_per_s = 0;  // payload bytes, 10^6 per MB
  // Pingpong: round-trip time. Openloop: one-way latency from the intended
  // send time (coordinated-omission corrected). Fanout: one-way latency
  // from the publisher's send time of every kFanoutSampleEvery-th frame, at
  // every subscriber (a saturated publisher: queueing included). Null for
  // stream.
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
  FanoutResult fanout;  // pattern fanout only
  Resources resources;
  double setup_s = 0;  // fork, connect and barrier
};

// Checks the spec; InvalidArgument says which option is out of range.
absl::Status ValidateSpec(const RunSpec& spec);

// Runs one benchmark. Errors name the process that failed and why.
absl::StatusOr<RunResult> RunOne(const RunSpec& spec);

}  // namespace shmlane::bench
