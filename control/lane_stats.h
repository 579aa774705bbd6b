// Lane statistics: counters summed over lanes, the snapshot the Prometheus
// exporter reads at scrape time, and the conversion to the API's LaneStats.
// The counters themselves live in each lane's shared memory (written by the
// producer and consumer); the daemon only reads them through its own
// mapping (dataplane::Observe) while holding the Registry's lock.
//
// Thread safety: plain value types and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/broadcast_layout.h"
#include "dataplane/lane.h"
#include "shmlane/v1/control.pb.h"

namespace shmlane::control {

// Counters summed over lanes (live or retired). Latency buckets as in
// dataplane::ConsumerCounters.
struct LaneTotals {
  uint64_t frames_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t frames_received = 0;
  uint64_t bytes_received = 0;
  uint64_t backpressure_events = 0;
  uint64_t dropped_frames = 0;
  uint64_t wakeups = 0;
  // Waiting, per side ([0] producer, [1] consumer): spin time, spins, parks,
  // wake-ups received (dataplane/wait_strategy.h).
  uint64_t spin_ns[2] = {};
  uint64_t spin_waits[2] = {};
  uint64_t parks[2] = {};
  uint64_t wakeups_received[2] = {};
  uint64_t latency_count = 0;
  uint64_t latency_sum_ns = 0;
  uint64_t latency_buckets[dataplane::kLatencyBuckets] = {};
  // Lanes that a side found corrupt (a non-zero broken code).
  uint64_t broken_lanes = 0;

  void Add(const dataplane::LaneSnapshot& snapshot);
  void Add(const LaneTotals& other);
  // Field by field, the larger of this and `other`: what a series that must
  // never go backwards keeps when a peer may rewrite its shared counters.
  void KeepMax(const LaneTotals& other);
};

// BROADCAST counters with no STREAM counterpart, summed over subscribers
// (live and departed) and rings (a channel's ring is recreated when its
// last attachment ends).
struct BroadcastTotals {
  uint64_t lapped_frames = 0;         // frames subscribers missed (overwritten before read)
  uint64_t laps = 0;                  // times a subscriber was lapped
  uint64_t detached_subscribers = 0;  // detached for lag by the publisher (disconnect policy)

  void Add(const BroadcastTotals& other);
  void KeepMax(const BroadcastTotals& other);
};

// The publisher's counters (its ring's WriterCounters) in channel terms:
// frames/bytes sent, backpressure, producer-side parks and wake-ups, broken.
LaneTotals WriterLaneTotals(const dataplane::WriterCounters& writer);

// One subscriber's counters (its cursor page's ReaderCounters), read as
// untrusted data: a subscriber writes its own page and may write anything,
// so no count may exceed what the publisher published (`writer`), and laps
// never exceed lapped frames. Fills the received/consumer-side half of
// `lane` and the broadcast-only counts.
void ClampReaderCounters(const dataplane::ReaderCounters& reader,
                         const dataplane::WriterCounters& writer, LaneTotals* lane,
                         BroadcastTotals* broadcast);

// What the exporter needs, copied under the Registry's lock at scrape time.
struct MetricsSnapshot {
  struct Lane {
    uint64_t lane_id = 0;
    LaneTotals counters;
    uint64_t occupancy_bytes = 0;
    uint64_t capacity_bytes = 0;
    bool draining = false;
  };
  // BROADCAST: one attached subscriber (per-lane metrics only).
  struct Subscriber {
    uint64_t attachment_id = 0;
    uint32_t slot = 0;
    uint64_t lag_bytes = 0;  // bytes published that it has not released, <= ring bytes
    LaneTotals counters;     // the received / consumer-side half
    BroadcastTotals broadcast;
  };
  struct Channel {
    std::string name;
    LaneTotals totals;             // live + draining + retired
    uint64_t occupancy_bytes = 0;  // of live lanes
    uint64_t capacity_bytes = 0;   // of live lanes
    uint32_t attached_clients = 0;
    uint32_t live_lanes = 0;
    uint32_t draining_lanes = 0;  // retired, the reader still consuming them
    std::vector<Lane> lanes;      // live and draining lanes
    // BROADCAST (set once the channel's first ring was created): its
    // publisher and subscribers are in `totals` as well (frames sent =
    // published, frames received = delivered to subscribers).
    bool broadcast = false;
    uint32_t subscribers = 0;                   // attached now
    uint64_t max_lag_bytes = 0;                 // the slowest attached subscriber's lag
    BroadcastTotals broadcast_totals;           // live and departed subscribers
    std::vector<Subscriber> subscriber_series;  // with per-lane metrics only
  };
  std::vector<Channel> channels;
};

// The p-quantile (0 < q < 1) of a latency histogram as the upper bound of the
// bucket that holds it, in nanoseconds; 0 when there are no samples.
uint64_t LatencyQuantileNs(const uint64_t (&buckets)[dataplane::kLatencyBuckets], double q);

// Copies `totals` into the API message (counters and p50/p90/p99); leaves
// occupancy, capacity and the lane's identity to the caller.
void FillLaneStats(const LaneTotals& totals, shmlane::v1::LaneStats* out);

}  // namespace shmlane::control
