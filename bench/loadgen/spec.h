// RunSpec: what one benchmark run measures, and the names the command line,
// the JSON output and the suites use for its parts.
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace shmlane::bench {

enum class TransportKind { kShm, kUds, kPipe, kTcp, kGrpc };
// kFanout: one publisher process writes every frame to `clients`
// subscriber processes (shm: one BROADCAST ring read in place by all; the
// kernel transports: the publisher writes each batch to N sockets or pipes;
// grpc: one server stream per subscriber). RunSpec::clients is then the
// number of subscribers (--subscribers).
enum class Pattern { kStream, kPingPong, kOpenLoop, kFanout };
// How a side that has nothing to do waits: spin on the transport, park in
// the kernel (blocking call, epoll_wait, eventfd), or spin for
// RunSpec::spin and then park. For shm these are the channel's wait
// preferences (dataplane/wait_strategy.h): adaptive = latency (spin up to
// --spin, then park), park = efficiency, balanced = balanced (the library's
// default: spin only when it pays, never under CPU pressure; shm only); spin
// = the bench busy-polls the endpoint itself.
enum class WaitMode { kSpin, kPark, kAdaptive, kBalanced };
// How an openloop client waits for each frame's send time: kSleep sleeps
// (clock_nanosleep to the send time, no spin), so that every transport's
// clients cost the same; kWait waits as RunSpec::wait says (adaptive: sleep
// until `spin` before, then spin), as runs before this mode existed did.
enum class ClientTiming { kSleep, kWait };
// What the server does with each delivered frame: kRead reads every payload
// byte once (a checksum over 8-byte words, compared with the one the sender
// put in the frame: equal work at every receiver, and a transport that
// delivers garbage fails the run); kNone only counts frames (the zero-copy
// ceiling, never a headline figure).
enum class Touch { kRead, kNone };

// Every value, in the order --help and the reports list them.
inline constexpr TransportKind kAllTransports[] = {TransportKind::kShm, TransportKind::kUds,
                                                   TransportKind::kPipe, TransportKind::kTcp,
                                                   TransportKind::kGrpc};
inline constexpr Pattern kAllPatterns[] = {Pattern::kStream, Pattern::kPingPong, Pattern::kOpenLoop,
                                           Pattern::kFanout};
inline constexpr WaitMode kAllWaitModes[] = {WaitMode::kSpin, WaitMode::kPark, WaitMode::kAdaptive,
                                             WaitMode::kBalanced};
inline constexpr ClientTiming kAllClientTimings[] = {ClientTiming::kSleep, ClientTiming::kWait};
inline constexpr Touch kAllTouches[] = {Touch::kRead, Touch::kNone};

inline constexpr int kMaxClients = 512;
// Every frame starts with two timestamps (intended and actual send time,
// CLOCK_MONOTONIC nanoseconds) when it is at least this long.
inline constexpr uint32_t kFrameStampBytes = 16;
// With Touch::kRead, bytes [16, 24) carry the frame's checksum and [24, 32)
// (when the frame is that long) the sender's sequence number (frame.h).
inline constexpr uint32_t kFrameChecksumOffset = 16;
inline constexpr uint32_t kFrameMinTouchBytes = 24;
inline constexpr uint32_t kMaxFrameBytes = 1u << 20;
// Batching: at most this many frames per write / publish.
inline constexpr int kMaxBatch = 1024;
inline constexpr uint64_t kDefaultBatchBytes = uint64_t{1} << 20;

struct RunSpec {
  TransportKind transport = TransportKind::kUds;
  Pattern pattern = Pattern::kStream;
  int clients = 1;  // client processes; fanout: subscriber processes
  uint32_t frame_bytes = 64;
  absl::Duration duration = absl::Seconds(5);
  absl::Duration warmup = absl::Seconds(1);
  double rate = 100000;  // openloop: frames/s summed over all clients
  WaitMode wait = WaitMode::kAdaptive;
  absl::Duration spin = absl::Microseconds(50);  // adaptive: spin budget before parking
  bool pin = false;                              // pin server and clients to CPUs
  std::string shmlaned;                          // shm: path of the daemon binary
  uint64_t ring_bytes = 0;                       // shm: ring of every lane; 0 = sized from frames
  // Client-side batching (stream, openloop; pingpong never batches): a
  // client hands the transport up to `batch` frames, and at most
  // `batch_bytes` bytes (a larger frame goes alone), at once: one write()
  // of a user-space buffer for the kernel transports, one release store
  // (deferred publish) for shm, `batch` - 1 buffered gRPC writes and a
  // flushing one. A batch also ends early when the sender has nothing more
  // to send right now (openloop on schedule, the end of the run) and, for
  // shm, when the ring is full. 1 = one write per frame.
  int batch = 1;
  uint64_t batch_bytes = kDefaultBatchBytes;
  Touch touch = Touch::kRead;
  ClientTiming client_timing = ClientTiming::kSleep;  // openloop clients
  // > 0: server, clients and daemon run in a fresh cgroup with a CFS quota
  // of this many CPUs (bench/loadgen/cgroup.h).
  double cpu_limit = 0;
};

const char* ToString(TransportKind t);
const char* ToString(Pattern p);
const char* ToString(WaitMode w);
const char* ToString(Touch t);
const char* ToString(ClientTiming t);
std::optional<TransportKind> ParseTransport(std::string_view s);
std::optional<Pattern> ParsePattern(std::string_view s);
std::optional<WaitMode> ParseWaitMode(std::string_view s);
std::optional<Touch> ParseTouch(std::string_view s);
std::optional<ClientTiming> ParseClientTiming(std::string_view s);

// The wait mode a comparison uses when --wait is not given: blocking calls
// for the kernel transports and gRPC (what socket programs do), the
// library's default (balanced) for shm.
WaitMode DefaultWait(TransportKind t);

// Fanout: the publisher stamps frames with a fresh clock reading every
// kFanoutSampleEvery frames (those whose sequence number is a multiple),
// and every subscriber records the one-way latency of those frames.
inline constexpr uint64_t kFanoutSampleEvery = 16;

// A short label such as "uds/stream/c8/f64/b64" or "shm/fanout/s8/f64/b64"
// (s: subscribers) ("/touch-none" appended
// for a counting-only receiver; "/r20000" for openloop, "/cpu0.5" under a
// CPU limit, "/adaptive" for a wait mode other than the transport's default).
std::string Label(const RunSpec& spec);

// CLOCK_MONOTONIC in nanoseconds: comparable across the bench's processes.
int64_t NowNs();

}  // namespace shmlane::bench
