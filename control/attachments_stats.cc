// Attachments, the part that reads the lanes' shared counters: the periodic
// check (draining lanes folded into the channel totals once read, and
// backpressure events), and the stats and metrics snapshots. The counters
// are untrusted data written by the peers. The rest of the class is in
// attachments.cc (resume in attachments_resume.cc, BROADCAST in
// broadcast_attachments.cc).
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "control/attachments.h"

namespace shmlane::control {

namespace v1 = ::shmlane::v1;

// ---------------------------------------------------------------------------
// Counters read from the lanes.

bool Attachments::DoneReading(const dataplane::LaneSnapshot& s) {
  // The writer is closed (the lane is retired), so its tail and counters are
  // final. The reader stores its head before its frame counter (both in
  // PublishHead), hence the second test: both must have caught up.
  return s.consumer_closed != 0 ||
         (s.occupancy_bytes == 0 && s.consumer.frames >= s.producer.frames);
}

void Attachments::CheckBackpressure() {
  for (auto& [name, channel] : channels_) {
    for (auto it = channel.draining.begin(); it != channel.draining.end();) {
      absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(it->second.segment);
      if (snap.ok() && !DoneReading(*snap)) {
        ++it;
        continue;
      }
      Fold(channel, it->second);
      it = channel.draining.erase(it);
      state_changed_ = true;  // the ended totals in the state file are final now
    }
    for (auto& [id, lane] : channel.lanes) {
      absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
      if (!snap.ok()) {
        lane.seen_broken = true;
        continue;
      }
      if (snap->producer.broken != 0 || snap->consumer.broken != 0) lane.seen_broken = true;
      lane.last_seen = CountersOf(lane, &*snap);
      const uint64_t events = snap->producer.backpressure_events;
      const bool rising = events > lane.last_backpressure;
      lane.last_backpressure = events;
      if (rising == lane.in_backpressure) continue;
      lane.in_backpressure = rising;
      v1::Event event;
      event.set_type(rising ? v1::EVENT_TYPE_BACKPRESSURE_STARTED
                            : v1::EVENT_TYPE_BACKPRESSURE_ENDED);
      event.set_channel(name);
      event.set_lane_id(id);
      event.set_attachment_id(lane.client_attachment);
      event.set_detail(absl::StrCat(events, " backpressure events so far"));
      events_->Publish(std::move(event));
    }
  }
}

std::string Attachments::NameOf(uint64_t attachment_id) const {
  auto a = attachments_.find(attachment_id);
  return a == attachments_.end() ? std::string() : a->second.client_name;
}

void Attachments::FillStats(absl::string_view name, bool include_lanes,
                            v1::ChannelStats* out) const {
  auto it = channels_.find(name);
  if (it == channels_.end()) return;
  const LiveChannel& channel = it->second;
  LaneTotals total = channel.retired;
  uint64_t occupancy = 0, capacity = 0;
  auto add = [&](uint64_t id, const Lane& lane, bool draining) {
    absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
    const LaneTotals t = CountersOf(lane, snap.ok() ? &*snap : nullptr);
    total.Add(t);
    const uint64_t occ = snap.ok() ? snap->occupancy_bytes : 0;
    const uint64_t cap = snap.ok() ? snap->ring_bytes : 0;
    if (!draining) {
      occupancy += occ;
      capacity += cap;
    }
    if (!include_lanes) return;
    v1::LaneStats* ls = out->add_lanes();
    ls->set_lane_id(id);
    FillLaneStats(t, ls);
    ls->set_occupancy_bytes(occ);
    ls->set_capacity_bytes(cap);
    ls->set_closed(draining || !snap.ok() || snap->producer_closed != 0 ||
                   snap->consumer_closed != 0 || snap->supervisor_closed_by != 0);
    const bool reply = lane.kind == Lane::Kind::kReply;
    const std::string client = NameOf(lane.client_attachment);
    const std::string server = NameOf(channel.consumer_attachment);
    ls->set_producer_name(reply ? server : client);
    ls->set_consumer_name(reply ? client : server);
  };
  for (const auto& [id, lane] : channel.lanes) add(id, lane, /*draining=*/false);
  for (const auto& [id, lane] : channel.draining) add(id, lane, /*draining=*/true);
  total.Add(FillBroadcastStats(channel, include_lanes, out));
  FillLaneStats(total, out->mutable_total());
  out->mutable_total()->set_occupancy_bytes(occupancy);
  out->mutable_total()->set_capacity_bytes(capacity);
  out->set_live_lanes(static_cast<uint32_t>(channel.lanes.size()));
}

void Attachments::Snapshot(absl::string_view name, bool per_lane,
                           MetricsSnapshot::Channel* c) const {
  auto it = channels_.find(name);
  if (it == channels_.end()) return;
  const LiveChannel& channel = it->second;
  c->totals = channel.retired;
  c->attached_clients = static_cast<uint32_t>(channel.client_attachments.size() +
                                              (channel.consumer_attachment != 0 ? 1 : 0));
  c->live_lanes = static_cast<uint32_t>(channel.lanes.size());
  c->draining_lanes = static_cast<uint32_t>(channel.draining.size());
  if (const Broadcast* b = channel.broadcast.get(); b != nullptr) {
    c->attached_clients += static_cast<uint32_t>(b->subscribers.size() + (b->publisher ? 1 : 0));
  }
  auto add = [&](uint64_t id, const Lane& lane, bool draining) {
    absl::StatusOr<dataplane::LaneSnapshot> snap = dataplane::Observe(lane.segment);
    MetricsSnapshot::Lane l;
    l.lane_id = id;
    l.draining = draining;
    l.counters = CountersOf(lane, snap.ok() ? &*snap : nullptr);
    if (snap.ok() && !draining) {
      l.occupancy_bytes = snap->occupancy_bytes;
      l.capacity_bytes = snap->ring_bytes;
    }
    c->totals.Add(l.counters);
    c->occupancy_bytes += l.occupancy_bytes;
    c->capacity_bytes += l.capacity_bytes;
    if (per_lane) c->lanes.push_back(l);
  };
  for (const auto& [id, lane] : channel.lanes) add(id, lane, /*draining=*/false);
  for (const auto& [id, lane] : channel.draining) add(id, lane, /*draining=*/true);
  SnapshotBroadcast(channel, per_lane, c);
}

}  // namespace shmlane::control
