#include "bench/loadgen/transport.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "bench/loadgen/frame.h"
#include "bench/loadgen/sys.h"

namespace shmlane::bench {

ServerSink::ServerSink(const RunSpec& spec, const RunClock& clock, Histogram* intended,
                       Histogram* actual)
    : clock_(clock),
      echo_(spec.pattern == Pattern::kPingPong),
      openloop_(spec.pattern == Pattern::kOpenLoop),
      fanout_(spec.pattern == Pattern::kFanout),
      touch_(spec.touch == Touch::kRead),
      intended_(intended),
      actual_(actual) {}

void ServerSink::NoteBadFrame(size_t size) {
  if (bad_frames_++ == 0) {
    first_bad_ = absl::StrCat("frame ", frames_, " (", size, " bytes) does not match its checksum");
  }
}

void ServerSink::RecordLatency(std::span<const std::byte> frame) {
  FrameStamps stamps;
  if (!ReadStamps(frame, &stamps)) return;
  // Only frames scheduled inside the window count, so that warmup frames
  // delivered late do not pollute it.
  if (stamps.intended_ns < clock_.measure_ns || stamps.intended_ns >= clock_.end_ns) return;
  const int64_t now = NowNs();
  if (intended_ != nullptr)
    intended_->Record(static_cast<uint64_t>(std::max<int64_t>(0, now - stamps.intended_ns)));
  if (actual_ != nullptr)
    actual_->Record(static_cast<uint64_t>(std::max<int64_t>(0, now - stamps.actual_ns)));
}

void ServerSink::Tick(int64_t now_ns) {
  if (opened_at_ns_ == 0 && now_ns >= clock_.measure_ns) {
    opened_at_ns_ = now_ns;
    frames_at_open_ = frames_;
    bytes_at_open_ = bytes_;
    const CpuUsage u = SelfUsage();
    cpu_user_ns_ = -u.user_ns;
    cpu_sys_ns_ = -u.sys_ns;
    nvcsw_ = -u.voluntary_switches;
    nivcsw_ = -u.involuntary_switches;
  }
  if (opened_at_ns_ != 0 && closed_at_ns_ == 0 && now_ns >= clock_.end_ns) {
    closed_at_ns_ = now_ns;
    window_frames_ = frames_ - frames_at_open_;
    window_bytes_ = bytes_ - bytes_at_open_;
    const CpuUsage u = SelfUsage();
    cpu_user_ns_ += u.user_ns;
    cpu_sys_ns_ += u.sys_ns;
    nvcsw_ += u.voluntary_switches;
    nivcsw_ += u.involuntary_switches;
  }
}

int64_t ServerSink::NextBoundaryNs() const {
  if (opened_at_ns_ == 0) return clock_.measure_ns;
  if (closed_at_ns_ == 0) return clock_.end_ns;
  return std::numeric_limits<int64_t>::max();
}

}  // namespace shmlane::bench
