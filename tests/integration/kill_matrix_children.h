// The kill matrix's children (kill_matrix_test.cc): the producer and
// consumer processes, the checked frames they exchange, and the shared page
// through which they and the parent talk (one writer per slot).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/dataplane/process_util.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing::kill_matrix {

using dataplane::testing::Shared;

// Consumer kills run on a durable STREAM channel (the lanes outlive their
// consumer; ChannelSpec.durable, Consumer::Peek/Release, Frame::position).
inline constexpr bool kKillConsumers = true;
inline constexpr int kProducers = 8;
inline constexpr char kChannel[] = "kill";
inline const std::vector<std::string> kDaemonFlags = {"--resume-grace=20s"};
// How long a producer's Write may block: far beyond any pause a round makes,
// so that kTimeout means a hang, not a slow round.
inline constexpr absl::Duration kWriteDeadline = absl::Seconds(20);
// The bound on every "should happen soon" wait of the parent.
inline constexpr absl::Duration kBound = absl::Seconds(10);

// ---------------------------------------------------------------------------
// The page the parent maps before forking: commands down, figures up. Each
// slot has one writer.

namespace slot {
// Parent -> children.
inline constexpr int kStop = 0;            // 1: children exit 0
inline constexpr int kPauseConsumer = 1;   // 1: the consumer stops reading
inline constexpr int kPauseProducers = 2;  // 1: producers stop writing
inline constexpr int kStallReset = 3;      // bumped: the consumer restarts its max-gap figure
// Consumer -> parent.
inline constexpr int kConsumerReady = 10;   // consumer incarnation + 1, once attached
inline constexpr int kConsumerPaused = 11;  // 1 while paused
inline constexpr int kConsumerFailed = 12;  // 1: it printed why and exits
inline constexpr int kFramesChecked = 13;   // frames checked, all consumer incarnations
inline constexpr int kDuplicates = 14;      // frames delivered twice (after a consumer restart)
inline constexpr int kStallResetSeen = 15;  // the kStallReset value it last applied
inline constexpr int kMaxGapNs = 16;        // longest gap between frames since then
inline constexpr int kFirstFrameNs = 17;    // CLOCK_MONOTONIC of its incarnation's first frame
inline constexpr int kConsumerIncarnation = 18;  // parent -> consumer: which one it is
// Per producer i: base + i * kStride.
inline constexpr int kStride = 16;
inline constexpr int ProducerBase(int i) { return 64 + i * kStride; }
// Producer i -> parent.
inline constexpr int Incarnation(int i) { return ProducerBase(i) + 0; }  // parent -> producer
inline constexpr int Ready(int i) { return ProducerBase(i) + 1; }        // incarnation + 1
inline constexpr int Committed(int i) { return ProducerBase(i) + 2; }    // frames committed
inline constexpr int Paused(int i) { return ProducerBase(i) + 3; }  // incarnation + 1 while paused
inline constexpr int LaneId(int i) { return ProducerBase(i) + 4; }  // its lane
inline constexpr int ProducerFailed(int i) { return ProducerBase(i) + 5; }
// Consumer's view of producer i -> parent.
inline constexpr int Seen(int i) { return ProducerBase(i) + 6; }  // Pack(inc, next seq)
inline constexpr int Live(int i) { return ProducerBase(i) + 7; }  // bit inc % 64 per live lane
inline constexpr int DeathSeen(int i) {
  return ProducerBase(i) + 8;
}  // Pack(inc, next seq) at death
inline constexpr int DeathLane(int i) { return ProducerBase(i) + 9; }  // the dead lane's id
inline constexpr int Intent(int i) { return ProducerBase(i) + 10; }  // Pack(inc, seq+1) to release
inline constexpr int IntentPos(int i) { return ProducerBase(i) + 11; }  // its position
inline constexpr int Released(int i) { return ProducerBase(i) + 12; }   // Pack(inc, seq+1) released
inline constexpr int ReleasedLane(int i) { return ProducerBase(i) + 13; }  // lane of the above
}  // namespace slot

static_assert(slot::ProducerBase(kProducers) <= 512);

inline uint64_t Pack(uint64_t incarnation, uint64_t n) { return (incarnation << 40) | n; }
inline uint64_t IncOf(uint64_t packed) { return packed >> 40; }
inline uint64_t NOf(uint64_t packed) { return packed & ((uint64_t{1} << 40) - 1); }

// Producer i, incarnation `inc` (its exit code: 0, or why it failed).
int ProducerMain(const TestDaemon& d, Shared* sh, int i, uint32_t inc);
// The consumer, incarnation `inc`: checks every frame.
int ConsumerMain(const TestDaemon& d, Shared* sh, uint32_t inc);

}  // namespace shmlane::testing::kill_matrix
