#include "control/lane_stats.h"

#include <algorithm>
#include <cmath>

#include "google/protobuf/util/time_util.h"

namespace shmlane::control {

void LaneTotals::Add(const dataplane::LaneSnapshot& s) {
  frames_sent += s.producer.frames;
  bytes_sent += s.producer.bytes;
  frames_received += s.consumer.frames;
  bytes_received += s.consumer.bytes;
  backpressure_events += s.producer.backpressure_events;
  dropped_frames += s.producer.dropped_frames;
  wakeups += s.producer.wakeups_sent + s.consumer.wakeups_sent;
  spin_ns[0] += s.producer.spin_ns;
  spin_ns[1] += s.consumer.spin_ns;
  spin_waits[0] += s.producer.spin_waits;
  spin_waits[1] += s.consumer.spin_waits;
  parks[0] += s.producer.full_waits;
  parks[1] += s.consumer.empty_waits;
  wakeups_received[0] += s.producer.wakeups_received;
  wakeups_received[1] += s.consumer.wakeups_received;
  latency_count += s.consumer.latency_count;
  latency_sum_ns += s.consumer.latency_sum_ns;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    latency_buckets[i] += s.consumer.latency_buckets[i];
  }
  if (s.producer.broken != 0 || s.consumer.broken != 0) ++broken_lanes;
}

void LaneTotals::Add(const LaneTotals& o) {
  frames_sent += o.frames_sent;
  bytes_sent += o.bytes_sent;
  frames_received += o.frames_received;
  bytes_received += o.bytes_received;
  backpressure_events += o.backpressure_events;
  dropped_frames += o.dropped_frames;
  wakeups += o.wakeups;
  for (int i = 0; i < 2; ++i) {
    spin_ns[i] += o.spin_ns[i];
    spin_waits[i] += o.spin_waits[i];
    parks[i] += o.parks[i];
    wakeups_received[i] += o.wakeups_received[i];
  }
  latency_count += o.latency_count;
  latency_sum_ns += o.latency_sum_ns;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    latency_buckets[i] += o.latency_buckets[i];
  }
  broken_lanes += o.broken_lanes;
}

void LaneTotals::KeepMax(const LaneTotals& o) {
  auto keep = [](uint64_t& mine, uint64_t theirs) { mine = std::max(mine, theirs); };
  keep(frames_sent, o.frames_sent);
  keep(bytes_sent, o.bytes_sent);
  keep(frames_received, o.frames_received);
  keep(bytes_received, o.bytes_received);
  keep(backpressure_events, o.backpressure_events);
  keep(dropped_frames, o.dropped_frames);
  keep(wakeups, o.wakeups);
  for (int i = 0; i < 2; ++i) {
    keep(spin_ns[i], o.spin_ns[i]);
    keep(spin_waits[i], o.spin_waits[i]);
    keep(parks[i], o.parks[i]);
    keep(wakeups_received[i], o.wakeups_received[i]);
  }
  keep(latency_count, o.latency_count);
  keep(latency_sum_ns, o.latency_sum_ns);
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    keep(latency_buckets[i], o.latency_buckets[i]);
  }
  keep(broken_lanes, o.broken_lanes);
}

void BroadcastTotals::Add(const BroadcastTotals& o) {
  lapped_frames += o.lapped_frames;
  laps += o.laps;
  detached_subscribers += o.detached_subscribers;
}

void BroadcastTotals::KeepMax(const BroadcastTotals& o) {
  lapped_frames = std::max(lapped_frames, o.lapped_frames);
  laps = std::max(laps, o.laps);
  detached_subscribers = std::max(detached_subscribers, o.detached_subscribers);
}

LaneTotals WriterLaneTotals(const dataplane::WriterCounters& w) {
  LaneTotals t;
  t.frames_sent = w.frames;
  t.bytes_sent = w.bytes;
  t.backpressure_events = w.backpressure_events;
  t.wakeups = w.wakeups_sent;
  t.parks[0] = w.full_waits;
  t.wakeups_received[0] = w.wakeups_received;
  t.broken_lanes = w.broken != 0 ? 1 : 0;
  return t;
}

void ClampReaderCounters(const dataplane::ReaderCounters& r, const dataplane::WriterCounters& w,
                         LaneTotals* lane, BroadcastTotals* broadcast) {
  // Every frame a subscriber saw or missed was published first; a count
  // above the publisher's is garbage (or a torn read) and is cut down to it.
  // Waits and wake-ups have no such bound: they are capped at 2^48 so that
  // summing a few hundred subscribers cannot wrap.
  constexpr uint64_t kMaxEvents = uint64_t{1} << 48;
  const uint64_t frames = std::min(r.frames, w.frames);
  lane->frames_received = frames;
  lane->bytes_received = std::min(r.bytes, w.bytes);
  lane->parks[1] = std::min(r.empty_waits, kMaxEvents);
  lane->wakeups = std::min(r.wakeups_sent, kMaxEvents);
  lane->wakeups_received[1] = std::min(r.wakeups_received, kMaxEvents);
  uint64_t sampled = 0;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    lane->latency_buckets[i] = std::min(r.latency_buckets[i], frames - std::min(frames, sampled));
    sampled += lane->latency_buckets[i];
  }
  lane->latency_count = sampled;
  // At most an hour per sampled frame.
  constexpr uint64_t kHourNs = 3'600'000'000'000ULL;
  lane->latency_sum_ns = sampled > UINT64_MAX / kHourNs
                             ? r.latency_sum_ns
                             : std::min(r.latency_sum_ns, sampled * kHourNs);
  lane->broken_lanes = r.broken != 0 ? 1 : 0;
  broadcast->lapped_frames = std::min(r.lapped_frames, w.frames);
  broadcast->laps = std::min(r.laps, broadcast->lapped_frames);
  broadcast->detached_subscribers = 0;
}

uint64_t LatencyQuantileNs(const uint64_t (&buckets)[dataplane::kLatencyBuckets], double q) {
  uint64_t total = 0;
  for (uint64_t b : buckets) total += b;
  if (total == 0) return 0;
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  uint64_t seen = 0;
  for (uint32_t i = 0; i < dataplane::kLatencyBuckets; ++i) {
    seen += buckets[i];
    if (seen >= rank && seen > 0) {
      // The open-ended last bucket reports its lower bound.
      return i + 1 >= dataplane::kLatencyBuckets ? dataplane::LatencyBucketUpperNs(i - 1)
                                                 : dataplane::LatencyBucketUpperNs(i);
    }
  }
  return dataplane::LatencyBucketUpperNs(dataplane::kLatencyBuckets - 2);
}

void FillLaneStats(const LaneTotals& t, shmlane::v1::LaneStats* out) {
  using google::protobuf::util::TimeUtil;
  out->set_frames_sent(t.frames_sent);
  out->set_bytes_sent(t.bytes_sent);
  out->set_frames_received(t.frames_received);
  out->set_bytes_received(t.bytes_received);
  out->set_backpressure_events(t.backpressure_events);
  out->set_dropped_frames(t.dropped_frames);
  out->set_wakeups(t.wakeups);
  *out->mutable_spin_time() =
      TimeUtil::NanosecondsToDuration(static_cast<int64_t>(t.spin_ns[0] + t.spin_ns[1]));
  out->set_spin_waits(t.spin_waits[0] + t.spin_waits[1]);
  out->set_parks(t.parks[0] + t.parks[1]);
  out->set_wakeups_received(t.wakeups_received[0] + t.wakeups_received[1]);
  out->set_latency_samples(t.latency_count);
  *out->mutable_latency_p50() = TimeUtil::NanosecondsToDuration(
      static_cast<int64_t>(LatencyQuantileNs(t.latency_buckets, 0.5)));
  *out->mutable_latency_p90() = TimeUtil::NanosecondsToDuration(
      static_cast<int64_t>(LatencyQuantileNs(t.latency_buckets, 0.9)));
  *out->mutable_latency_p99() = TimeUtil::NanosecondsToDuration(
      static_cast<int64_t>(LatencyQuantileNs(t.latency_buckets, 0.99)));
}

}  // namespace shmlane::control
