// Frame stamps: the first kFrameStampBytes of a frame carry its intended and
// actual send times (CLOCK_MONOTONIC ns, native byte order: every process of
// a run is on the same machine). Shorter frames carry no stamp.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "bench/loadgen/spec.h"

namespace shmlane::bench {

struct FrameStamps {
  int64_t intended_ns = 0;
  int64_t actual_ns = 0;
};

inline void WriteStamps(std::span<std::byte> frame, const FrameStamps& stamps) {
  if (frame.size() < kFrameStampBytes) return;
  std::memcpy(frame.data(), &stamps.intended_ns, 8);
  std::memcpy(frame.data() + 8, &stamps.actual_ns, 8);
}

// False when the frame is too short to carry stamps.
inline bool ReadStamps(std::span<const std::byte> frame, FrameStamps* stamps) {
  if (frame.size() < kFrameStampBytes) return false;
  std::memcpy(&stamps->intended_ns, frame.data(), 8);
  std::memcpy(&stamps->actual_ns, frame.data() + 8, 8);
  return true;
}

}  // namespace shmlane::bench
