#include "bench/loadgen/spec.h"

#include <time.h>

#include "absl/strings/str_cat.h"

namespace shmlane::bench {

const char* ToString(TransportKind t) {
  switch (t) {
    case TransportKind::kShm:
      return "shm";
    case TransportKind::kUds:
      return "uds";
    case TransportKind::kPipe:
      return "pipe";
    case TransportKind::kTcp:
      return "tcp";
    case TransportKind::kGrpc:
      return "grpc";
  }
  return "?";
}

const char* ToString(Pattern p) {
  switch (p) {
    case Pattern::kStream:
      return "stream";
    case Pattern::kPingPong:
      return "pingpong";
    case Pattern::kOpenLoop:
      return "openloop";
    case Pattern::kFanout:
      return "fanout";
  }
  return "?";
}

const char* ToString(WaitMode w) {
  switch (w) {
    case WaitMode::kSpin:
      return "spin";
    case WaitMode::kPark:
      return "park";
    case WaitMode::kAdaptive:
      return "adaptive";
    case WaitMode::kBalanced:
      return "balanced";
  }
  return "?";
}

const char* ToString(ClientTiming t) {
  switch (t) {
    case ClientTiming::kSleep:
      return "sleep";
    case ClientTiming::kWait:
      return "wait";
  }
  return "?";
}

std::optional<ClientTiming> ParseClientTiming(std::string_view s) {
  for (ClientTiming t : kAllClientTimings) {
    if (s == ToString(t)) return t;
  }
  return std::nullopt;
}

const char* ToString(Touch t) {
  switch (t) {
    case Touch::kRead:
      return "read";
    case Touch::kNone:
      return "none";
  }
  return "?";
}

std::optional<TransportKind> ParseTransport(std::string_view s) {
  for (TransportKind t : kAllTransports) {
    if (s == ToString(t)) return t;
  }
  return std::nullopt;
}

std::optional<Pattern> ParsePattern(std::string_view s) {
  for (Pattern p : kAllPatterns) {
    if (s == ToString(p)) return p;
  }
  return std::nullopt;
}

std::optional<WaitMode> ParseWaitMode(std::string_view s) {
  for (WaitMode w : kAllWaitModes) {
    if (s == ToString(w)) return w;
  }
  return std::nullopt;
}

std::optional<Touch> ParseTouch(std::string_view s) {
  for (Touch t : kAllTouches) {
    if (s == ToString(t)) return t;
  }
  return std::nullopt;
}

WaitMode DefaultWait(TransportKind t) {
  return t == TransportKind::kShm ? WaitMode::kBalanced : WaitMode::kPark;
}

std::string Label(const RunSpec& spec) {
  return absl::StrCat(
      ToString(spec.transport), "/", ToString(spec.pattern),
      spec.pattern == Pattern::kFanout ? "/s" : "/c", spec.clients, "/f", spec.frame_bytes, "/b",
      spec.batch, spec.touch == Touch::kNone ? "/touch-none" : "",
      spec.pattern == Pattern::kOpenLoop ? absl::StrCat("/r", static_cast<int64_t>(spec.rate))
                                         : std::string(),
      spec.cpu_limit > 0 ? absl::StrCat("/cpu", spec.cpu_limit) : std::string(),
      spec.wait != DefaultWait(spec.transport) ? absl::StrCat("/", ToString(spec.wait))
                                               : std::string());
}

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace shmlane::bench
