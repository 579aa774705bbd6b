// The BROADCAST half of Attachments (see attachments.h): one ring, one
// publisher and up to max_subscribers subscribers per channel. Kept apart
// from the STREAM / REQUEST_REPLY lane bookkeeping in attachments.cc.
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "control/attach_wire.h"
#include "control/attachments.h"
#include "google/protobuf/util/time_util.h"
#include "shmlane/enum_names.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

}  // namespace
// ---------------------------------------------------------------------------
// BROADCAST channels: one ring, one publisher, up to max_subscribers
// subscribers, each with its own reader slot, cursor page and two bells.

void Attachments::CloseBroadcast(Broadcast& b, uint32_t reason) {
  std::vector<const dataplane::Doorbell*> bells;
  bells.reserve(b.subscribers.size());
  for (const auto& [slot, sub] : b.subscribers) bells.push_back(sub.reader_bell.get());
  dataplane::SupervisorCloseBroadcast(b.ring, reason, b.writer_bell.get(), bells);
  b.closed = true;
}

absl::Status Attachments::DescribeSubscriber(const v1::ChannelSpec& spec, uint32_t slot,
                                             const Subscriber& sub, v1::BroadcastDescription* out,
                                             std::vector<dataplane::UniqueFd>* fds,
                                             OutboundHolds* holds) {
  absl::StatusOr<dataplane::UniqueFd> page = sub.page.DupFd();
  if (!page.ok()) return page.status();
  absl::StatusOr<dataplane::UniqueFd> reader = sub.reader_bell->DupFd();
  if (!reader.ok()) return reader.status();
  absl::StatusOr<dataplane::UniqueFd> writer = sub.writer_bell->DupFd();
  if (!writer.ok()) return writer.status();
  out->set_has_slot(true);
  out->set_slot(slot);
  out->set_page_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(page));
  holds->push_back(sub.charge);  // the page's memfd copy keeps it charged
  out->set_reader_bell_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(reader));
  out->set_writer_bell_fd_index(static_cast<uint32_t>(fds->size()));
  fds->push_back(*std::move(writer));
  out->set_ring_bytes(spec.ring_bytes());
  out->set_max_frame_bytes(spec.max_frame_bytes());
  out->set_policy(spec.slow_subscriber_policy());
  out->set_history_frames(spec.history_frames());
  out->set_subscriber_attachment_id(sub.attachment);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Attachments::AttachBroadcast(const ChannelRecord& record,
                                                      LiveChannel& channel, Attachment attachment) {
  const v1::ChannelSpec& spec = record.spec;
  if (channel.broadcast == nullptr) {
    // The first attachment (publisher or subscriber) creates the ring, so
    // subscribers may come first and a publisher finds them linked.
    dataplane::BroadcastOptions options = BroadcastOptionsFor(spec);
    options.channel_id = next_attachment_id_;
    absl::StatusOr<dataplane::Segment> ring = dataplane::CreateBroadcastRing(options);
    if (!ring.ok()) return ring.status();
    absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Create();
    if (!bell.ok()) return bell.status();
    auto b = std::make_unique<Broadcast>();
    b->ring = *std::move(ring);
    b->writer_bell = std::make_shared<dataplane::Doorbell>(*std::move(bell));
    b->charge = ledger_->Charge(record.owner_uid, BroadcastRingBytes(spec));
    channel.broadcast = std::move(b);
    channel.broadcast_seen = true;
  }
  Broadcast& b = *channel.broadcast;
  const bool publisher = attachment.role == v1::ROLE_PUBLISHER;
  v1::AttachMessage reply_message;
  v1::AttachReply* reply = reply_message.mutable_attach_reply();
  std::vector<dataplane::UniqueFd> fds;
  OutboundHolds holds;
  reply->set_code(0);
  reply->set_attachment_id(attachment.id);
  reply->set_max_frame_bytes(spec.max_frame_bytes());
  reply->set_ring_bytes(spec.ring_bytes());
  // How its blocked calls wait, as for STREAM endpoints (ResolveWait).
  reply->set_wait_preference(spec.wait_preference());
  v1::BroadcastDescription* ring_desc = reply->mutable_broadcast();
  ring_desc->set_ring_bytes(spec.ring_bytes());
  ring_desc->set_max_frame_bytes(spec.max_frame_bytes());
  ring_desc->set_policy(spec.slow_subscriber_policy());
  ring_desc->set_history_frames(spec.history_frames());
  struct Later {
    v1::AttachMessage message;
    std::vector<dataplane::UniqueFd> fds;
    OutboundHolds holds;
  };
  std::vector<Later> more;
  std::optional<Subscriber> added;
  uint32_t added_slot = 0;
  if (publisher) {
    // Own bell (where it parks on a full ring), the ring read-write, then
    // page, reader bell and writer bell per subscriber.
    absl::StatusOr<dataplane::UniqueFd> own = b.writer_bell->DupFd();
    if (!own.ok()) return own.status();
    reply->set_doorbell_fd_index(0);
    fds.push_back(*std::move(own));
    absl::StatusOr<dataplane::UniqueFd> ring = b.ring.DupFd();
    if (!ring.ok()) return ring.status();
    ring_desc->set_has_ring(true);
    ring_desc->set_ring_fd_index(1);
    fds.push_back(*std::move(ring));
    holds.push_back(b.charge);
    v1::AttachMessage* packet = &reply_message;
    std::vector<dataplane::UniqueFd>* packet_fds = &fds;
    OutboundHolds* packet_holds = &holds;
    for (const auto& [slot, sub] : b.subscribers) {
      if (packet_fds->size() + 3 > kMaxFdsPerPacket) {
        more.emplace_back();
        packet = &more.back().message;
        packet_fds = &more.back().fds;
        packet_holds = &more.back().holds;
        packet->mutable_subscriber_added();
      }
      v1::BroadcastDescription* d = packet == &reply_message
                                        ? reply->add_subscribers()
                                        : packet->mutable_subscriber_added()->add_subscribers();
      if (absl::Status s = DescribeSubscriber(spec, slot, sub, d, packet_fds, packet_holds);
          !s.ok()) {
        return s;
      }
      d->set_subscriber_name(NameOf(sub.attachment));
    }
  } else {
    uint32_t slot = 0;
    while (b.subscribers.count(slot) != 0) ++slot;  // CheckRoom: slot < max_subscribers
    absl::StatusOr<dataplane::Segment> page = dataplane::CreateReaderPage(b.ring, slot);
    if (!page.ok()) return page.status();
    absl::StatusOr<dataplane::Doorbell> reader_bell = dataplane::Doorbell::Create();
    if (!reader_bell.ok()) return reader_bell.status();
    absl::StatusOr<dataplane::Doorbell> writer_bell = dataplane::Doorbell::Create();
    if (!writer_bell.ok()) return writer_bell.status();
    absl::StatusOr<dataplane::UniqueFd> ring = dataplane::ReopenReadOnly(b.ring);
    if (!ring.ok()) return ring.status();
    Subscriber sub;
    sub.attachment = attachment.id;
    sub.page = *std::move(page);
    sub.reader_bell = std::make_shared<dataplane::Doorbell>(*std::move(reader_bell));
    sub.writer_bell = std::make_shared<dataplane::Doorbell>(*std::move(writer_bell));
    sub.charge = ledger_->Charge(attachment.peer.uid, dataplane::kReaderPageBytes);
    // Ring read-only, then page, its own (reader) bell and the writer bell.
    ring_desc->set_has_ring(true);
    ring_desc->set_ring_fd_index(0);
    fds.push_back(*std::move(ring));
    holds.push_back(b.charge);
    if (absl::Status s = DescribeSubscriber(spec, slot, sub, ring_desc, &fds, &holds); !s.ok()) {
      return s;
    }
    reply->set_doorbell_fd_index(ring_desc->reader_bell_fd_index());
    // Last, so that nothing above can fail with the slot active.
    absl::StatusOr<uint64_t> epoch = dataplane::ActivateReaderSlot(b.ring, slot);
    if (!epoch.ok()) return epoch.status();
    attachment.slot = slot;
    added_slot = slot;
    added = std::move(sub);
  }
  ++next_attachment_id_;
  if (publisher) {
    b.publisher = attachment.id;
  } else {
    b.subscribers.emplace(added_slot, *std::move(added));
  }
  auto [it, inserted] = attachments_.emplace(attachment.id, std::move(attachment));
  const Attachment& stored = it->second;
  Send(stored, reply_message, std::move(fds), std::move(holds));
  for (Later& later : more) {
    Send(stored, later.message, std::move(later.fds), std::move(later.holds));
  }
  if (!publisher && b.publisher != 0) {
    // Tell the publisher: it links the slot (AddReader).
    const Attachment& pub = attachments_.at(b.publisher);
    v1::AttachMessage message;
    std::vector<dataplane::UniqueFd> pub_fds;
    OutboundHolds pub_holds;
    v1::BroadcastDescription* d = message.mutable_subscriber_added()->add_subscribers();
    if (DescribeSubscriber(spec, added_slot, b.subscribers.at(added_slot), d, &pub_fds, &pub_holds)
            .ok()) {
      d->set_subscriber_name(stored.client_name);
      Send(pub, message, std::move(pub_fds), std::move(pub_holds));
    } else {
      ::shutdown(pub.fd, SHUT_RDWR);  // it could not learn of a subscriber: end it
    }
  }
  metrics_->CountAttach("ok");
  Publish(v1::EVENT_TYPE_ATTACHED, stored.channel, &stored,
          absl::StrCat(ShortName(stored.role), " attached"));
  return stored.id;
}

void Attachments::EndBroadcastAttachment(const std::string& name, LiveChannel& channel,
                                         const Attachment& attachment, absl::string_view why,
                                         bool holder_alive) {
  Broadcast* b = channel.broadcast.get();
  if (b == nullptr) return;
  if (attachment.role == v1::ROLE_SUBSCRIBER) {
    auto sub = b->subscribers.find(attachment.slot);
    if (sub == b->subscribers.end() || sub->second.attachment != attachment.id) return;
    if (!b->closed) {
      // At once: a BLOCK publisher no longer waits for it.
      (void)dataplane::ReleaseReaderSlot(b->ring, attachment.slot, b->writer_bell.get(),
                                         sub->second.reader_bell.get());
    }
    FoldSubscriber(channel, *b, sub->second);
    b->subscribers.erase(sub);
    if (auto pub = attachments_.find(b->publisher); pub != attachments_.end()) {
      v1::AttachMessage message;
      v1::SubscriberRemoved* removed = message.mutable_subscriber_removed();
      removed->set_slot(attachment.slot);
      removed->set_subscriber_attachment_id(attachment.id);
      removed->set_reason(std::string(why));
      Send(pub->second, message);
    }
  } else if (b->publisher == attachment.id) {
    b->publisher = 0;
    // Subscribers read what was committed, then see closed. A publisher the
    // daemon ends while it lives is woken too (kClosedDeleted).
    CloseBroadcast(*b,
                   dataplane::kClosedProducerGone | (holder_alive ? dataplane::kClosedDeleted : 0));
    std::vector<uint64_t> subs;
    for (const auto& [slot, sub] : b->subscribers) subs.push_back(sub.attachment);
    const std::string bye = absl::StrCat("the publisher of channel \"", name, "\" went away (", why,
                                         "); read what is left, then attach again");
    for (uint64_t id : subs) {
      EndAttachment(id, v1::EVENT_TYPE_DETACHED, "publisher gone", bye, /*holder_alive=*/true);
    }
    // EndAttachment may have changed `channel.broadcast`; look again.
    if (channel.broadcast != nullptr) {
      for (const auto& [slot, sub] : channel.broadcast->subscribers) {
        FoldSubscriber(channel, *channel.broadcast, sub);
      }
      channel.broadcast->subscribers.clear();
    }
  }
  if (channel.broadcast != nullptr && channel.broadcast->publisher == 0 &&
      channel.broadcast->subscribers.empty()) {
    FoldRing(channel, *channel.broadcast);
    channel.broadcast.reset();  // the next attachment creates a fresh ring
  }
}

// ---------------------------------------------------------------------------
// BROADCAST read side: counters from the ring (publisher) and the cursor
// pages (subscribers), for metrics and stats. Both are written by attached
// processes, so both are untrusted: clamped, and never allowed to go
// backwards (the largest value seen is kept).

LaneTotals Attachments::SampleWriter(const Broadcast& b, dataplane::WriterCounters* raw) {
  absl::StatusOr<dataplane::BroadcastSnapshot> snap = dataplane::ObserveBroadcast(b.ring);
  if (snap.ok()) {
    b.writer_seen.KeepMax(WriterLaneTotals(snap->writer));
    b.detached_seen = std::max(b.detached_seen, snap->writer.readers_detached);
  } else {
    b.writer_seen.broken_lanes = 1;  // its header stopped validating
  }
  // The bound for subscribers' counts: what the publisher is known to have
  // published (the kept maximum, so a publisher that rewinds its counters
  // cannot make subscribers' totals drop either).
  *raw = dataplane::WriterCounters{};
  raw->frames = b.writer_seen.frames_sent;
  raw->bytes = b.writer_seen.bytes_sent;
  return b.writer_seen;
}

Attachments::SubscriberSample Attachments::SampleSubscriber(
    const Broadcast& b, const Subscriber& sub, const dataplane::WriterCounters& writer) {
  SubscriberSample out;
  absl::StatusOr<dataplane::ReaderPageSnapshot> page =
      dataplane::ObserveReaderPage(sub.page, &b.ring);
  if (page.ok()) {
    LaneTotals lane;
    BroadcastTotals extra;
    ClampReaderCounters(page->counters, writer, &lane, &extra);
    sub.seen.KeepMax(lane);
    sub.seen_broadcast.KeepMax(extra);
    out.lag_bytes = page->lag_bytes;  // clamped to [0, ring bytes] by ObserveReaderPage
  } else {
    sub.seen.broken_lanes = 1;  // its page (or the ring) stopped validating
  }
  out.lane = sub.seen;
  out.broadcast = sub.seen_broadcast;
  return out;
}

void Attachments::FoldSubscriber(LiveChannel& channel, const Broadcast& b, const Subscriber& sub) {
  dataplane::WriterCounters writer;
  (void)SampleWriter(b, &writer);
  const SubscriberSample last = SampleSubscriber(b, sub, writer);
  channel.broadcast_retired.Add(last.lane);
  channel.broadcast_retired_extra.Add(last.broadcast);
}

void Attachments::FoldRing(LiveChannel& channel, const Broadcast& b) {
  dataplane::WriterCounters writer;
  channel.broadcast_retired.Add(SampleWriter(b, &writer));
  channel.broadcast_retired_extra.detached_subscribers += b.detached_seen;
}

void Attachments::SnapshotBroadcast(const LiveChannel& channel, bool per_lane,
                                    MetricsSnapshot::Channel* c) const {
  if (!channel.broadcast_seen) return;
  c->broadcast = true;
  LaneTotals totals = channel.broadcast_retired;
  BroadcastTotals extra = channel.broadcast_retired_extra;
  if (const Broadcast* b = channel.broadcast.get(); b != nullptr) {
    dataplane::WriterCounters writer;
    totals.Add(SampleWriter(*b, &writer));
    extra.detached_subscribers += b->detached_seen;
    c->subscribers = static_cast<uint32_t>(b->subscribers.size());
    for (const auto& [slot, sub] : b->subscribers) {
      const SubscriberSample s = SampleSubscriber(*b, sub, writer);
      totals.Add(s.lane);
      extra.Add(s.broadcast);
      c->max_lag_bytes = std::max(c->max_lag_bytes, s.lag_bytes);
      if (!per_lane) continue;
      MetricsSnapshot::Subscriber series;
      series.attachment_id = sub.attachment;
      series.slot = slot;
      series.lag_bytes = s.lag_bytes;
      series.counters = s.lane;
      series.broadcast = s.broadcast;
      c->subscriber_series.push_back(std::move(series));
    }
  }
  c->totals.Add(totals);
  c->broadcast_totals.Add(extra);
}

LaneTotals Attachments::FillBroadcastStats(const LiveChannel& channel, bool include_subscribers,
                                           v1::ChannelStats* out) const {
  if (!channel.broadcast_seen) return LaneTotals();
  v1::BroadcastStats* bs = out->mutable_broadcast();
  LaneTotals totals = channel.broadcast_retired;
  BroadcastTotals extra = channel.broadcast_retired_extra;
  uint64_t max_lag = 0;
  if (const Broadcast* b = channel.broadcast.get(); b != nullptr) {
    bs->set_publisher_attached(b->publisher != 0);
    bs->set_subscriber_count(static_cast<uint32_t>(b->subscribers.size()));
    if (absl::StatusOr<dataplane::BroadcastSnapshot> snap = dataplane::ObserveBroadcast(b->ring);
        snap.ok()) {
      bs->set_ring_bytes(snap->ring_bytes);
    }
    dataplane::WriterCounters writer;
    totals.Add(SampleWriter(*b, &writer));
    extra.detached_subscribers += b->detached_seen;
    for (const auto& [slot, sub] : b->subscribers) {
      const SubscriberSample s = SampleSubscriber(*b, sub, writer);
      totals.Add(s.lane);
      extra.Add(s.broadcast);
      max_lag = std::max(max_lag, s.lag_bytes);
      if (!include_subscribers) continue;
      v1::SubscriberStats* ss = bs->add_subscribers();
      ss->set_attachment_id(sub.attachment);
      ss->set_slot(slot);
      ss->set_subscriber_name(NameOf(sub.attachment));
      ss->set_lag_bytes(s.lag_bytes);
      ss->set_frames_received(s.lane.frames_received);
      ss->set_bytes_received(s.lane.bytes_received);
      ss->set_lapped_frames(s.broadcast.lapped_frames);
      ss->set_laps(s.broadcast.laps);
      ss->set_parks(s.lane.parks[1]);
      ss->set_wakeups_received(s.lane.wakeups_received[1]);
      ss->set_latency_samples(s.lane.latency_count);
      *ss->mutable_latency_p99() = google::protobuf::util::TimeUtil::NanosecondsToDuration(
          static_cast<int64_t>(LatencyQuantileNs(s.lane.latency_buckets, 0.99)));
    }
  }
  bs->set_max_lag_bytes(max_lag);
  bs->set_lapped_frames(extra.lapped_frames);
  bs->set_laps(extra.laps);
  bs->set_detached_subscribers(extra.detached_subscribers);
  return totals;
}

}  // namespace shmlane::control
