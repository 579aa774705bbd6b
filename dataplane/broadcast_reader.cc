// BroadcastReader (dataplane/broadcast.h).
#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "dataplane/broadcast.h"
#include "dataplane/internal/broadcast_ring.h"
#include "dataplane/internal/check.h"
#include "dataplane/internal/shm_access.h"
#include "dataplane/wait_strategy.h"

namespace shmlane::dataplane {
namespace {
using internal::kAlign;
using internal::kFlagOrder;
using internal::kHeaderBytes;
using internal::kIndexLoad;
using internal::kIndexStore;
using internal::kParkStore;
using internal::Load;
using internal::LoadFrameHeader;
using internal::Record;
using internal::Store;
using internal::StoreFrameHeader;
using internal::StoreLoadFence;
using Geometry = BroadcastWriter::Geometry;
}  // namespace

// -------------------------------- reader ----------------------------------

absl::StatusOr<BroadcastReader> BroadcastReader::Attach(Segment ring, Segment page, uint32_t slot,
                                                        BroadcastReaderBells bells,
                                                        ReaderStart start, WaitOptions wait) {
  if (!ring.valid() || !internal::ReadOnlyFd(ring.fd()) || ring.access() != Access::kReadOnly) {
    return absl::InvalidArgumentError(
        "a broadcast reader needs the ring as a read-only fd mapped read-only (ReopenReadOnly)");
  }
  if (page.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError(
        "a broadcast reader writes its cursor page: map it read-write");
  }
  if (bells.own == nullptr || bells.writer == nullptr || !bells.own->valid() ||
      !bells.writer->valid()) {
    return absl::InvalidArgumentError("a broadcast reader needs two valid doorbells");
  }
  absl::StatusOr<Geometry> geo = internal::ReadBroadcastGeometry(ring);
  if (!geo.ok()) return geo.status();
  if (slot >= geo->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", geo->max_readers, ")"));
  }
  absl::StatusOr<ReaderPage*> p = internal::CheckReaderPage(page, slot);
  if (!p.ok()) return p.status();
  const uint64_t state = Load(geo->slots[slot].state, std::memory_order_acquire);
  if (!SlotActive(state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("reader slot ", slot, " is not active: the supervisor activates it first"));
  }
  BroadcastReader r(std::move(ring), std::move(page), *geo, slot, SlotEpoch(state),
                    std::move(bells), wait);
  if (absl::Status s = r.Join(start); !s.ok()) return s;
  return r;
}

BroadcastReader::BroadcastReader(Segment ring, Segment page, Geometry geo, uint32_t slot,
                                 uint64_t epoch, BroadcastReaderBells bells, WaitOptions wait)
    : ring_(std::move(ring)),
      page_seg_(std::move(page)),
      geo_(geo),
      page_(reinterpret_cast<ReaderPage*>(page_seg_.data())),
      slot_ctl_(&geo.slots[slot]),
      slot_(slot),
      epoch_(epoch),
      bells_(std::move(bells)),
      wait_(wait),
      waiter_(wait) {
  // Park episodes continue from the page (a re-attached reader never
  // repeats one the writer already rang for); counters start afresh.
  park_episode_ = Load(page_->control.waiting, std::memory_order_relaxed) >> 1;
  Store(page_->control.waiting, park_episode_ << 1, std::memory_order_relaxed);
}

BroadcastReader::~BroadcastReader() {
  if (page_seg_.valid() && !closed_) Close();
}

bool BroadcastReader::Fail(uint32_t code, std::string message) {
  if (!broken_) {
    broken_ = true;
    broken_message_ = std::move(message);
    Store(page_->counters.broken, code, std::memory_order_relaxed);
  }
  return false;
}

void BroadcastReader::DoorbellError(absl::Status s) {
  if (doorbell_status_.ok()) doorbell_status_ = std::move(s);
  Store(page_->counters.wakeup_errors, ++wakeup_errors_, std::memory_order_relaxed);
}

absl::Status BroadcastReader::status() const {
  if (broken_) return absl::DataLossError(absl::StrCat("broadcast ring broken: ", broken_message_));
  return absl::OkStatus();
}

absl::Status BroadcastReader::Join(ReaderStart start) {
  const uint64_t want = start.mode == ReaderStart::Mode::kLiveTail  ? 0
                        : start.mode == ReaderStart::Mode::kHistory ? start.history_frames
                                                                    : geo_.history_frames;
  const WriterIndex& wi = geo_.blocks->writer_index;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const uint64_t publish = Load(wi.publish, std::memory_order_acquire);
    const uint64_t oldest = Load(wi.oldest, std::memory_order_acquire);
    if (oldest > publish || publish - oldest > geo_.ring_bytes || publish % kAlign != 0 ||
        oldest % kAlign != 0) {
      Fail(internal::kBadOldest,
           absl::StrCat("oldest ", oldest, " / publish ", publish, " inconsistent"));
      return status();
    }
    uint64_t start_pos = publish;
    bool torn = false;
    seq_known_ = false;
    if (want > 0) {
      // Two bounded walks over validated headers: count the intact frames,
      // then stop at the want-th from the end. Each record is >= 16 bytes,
      // so a walk takes at most ring_bytes / 16 steps.
      uint64_t frames = 0;
      for (int pass = 0; pass < 2 && !torn; ++pass) {
        const uint64_t skip = pass == 1 && frames > want ? frames - want : 0;
        uint64_t seen = 0;
        uint64_t o = oldest;
        while (o < publish) {
          const uint64_t offset = o & geo_.mask;
          const uint64_t to_end = geo_.ring_bytes - offset;
          const BroadcastFrameHeader h = LoadFrameHeader(geo_.ring + offset);
          if (Overwritten(o)) {
            torn = true;
            break;
          }
          uint64_t rec = 0;
          const bool padding = (h.flags & kFrameFlagPadding) != 0;
          if ((h.flags & ~kFrameFlagsKnown) != 0) {
            Fail(internal::kBadFrameFlags,
                 absl::StrCat("frame at ", o, " has unknown flags ", h.flags));
            return status();
          }
          rec = padding ? h.length : Record(h.length, (h.flags & kFrameFlagTimestamp) != 0);
          if ((padding && rec != to_end) || (!padding && h.length > geo_.max_frame_bytes) ||
              rec < kHeaderBytes || rec > to_end || rec > publish - o) {
            Fail(internal::kBadFrameLength,
                 absl::StrCat("record at ", o, " of ", rec, " bytes is invalid"));
            return status();
          }
          if (!padding) {
            if (pass == 1 && seen == skip) {
              start_pos = o;
              next_seq_ = h.seq;
              seq_known_ = true;
              break;
            }
            ++seen;
          }
          o += rec;
        }
        frames = seen;
        if (frames == 0) break;
      }
      if (torn) continue;
    }
    if (!seq_known_ && !LearnSeqAt(publish)) continue;  // the writer moved on: look again
    pos_ = published_pos_ = cached_publish_ = start_pos;
    cached_oldest_ = oldest;
    Store(page_->index.cursor, pos_, kIndexStore);
    Store(page_->index.joined_epoch, epoch_, kIndexStore);
    StoreLoadFence();  // then re-check that the writer did not pass our start
    if (Overwritten(pos_) && want > 0) continue;
    // A kBlock writer may be parked holding the ring for us: tell it.
    const uint64_t w = Load(geo_.blocks->writer_control.waiting, std::memory_order_acquire);
    if (WaiterParked(w)) {
      last_rung_ = w;
      if (absl::Status s = bells_.writer->Notify(); !s.ok()) DoorbellError(std::move(s));
      Store(page_->counters.wakeups_sent, ++wakeups_sent_, std::memory_order_relaxed);
    }
    return absl::OkStatus();
  }
  // The writer kept overwriting the history: start at the live tail.
  const uint64_t publish = Load(wi.publish, std::memory_order_acquire);
  if (publish % kAlign != 0) {
    Fail(internal::kBadPublish, "publish position misaligned");
    return status();
  }
  pos_ = published_pos_ = cached_publish_ = publish;
  seq_known_ = false;
  (void)LearnSeqAt(publish);  // else the first lap, if any, cannot be counted
  Store(page_->index.cursor, pos_, kIndexStore);
  Store(page_->index.joined_epoch, epoch_, kIndexStore);
  return absl::OkStatus();
}

bool BroadcastReader::LearnSeqAt(uint64_t publish) {
  if (publish == 0) {
    next_seq_ = 0;
    seq_known_ = true;
    return true;
  }
  // Acquire on publish (by the caller) covers last_frame, stored before it.
  const uint64_t last = Load(geo_.blocks->writer_index.last_frame, std::memory_order_relaxed);
  if (last >= publish || publish - last > geo_.ring_bytes / 2 || last % kAlign != 0) {
    return false;  // a newer last_frame than this publish (or nonsense): retry
  }
  const BroadcastFrameHeader h = LoadFrameHeader(geo_.ring + (last & geo_.mask));
  if (Overwritten(last)) return false;
  if (h.flags & kFrameFlagPadding || h.length > geo_.max_frame_bytes ||
      last + Record(h.length, (h.flags & kFrameFlagTimestamp) != 0) != publish) {
    return false;
  }
  next_seq_ = h.seq + 1;
  seq_known_ = true;
  return true;
}

bool BroadcastReader::Overwritten(uint64_t pos) const {
  // Pairs with the release fence in BroadcastWriter::AdvanceOldest: if what
  // we read was written after `oldest` moved past `pos`, we see that move.
  internal::OverwriteAcquireFence();
  return Load(geo_.blocks->writer_index.oldest, internal::kOldestOrder) > pos;
}

bool BroadcastReader::Detached() const {
  const uint64_t state = Load(slot_ctl_->state, std::memory_order_acquire);
  return state != ((epoch_ << 1) | 1) ||
         Load(slot_ctl_->detached_epoch, std::memory_order_acquire) == epoch_;
}

bool BroadcastReader::WriterClosed() const {
  return Load(geo_.blocks->writer_control.closed, std::memory_order_acquire) != 0 ||
         (Load(geo_.blocks->supervisor.closed_by, std::memory_order_acquire) &
          (kClosedProducerGone | kClosedDeleted)) != 0;
}

void BroadcastReader::CountMissed(uint64_t n) {
  if (n == 0) return;
  lapped_frames_ += n;
  pending_missed_ += n;
  Store(page_->counters.lapped_frames, lapped_frames_, std::memory_order_relaxed);
}

BroadcastReadResult BroadcastReader::RefreshPublish() {
  const uint64_t p = Load(geo_.blocks->writer_index.publish, kIndexLoad);
  if (p < cached_publish_ || p % kAlign != 0) {
    Fail(internal::kBadPublish, absl::StrCat("publish position ", p, " went back from ",
                                             cached_publish_, " or misaligned"));
    return BroadcastReadResult::kBroken;
  }
  cached_publish_ = p;
  return p != pos_ ? BroadcastReadResult::kOk : BroadcastReadResult::kEmpty;
}

bool BroadcastReader::Resync() {
  if (geo_.policy == SlowReaderPolicy::kDisconnect && Detached()) return true;  // caller reports
  const WriterIndex& wi = geo_.blocks->writer_index;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const uint64_t p = Load(wi.publish, std::memory_order_acquire);
    const uint64_t o = Load(wi.oldest, std::memory_order_acquire);
    if (o > p || p - o > geo_.ring_bytes || o % kAlign != 0 || p % kAlign != 0 ||
        p < cached_publish_) {
      return Fail(internal::kBadOldest,
                  absl::StrCat("oldest ", o, " / publish ", p, " inconsistent"));
    }
    cached_publish_ = p;
    if (o <= pos_) return true;  // not lapped after all
    const BroadcastFrameHeader h = LoadFrameHeader(geo_.ring + (o & geo_.mask));
    if (Overwritten(o)) continue;  // it moved again while we looked
    if (seq_known_ && h.seq < next_seq_) {
      return Fail(internal::kBadSequence, absl::StrCat("oldest frame's sequence ", h.seq,
                                                       " is behind the expected ", next_seq_));
    }
    if (seq_known_) CountMissed(h.seq - next_seq_);
    ++laps_;
    Store(page_->counters.laps, laps_, std::memory_order_relaxed);
    pos_ = o;
    cached_oldest_ = o;
    next_seq_ = h.seq;
    seq_known_ = true;
    PublishCursor();
    return true;
  }
  return true;  // a writer this fast: try again on the next call
}

BroadcastReadResult BroadcastReader::PeekAt(BroadcastPeek* out) {
  if (broken_) return BroadcastReadResult::kBroken;
  peeked_bytes_ = 0;
  // Bounded: a padding record, a few laps; a writer that laps us on every
  // look makes this return kEmpty, never loop.
  for (int step = 0; step < 8; ++step) {
    if (pos_ == cached_publish_) {
      BroadcastReadResult r = RefreshPublish();
      if (r == BroadcastReadResult::kEmpty) {
        if (Detached()) return BroadcastReadResult::kDetached;
        if (WriterClosed()) {
          r = RefreshPublish();  // closed is stored after the final publish
          if (r == BroadcastReadResult::kEmpty) return BroadcastReadResult::kClosed;
        }
      }
      if (r == BroadcastReadResult::kEmpty) PublishCursor();
      if (r != BroadcastReadResult::kOk) return r;
    }
    // Lapped: the publish position is more than a ring ahead, or the
    // header we just loaded may be torn (`oldest` passed it).
    bool lapped = cached_publish_ - pos_ > geo_.ring_bytes;
    const uint64_t offset = pos_ & geo_.mask;
    const BroadcastFrameHeader h = LoadFrameHeader(geo_.ring + offset);
    lapped = lapped || Overwritten(pos_);
    if (lapped) {
      if (!Resync()) return BroadcastReadResult::kBroken;
      if (Detached()) return BroadcastReadResult::kDetached;
      continue;
    }
    const uint64_t available = cached_publish_ - pos_;
    const uint64_t to_end = geo_.ring_bytes - offset;
    if ((h.flags & ~kFrameFlagsKnown) != 0) {
      Fail(internal::kBadFrameFlags,
           absl::StrCat("frame at ", pos_, " has unknown flags ", h.flags));
      return BroadcastReadResult::kBroken;
    }
    if (seq_known_ && h.seq != next_seq_) {
      Fail(internal::kBadSequence,
           absl::StrCat("record at ", pos_, " has sequence ", h.seq, ", expected ", next_seq_));
      return BroadcastReadResult::kBroken;
    }
    if ((h.flags & kFrameFlagPadding) != 0) {
      if (h.flags != kFrameFlagPadding || h.length != to_end || available < to_end) {
        Fail(internal::kBadPadding,
             absl::StrCat("padding at ", pos_, " of ", h.length, " bytes does not end the ring (",
                          to_end, " left, ", available, " published)"));
        return BroadcastReadResult::kBroken;
      }
      pos_ += to_end;
      next_seq_ = h.seq;
      seq_known_ = true;
      continue;
    }
    const bool stamped = (h.flags & kFrameFlagTimestamp) != 0;
    const uint64_t record = Record(h.length, stamped);
    if (h.length > geo_.max_frame_bytes || record > to_end || record > available) {
      Fail(internal::kBadFrameLength,
           absl::StrCat("frame at ", pos_, " claims ", h.length, " bytes (max ",
                        geo_.max_frame_bytes, ", ", available, " published, ", to_end,
                        " to the ring's end)"));
      return BroadcastReadResult::kBroken;
    }
    next_seq_ = h.seq;
    seq_known_ = true;
    const std::byte* payload = geo_.ring + offset + kHeaderBytes;
    if (stamped) {
      RecordLatency(payload);
      payload += 8;
    }
    peeked_pos_ = pos_;
    peeked_bytes_ = record;
    peeked_payload_ = h.length;
    out->data = std::span<const std::byte>(payload, h.length);
    out->seq = h.seq;
    out->missed = pending_missed_;
    pending_missed_ = 0;
    return BroadcastReadResult::kOk;
  }
  return BroadcastReadResult::kEmpty;
}

BroadcastPeek BroadcastReader::Peek() {
  BroadcastPeek out{BroadcastReadResult::kEmpty, {}, 0, 0};
  out.result = PeekAt(&out);
  return out;
}

void BroadcastReader::Advance(bool intact) {
  pos_ = peeked_pos_ + peeked_bytes_;
  ++next_seq_;
  if (intact) {
    ++frames_;
    bytes_ += peeked_payload_;
  } else {
    CountMissed(1);
  }
  peeked_bytes_ = 0;
}

ReleaseResult BroadcastReader::Release() {
  if (peeked_bytes_ == 0) return ReleaseResult::kOk;
  const bool over = Overwritten(peeked_pos_);
  Advance(!over);
  PublishCursor();
  return over ? ReleaseResult::kOverwritten : ReleaseResult::kOk;
}

void BroadcastReader::PublishCursor() {
  if (pos_ == published_pos_) return;
  const uint64_t before = published_pos_;
  // Release: we are done with every record below pos_ before the writer may reuse it.
  Store(page_->index.cursor, pos_, kIndexStore);
  published_pos_ = pos_;
  ReaderCounters& c = page_->counters;
  Store(c.frames, frames_, std::memory_order_relaxed);
  Store(c.bytes, bytes_, std::memory_order_relaxed);
  if (geo_.policy != SlowReaderPolicy::kBlock) return;  // nobody waits for readers
  StoreLoadFence();                                     // pairs with BroadcastWriter::WaitForSpace
  uint64_t w = Load(geo_.blocks->writer_control.waiting, kFlagOrder);
  if (!WaiterParked(w) || w == last_rung_) [[likely]]
    return;
  w = Load(geo_.blocks->writer_control.waiting, std::memory_order_acquire);
  const uint64_t floor = Load(geo_.blocks->writer_control.need_floor, std::memory_order_relaxed);
  // Ring only if this release crossed the writer's floor: a reader already
  // past it was seen by the writer's own re-check before it parked.
  if (!WaiterParked(w) || w == last_rung_ || !(before < floor && floor <= pos_)) return;
  last_rung_ = w;
  if (absl::Status s = bells_.writer->Notify(); !s.ok()) DoorbellError(std::move(s));
  Store(c.wakeups_sent, ++wakeups_sent_, std::memory_order_relaxed);
}

void BroadcastReader::RecordLatency(const std::byte* stamp) {
  const uint64_t sent = Load(*reinterpret_cast<const uint64_t*>(stamp), std::memory_order_relaxed);
  const uint64_t now = internal::MonotonicNs();
  const uint64_t delay = now > sent ? now - sent : 0;
  ReaderCounters& c = page_->counters;
  const uint32_t b = LatencyBucketFor(delay);
  Store(c.latency_buckets[b], ++latency_buckets_[b], std::memory_order_relaxed);
  Store(c.latency_count, ++latency_count_, std::memory_order_relaxed);
  latency_sum_ns_ += delay;
  Store(c.latency_sum_ns, latency_sum_ns_, std::memory_order_relaxed);
}

BroadcastReadResult BroadcastReader::TryRead(std::span<std::byte> out, size_t* length,
                                             FrameInfo* info) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    const BroadcastPeek p = Peek();
    if (p.result != BroadcastReadResult::kOk) return p.result;
    *length = p.data.size();
    if (p.data.size() > out.size()) {
      pending_missed_ += p.missed;  // report with the frame when it is read
      return BroadcastReadResult::kTooSmall;
    }
    internal::CopyPayload(out.data(), p.data.data(), p.data.size());
    if (Overwritten(peeked_pos_)) {  // the copy may be torn: never hand it out
      pending_missed_ += p.missed;
      Advance(/*intact=*/false);
      continue;
    }
    if (info != nullptr) *info = FrameInfo{p.seq, p.missed};
    Advance(/*intact=*/true);
    PublishCursor();
    return BroadcastReadResult::kOk;
  }
  PublishCursor();
  return BroadcastReadResult::kEmpty;
}

BroadcastReadResult BroadcastReader::Read(std::span<std::byte> out, size_t* length,
                                          absl::Time deadline, FrameInfo* info) {
  return Read(out, length, Deadline::FromTime(deadline), info);
}

BroadcastReadResult BroadcastReader::Read(std::span<std::byte> out, size_t* length,
                                          Deadline deadline, FrameInfo* info) {
  for (;;) {
    const BroadcastReadResult r = TryRead(out, length, info);
    if (r != BroadcastReadResult::kEmpty) return r;
    const BroadcastReadResult w = WaitReadable(deadline);
    if (w != BroadcastReadResult::kOk) return w;
    if (deadline.Expired()) {
      const BroadcastReadResult last = TryRead(out, length, info);
      return last == BroadcastReadResult::kEmpty ? BroadcastReadResult::kTimeout : last;
    }
  }
}

BroadcastReadResult BroadcastReader::Probe() {
  if (broken_) return BroadcastReadResult::kBroken;
  if (Detached()) return BroadcastReadResult::kDetached;
  if (pos_ != cached_publish_) return BroadcastReadResult::kOk;
  BroadcastReadResult r = RefreshPublish();
  if (r != BroadcastReadResult::kEmpty) return r;
  if (Detached()) return BroadcastReadResult::kDetached;
  if (WriterClosed()) {
    r = RefreshPublish();
    return r == BroadcastReadResult::kEmpty ? BroadcastReadResult::kClosed : r;
  }
  return BroadcastReadResult::kEmpty;
}

void BroadcastReader::FinishPark(bool rung) {
  Store(page_->control.waiting, park_episode_ << 1, std::memory_order_relaxed);
  if (rung) Store(page_->counters.wakeups_received, ++wakeups_received_, std::memory_order_relaxed);
}

BroadcastReadResult BroadcastReader::WaitReadable(absl::Time deadline) {
  return WaitReadable(Deadline::FromTime(deadline));
}

BroadcastReadResult BroadcastReader::WaitReadable(Deadline deadline) {
  BroadcastReadResult r = Probe();
  if (r != BroadcastReadResult::kEmpty) return r;
  PublishCursor();
  const BroadcastBlocks& b = *geo_.blocks;
  const uint64_t my_state = (epoch_ << 1) | 1;
  // Spin only as long as the wait strategy says it pays (balanced: never
  // under CPU pressure), as lanes do.
  const int64_t budget = waiter_.SpinBudgetNs(Deadline::NowNs());
  const SpinOutcome spun = Spin(
      budget, deadline,
      [&] {
        return Load(b.writer_index.publish, std::memory_order_relaxed) != pos_ ||
               Load(b.writer_control.closed, std::memory_order_relaxed) != 0 ||
               Load(b.supervisor.closed_by, std::memory_order_relaxed) != 0 ||
               Load(slot_ctl_->state, std::memory_order_relaxed) != my_state ||
               Load(slot_ctl_->detached_epoch, std::memory_order_relaxed) == epoch_;
      },
      64, waiter_.stop_on_long_yield());
  waiter_.Learn(budget, spun);
  if (spun.ready) {
    r = Probe();
    if (r != BroadcastReadResult::kEmpty) return r;
  }
  for (;;) {
    FlushDeferredWakeups();
    if (++park_episode_ >= (uint64_t{1} << 63)) park_episode_ = 1;
    Store(page_->control.waiting, (park_episode_ << 1) | 1, kParkStore);
    StoreLoadFence();  // pairs with BroadcastWriter::Publish
    r = Probe();
    if (r != BroadcastReadResult::kEmpty) {
      FinishPark(false);
      return r;
    }
    if (deadline.Expired()) {
      FinishPark(false);
      return BroadcastReadResult::kTimeout;
    }
    Store(page_->counters.empty_waits, ++empty_waits_, std::memory_order_relaxed);
    absl::StatusOr<WakeReason> woke = bells_.own->Await(deadline);
    FinishPark(woke.ok() && *woke == WakeReason::kRung);
    if (!woke.ok()) DoorbellError(woke.status());
    r = Probe();
    if (r != BroadcastReadResult::kEmpty) return r;
    if (!woke.ok() || deadline.Expired()) return BroadcastReadResult::kTimeout;
  }
}

void BroadcastReader::Close() {
  if (closed_ || !page_seg_.valid()) return;
  PublishCursor();
  closed_ = true;
  Store(page_->control.closed_epoch, epoch_, std::memory_order_release);
  StoreLoadFence();
  if (absl::Status s = bells_.writer->Notify(); !s.ok()) DoorbellError(std::move(s));
}

}  // namespace shmlane::dataplane
