// The transport interface: how the harness sets up one benchmark run on a
// transport, and what a client and the server do with it.
//
// Life of a run (harness.cc): the parent calls Transport::Prepare(), forks
// the server process, which calls StartServer() and reports ready; the parent
// forks the clients, each calls Connect(); after the start barrier the
// clients send through their ClientEndpoint and the server runs
// ServerEndpoint::Serve() until every client has closed. The parent calls
// AfterFork() once all children exist and Cleanup() at the end.
//
// Fanout (harness_fanout.cc) turns the roles round: the server process is
// the one publisher (StartPublisher()), each client process a subscriber
// (Subscribe()); the publisher sends through its FanoutPublisher and every
// subscriber hands what it receives to its own ServerSink until the
// publisher closes.
//
// Thread safety: every object lives in one process and is used by one thread,
// except where a method says otherwise.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/loadgen/frame.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/spec.h"

namespace shmlane::bench {

// The per-run clock boundaries every process reads after the start barrier.
struct RunClock {
  int64_t start_ns = 0;    // clients begin sending (warmup)
  int64_t measure_ns = 0;  // the measurement window opens
  int64_t end_ns = 0;      // the window closes; clients stop
};

// The server's pattern logic, independent of the transport: reads each
// delivered frame's payload (Touch::kRead: the checksum over every byte,
// frame.h) or only counts it (Touch::kNone), counts the frames delivered
// inside the measurement window, decides whether to echo, and for openloop
// records one-way latency from each frame's stamps.
//
// Thread safety: one thread at a time (a multi-threaded server locks).
class ServerSink {
 public:
  // `intended` and `actual` receive openloop latencies; may be null otherwise.
  // Fanout: `actual` receives the one-way latency (from the publisher's send
  // time) of every kFanoutSampleEvery-th frame (spec.h).
  ServerSink(const RunSpec& spec, const RunClock& clock, Histogram* intended, Histogram* actual);

  // Accounts one delivered frame; returns true when it must be echoed back to
  // its sender unchanged (pingpong).
  bool OnFrame(std::span<const std::byte> frame) {
    ++frames_;
    bytes_ += frame.size();
    if (touch_ && !VerifyFrame(frame)) [[unlikely]]
      NoteBadFrame(frame.size());
    if (openloop_) RecordLatency(frame);
    if (fanout_ && (frames_ - 1) % kFanoutSampleEvery == 0) RecordLatency(frame);
    return echo_;
  }

  // Opens and closes the measurement window; call at least once per batch
  // of frames and whenever the loop wakes.
  void Tick(int64_t now_ns);

  // The next time Tick() must run for the window to be accurate, or
  // INT64_MAX once the window has closed.
  int64_t NextBoundaryNs() const;
  bool window_closed() const { return closed_at_ns_ != 0; }

  // Results, valid once the window closed.
  uint64_t window_frames() const { return window_frames_; }
  uint64_t window_bytes() const { return window_bytes_; }
  int64_t window_ns() const { return closed_at_ns_ - opened_at_ns_; }
  uint64_t total_frames() const { return frames_; }
  // Frames whose checksum did not match their contents (Touch::kRead); a
  // run with any fails.
  uint64_t bad_frames() const { return bad_frames_; }
  // Why, for the first one.
  const std::string& first_bad_frame() const { return first_bad_; }
  // Process CPU used inside the window (all threads).
  int64_t cpu_user_ns() const { return cpu_user_ns_; }
  int64_t cpu_sys_ns() const { return cpu_sys_ns_; }
  int64_t voluntary_switches() const { return nvcsw_; }
  int64_t involuntary_switches() const { return nivcsw_; }

 private:
  void RecordLatency(std::span<const std::byte> frame);
  void NoteBadFrame(size_t size);

  RunClock clock_;
  bool echo_;
  bool openloop_;
  bool fanout_;
  bool touch_;
  Histogram* intended_;
  Histogram* actual_;
  uint64_t frames_ = 0;
  uint64_t bytes_ = 0;
  uint64_t bad_frames_ = 0;
  std::string first_bad_;
  uint64_t frames_at_open_ = 0;
  uint64_t bytes_at_open_ = 0;
  uint64_t window_frames_ = 0;
  uint64_t window_bytes_ = 0;
  int64_t opened_at_ns_ = 0;
  int64_t closed_at_ns_ = 0;
  int64_t cpu_user_ns_ = 0;
  int64_t cpu_sys_ns_ = 0;
  int64_t nvcsw_ = 0;
  int64_t nivcsw_ = 0;
};

// One client's connection to the server.
class ClientEndpoint {
 public:
  virtual ~ClientEndpoint() = default;
  // Sends one frame, waiting (per the run's wait mode) while the transport
  // is full. With RunSpec::batch > 1 the endpoint may keep (a copy of) the
  // frame and hand it to the transport together with the next ones: it
  // flushes when it holds `batch` frames or `batch_bytes` bytes, when
  // `more` is false (the sender has nothing else to send now), when the
  // transport would block (shm: ring full), and in Close(). The caller may
  // reuse `frame`'s buffer as soon as Send returns.
  virtual absl::Status Send(std::span<const std::byte> frame, bool more) = 0;
  // Receives one frame (the server's echo) into `buffer`; *length is its size.
  virtual absl::Status Receive(std::span<std::byte> buffer, size_t* length) = 0;
  // One round trip (pingpong): sends `request`, receives the echo into
  // `reply`. Transports with a native call (shm request/reply) override it.
  virtual absl::Status Call(std::span<const std::byte> request, std::span<std::byte> reply,
                            size_t* length) {
    if (absl::Status s = Send(request, /*more=*/false); !s.ok()) return s;
    return Receive(reply, length);
  }
  // Flushes and closes the sending side; the server sees the end of stream.
  virtual absl::Status Close() = 0;
  // Batches handed to the transport so far (writes, publishes, flushing
  // gRPC writes, round trips): frames sent / flushes is the batch a run
  // really got.
  virtual uint64_t flushes() const = 0;
};

// The server side of a run.
class ServerEndpoint {
 public:
  virtual ~ServerEndpoint() = default;
  // Serves until every client has closed its connection or `deadline_ns`
  // passes (an error: some client hung). Calls sink.Tick() often enough to
  // honour sink.NextBoundaryNs().
  virtual absl::Status Serve(ServerSink& sink, int64_t deadline_ns) = 0;

  // Before the start barrier opens: services the transport's control traffic
  // (peers attaching) until `until_ns` or until something happened. Returns
  // false when the transport has nothing to service, and the harness then
  // just waits for the barrier.
  virtual bool ServiceControl(int64_t until_ns) {
    (void)until_ns;
    return false;
  }
};

// Fanout, the publisher's side (the server process): one connection per
// subscriber, or one ring that all of them read.
class FanoutPublisher {
 public:
  virtual ~FanoutPublisher() = default;
  // Before the start barrier: accepts or links subscribers until `until_ns`
  // or until something happened; false when there is nothing to service.
  virtual bool ServiceControl(int64_t until_ns) {
    (void)until_ns;
    return false;
  }
  // After the barrier: waits until every subscriber is linked (the publisher
  // must not send a frame that one of them would not get). DeadlineExceeded
  // says how many are missing.
  virtual absl::Status AwaitSubscribers(int64_t deadline_ns) = 0;
  // Sends one frame to every subscriber, batching as ClientEndpoint::Send
  // does (`more`, RunSpec::batch and batch_bytes) and waiting, per the run's
  // wait mode, for the slowest subscriber while the transport is full.
  virtual absl::Status Send(std::span<const std::byte> frame, bool more) = 0;
  // Flushes and ends every subscriber's stream.
  virtual absl::Status Close() = 0;
  // Batches handed to the transport (one per flush, however many
  // subscribers it went to).
  virtual uint64_t flushes() const = 0;
  // Bytes the publisher copied into the transport: what it passed to write()
  // summed over every subscriber (length prefixes included), what gRPC was
  // given per stream, or what it copied into the shared ring (once).
  virtual uint64_t copied_bytes() const = 0;
};

// Fanout, one subscriber (a client process).
class FanoutSubscriber {
 public:
  virtual ~FanoutSubscriber() = default;
  // Hands every frame to sink.OnFrame() until the publisher has closed and
  // every frame it sent was received, or `deadline_ns` passes (an error).
  // Calls sink.Tick() often enough to honour sink.NextBoundaryNs().
  virtual absl::Status Receive(ServerSink& sink, int64_t deadline_ns) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Parent, before any fork: create what server and clients share (paths,
  // pipes, a daemon and its channels). `workdir` is a fresh private directory.
  virtual absl::Status Prepare(const RunSpec& spec, const std::string& workdir) = 0;
  // Server process: start listening. Clients connect only after this returns.
  virtual absl::StatusOr<std::unique_ptr<ServerEndpoint>> StartServer() = 0;
  // Client process `index` (0-based): connect to the server.
  virtual absl::StatusOr<std::unique_ptr<ClientEndpoint>> Connect(int index) = 0;
  // Fanout (spec.pattern == kFanout), in the server process: start the
  // publisher. Subscribers Subscribe() only after this returns.
  virtual absl::StatusOr<std::unique_ptr<FanoutPublisher>> StartPublisher() {
    return absl::UnimplementedError("this transport has no fanout");
  }
  // Fanout, in client process `index`: subscribe.
  virtual absl::StatusOr<std::unique_ptr<FanoutSubscriber>> Subscribe(int index) {
    (void)index;
    return absl::UnimplementedError("this transport has no fanout");
  }
  // Parent, after every child was forked: drop what only children need.
  virtual void AfterFork() {}
  // Parent, at the end of the run (also after a failure).
  virtual void Cleanup() {}
  // Parent, after a failed run: what might explain it (a daemon's log).
  virtual std::string Diagnostics() { return ""; }
  // A helper process whose resources belong to the run (the daemon), or 0.
  virtual pid_t daemon_pid() const { return 0; }
};

// A transport of the given kind; Unimplemented when it was not built in.
absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(TransportKind kind);

}  // namespace shmlane::bench
