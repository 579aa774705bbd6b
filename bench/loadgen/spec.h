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
enum class Pattern { kStream, kPingPong, kOpenLoop };
// How a side that has nothing to do waits: spin on the transport, park in
// the kernel (blocking call, epoll_wait, eventfd), or spin for
// RunSpec::spin and then park.
enum class WaitMode { kSpin, kPark, kAdaptive };

// Every value, in the order --help and the reports list them.
inline constexpr TransportKind kAllTransports[] = {TransportKind::kShm, TransportKind::kUds,
                                                   TransportKind::kPipe, TransportKind::kTcp,
                                                   TransportKind::kGrpc};
inline constexpr Pattern kAllPatterns[] = {Pattern::kStream, Pattern::kPingPong,
                                           Pattern::kOpenLoop};
inline constexpr WaitMode kAllWaitModes[] = {WaitMode::kSpin, WaitMode::kPark, WaitMode::kAdaptive};

inline constexpr int kMaxClients = 512;
// Every frame starts with two timestamps (intended and actual send time,
// CLOCK_MONOTONIC nanoseconds) when it is at least this long.
inline constexpr uint32_t kFrameStampBytes = 16;
inline constexpr uint32_t kMaxFrameBytes = 1u << 20;

struct RunSpec {
  TransportKind transport = TransportKind::kUds;
  Pattern pattern = Pattern::kStream;
  int clients = 1;
  uint32_t frame_bytes = 64;
  absl::Duration duration = absl::Seconds(5);
  absl::Duration warmup = absl::Seconds(1);
  double rate = 100000;  // openloop: frames/s summed over all clients
  WaitMode wait = WaitMode::kAdaptive;
  absl::Duration spin = absl::Microseconds(50);  // adaptive: spin budget before parking
  bool pin = false;                              // pin server and clients to CPUs
  std::string shmlaned;                          // shm: path of the daemon binary
  uint64_t ring_bytes = 0;                       // shm: ring of every lane; 0 = sized from frames
};

const char* ToString(TransportKind t);
const char* ToString(Pattern p);
const char* ToString(WaitMode w);
std::optional<TransportKind> ParseTransport(std::string_view s);
std::optional<Pattern> ParsePattern(std::string_view s);
std::optional<WaitMode> ParseWaitMode(std::string_view s);

// A short label such as "uds/stream/c8/f64".
std::string Label(const RunSpec& spec);

// CLOCK_MONOTONIC in nanoseconds: comparable across the bench's processes.
int64_t NowNs();

}  // namespace shmlane::bench
