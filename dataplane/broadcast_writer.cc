// BroadcastWriter (dataplane/broadcast.h).
#include <sys/epoll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
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

// -------------------------------- writer ----------------------------------
//
// Space (kBlock): the writer may reuse bytes below min(effective cursor) of
// the counted readers. A reader's effective cursor only moves forward: it is
// max(previous, min(cursor read from its page, publish)), so a reader that
// writes its cursor backwards regains nothing and one that writes it past
// the publish position only gives up its own frames. A slot the supervisor
// activated but whose reader has not joined yet (joined_epoch) counts at
// the oldest position the writer had when it first saw the activation, so
// a late joiner's history stays intact until it joins.
//
// Overwriting: before reusing bytes, the writer moves `oldest` past every
// record that starts below the new floor (walking its own records), stores
// it, and issues a release fence; then it writes. Readers check `oldest`
// after reading (acquire fence, then load), so a record they used was
// intact if `oldest` had not passed it.
//
// Wake-ups: as lanes (lane.cc), per reader. After a publish the writer
// fences, then loads each counted reader's waiter word and rings that
// reader's own doorbell once per park episode, and not again until the
// reader has read past what the last ring was for. A parked writer stores
// need_floor and its waiter word, fences, re-checks the cursors; a reader
// that fences after publishing its cursor rings its slot's writer bell if
// this release crossed need_floor. Either the writer sees the new cursor or
// the reader sees the writer parked.

struct BroadcastWriter::Link {
  enum class Phase { kIdle, kJoining, kJoined, kGone };
  uint32_t slot = 0;
  Segment page_segment;
  const ReaderPage* page = nullptr;
  std::shared_ptr<const Doorbell> reader_bell;
  std::shared_ptr<const Doorbell> writer_bell;
  uint64_t epoch = 0;  // the slot epoch this state belongs to (0: never seen active)
  Phase phase = Phase::kIdle;
  uint64_t effective = 0;  // monotonic cursor (see above)
  uint64_t last_rung = 0;
  uint64_t rung_publish = 0;
};

absl::StatusOr<BroadcastWriter> BroadcastWriter::Attach(Segment ring, BroadcastWriterBells bells,
                                                        WaitOptions wait) {
  if (ring.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("a broadcast writer needs a read-write mapping");
  }
  if (bells.own == nullptr || !bells.own->valid()) {
    return absl::InvalidArgumentError(
        "a broadcast writer needs its own doorbell (a valid eventfd)");
  }
  absl::StatusOr<Geometry> geo = internal::ReadBroadcastGeometry(ring);
  if (!geo.ok()) return geo.status();
  BroadcastWriter w(std::move(ring), *geo, std::move(bells), wait);
  // Resume where a previous writer stopped (zero on a fresh ring).
  const BroadcastBlocks& b = *w.geo_.blocks;
  const uint64_t publish = Load(b.writer_index.publish, std::memory_order_acquire);
  const uint64_t oldest = Load(b.writer_index.oldest, std::memory_order_relaxed);
  if (oldest > publish || publish - oldest > w.geo_.ring_bytes || publish % kAlign != 0 ||
      oldest % kAlign != 0) {
    return absl::DataLossError(absl::StrCat("broadcast positions are inconsistent (oldest ", oldest,
                                            ", publish ", publish, ")"));
  }
  w.tail_ = w.published_ = publish;
  w.last_frame_ = Load(b.writer_index.last_frame, std::memory_order_relaxed);
  w.oldest_ = oldest;
  w.seq_ = w.frames_ = Load(b.writer_counters.frames, std::memory_order_relaxed);
  w.bytes_ = Load(b.writer_counters.bytes, std::memory_order_relaxed);
  w.park_episode_ = Load(b.writer_control.waiting, std::memory_order_relaxed) >> 1;
  Store(w.geo_.blocks->writer_control.waiting, w.park_episode_ << 1, std::memory_order_relaxed);
  w.epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!w.epoll_.valid()) {
    return absl::ResourceExhaustedError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  }
  return w;
}

BroadcastWriter::BroadcastWriter(Segment ring, Geometry geo, BroadcastWriterBells bells,
                                 WaitOptions wait)
    : ring_(std::move(ring)),
      geo_(geo),
      bells_(std::move(bells)),
      wait_(wait),
      waiter_(wait, absl::ToInt64Nanoseconds(wait.spin)),
      until_sample_(geo.sample_every) {}

BroadcastWriter::BroadcastWriter(BroadcastWriter&&) noexcept = default;
BroadcastWriter& BroadcastWriter::operator=(BroadcastWriter&&) noexcept = default;

BroadcastWriter::~BroadcastWriter() {
  if (ring_.valid() && !closed_) Close();
}

bool BroadcastWriter::Fail(uint32_t code, std::string message) {
  if (!broken_) {
    broken_ = true;
    broken_message_ = std::move(message);
    Store(geo_.blocks->writer_counters.broken, code, std::memory_order_relaxed);
  }
  return false;
}

void BroadcastWriter::DoorbellError(absl::Status s) {
  if (doorbell_status_.ok()) doorbell_status_ = std::move(s);
  Store(geo_.blocks->writer_counters.wakeup_errors, ++wakeup_errors_, std::memory_order_relaxed);
}

absl::Status BroadcastWriter::status() const {
  if (broken_) return absl::DataLossError(absl::StrCat("broadcast ring broken: ", broken_message_));
  return absl::OkStatus();
}

bool BroadcastWriter::PeerClosed() const {
  return Load(geo_.blocks->supervisor.closed_by, std::memory_order_acquire) != 0;
}

absl::Status BroadcastWriter::AddReader(uint32_t slot, Segment page,
                                        std::shared_ptr<const Doorbell> reader_bell,
                                        std::shared_ptr<const Doorbell> writer_bell) {
  if (slot >= geo_.max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", geo_.max_readers, ")"));
  }
  if (reader_bell == nullptr || writer_bell == nullptr || !reader_bell->valid() ||
      !writer_bell->valid()) {
    return absl::InvalidArgumentError("a reader link needs two valid doorbells");
  }
  for (const auto& l : links_) {
    if (l->slot == slot) return absl::AlreadyExistsError(absl::StrCat("slot ", slot, " is linked"));
  }
  absl::StatusOr<ReaderPage*> p = internal::CheckReaderPage(page, slot);
  if (!p.ok()) return p.status();
  auto link = std::make_unique<Link>();
  link->slot = slot;
  link->page = *p;
  link->page_segment = std::move(page);
  link->reader_bell = std::move(reader_bell);
  link->writer_bell = std::move(writer_bell);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = slot;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, link->writer_bell->fd(), &ev) != 0 &&
      errno != EEXIST) {  // one bell shared by several slots is allowed
    return absl::ResourceExhaustedError(
        absl::StrCat("registering slot ", slot, "'s writer bell: ", std::strerror(errno)));
  }
  links_.push_back(std::move(link));
  RefreshReaders(0);
  return absl::OkStatus();
}

absl::Status BroadcastWriter::RemoveReader(uint32_t slot) {
  for (size_t i = 0; i < links_.size(); ++i) {
    if (links_[i]->slot != slot) continue;
    const int fd = links_[i]->writer_bell->fd();
    links_.erase(links_.begin() + static_cast<std::ptrdiff_t>(i));
    bool shared = false;
    for (const auto& l : links_) shared = shared || l->writer_bell->fd() == fd;
    if (!shared) (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    RefreshReaders(0);
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("slot ", slot, " is not linked"));
}

void BroadcastWriter::Detach(Link& link) {
  link.phase = Link::Phase::kGone;
  Store(geo_.slots[link.slot].detached_epoch, link.epoch, std::memory_order_release);
  Store(geo_.blocks->writer_counters.readers_detached, ++readers_detached_,
        std::memory_order_relaxed);
  StoreLoadFence();
  if (absl::Status s = link.reader_bell->Notify(); !s.ok()) DoorbellError(std::move(s));
}

void BroadcastWriter::RefreshReaders(uint64_t detach_below) {
  seen_generation_ = Load(geo_.blocks->supervisor.slots_generation, std::memory_order_acquire);
  uint64_t min = UINT64_MAX;
  for (const auto& lp : links_) {
    Link& l = *lp;
    const uint64_t state = Load(geo_.slots[l.slot].state, std::memory_order_acquire);
    if (!SlotActive(state)) {
      l.phase = Link::Phase::kIdle;
      continue;
    }
    const uint64_t epoch = SlotEpoch(state);
    if (epoch != l.epoch) {
      l.epoch = epoch;
      l.phase = Link::Phase::kJoining;
      l.effective = oldest_;
      l.last_rung = 0;
      l.rung_publish = 0;
    }
    if (l.phase == Link::Phase::kGone) continue;
    if (Load(l.page->control.closed_epoch, std::memory_order_acquire) == epoch) {
      l.phase = Link::Phase::kGone;
      continue;
    }
    if (l.phase == Link::Phase::kJoining &&
        Load(l.page->index.joined_epoch, std::memory_order_acquire) == epoch) {
      l.phase = Link::Phase::kJoined;
    }
    if (l.phase == Link::Phase::kJoined) {
      // One load, then clamped: never backwards, never past what we published.
      const uint64_t c = Load(l.page->index.cursor, std::memory_order_acquire);
      if (c % kAlign == 0) l.effective = std::max(l.effective, std::min(c, published_));
    }
    switch (geo_.policy) {
      case SlowReaderPolicy::kDropOldest:
        continue;  // nobody holds the writer
      case SlowReaderPolicy::kDisconnect:
        // A joining reader is not detached, but keeps the writer looking
        // (cached_min_) until it has joined.
        if (l.phase == Link::Phase::kJoined && l.effective < detach_below) {
          Detach(l);
          continue;
        }
        break;
      case SlowReaderPolicy::kBlock:
        break;
    }
    min = std::min(min, l.effective);
  }
  cached_min_ = min;
}

void BroadcastWriter::AdvanceOldest(uint64_t floor) {
  // Walk our own records (readers cannot write the ring; the walk is still
  // bounded and checked in case the supervisor's mapping was misused).
  uint64_t o = oldest_;
  while (o < floor) {
    const uint64_t offset = o & geo_.mask;
    const BroadcastFrameHeader h = LoadFrameHeader(geo_.ring + offset);
    const uint64_t to_end = geo_.ring_bytes - offset;
    const uint64_t rec = (h.flags & kFrameFlagPadding) != 0
                             ? h.length
                             : Record(h.length, (h.flags & kFrameFlagTimestamp) != 0);
    if (rec < kHeaderBytes || rec > to_end || rec % kAlign != 0 || o + rec > tail_) {
      Fail(internal::kBadOwnRecord,
           absl::StrCat("record at ", o, " in the writer's own ring is corrupt"));
      o = tail_;
      break;
    }
    o += rec;
  }
  oldest_ = o;
  Store(geo_.blocks->writer_index.oldest, o, internal::kOldestOrder);
  // Orders the store above before every store that overwrites the bytes
  // below it (readers: acquire fence, then load `oldest`).
  internal::OverwriteReleaseFence();
}

uint64_t BroadcastWriter::NeededFor(uint64_t record_bytes) const {
  const uint64_t to_end = geo_.ring_bytes - (tail_ & geo_.mask);
  return record_bytes <= to_end ? record_bytes : to_end + record_bytes;
}

WriteResult BroadcastWriter::Claim(uint64_t record_bytes, uint64_t* position) {
  const uint64_t offset = tail_ & geo_.mask;
  const uint64_t to_end = geo_.ring_bytes - offset;
  const uint64_t need = NeededFor(record_bytes);
  const uint64_t end = tail_ + need;
  const uint64_t floor = end > geo_.ring_bytes ? end - geo_.ring_bytes : 0;
  switch (geo_.policy) {
    case SlowReaderPolicy::kBlock:
      if (floor > cached_min_) {
        RefreshReaders(0);  // one pass over the cursors per "looks full"
        if (floor > cached_min_) return WriteResult::kFull;
      }
      break;
    case SlowReaderPolicy::kDisconnect: {
      const uint64_t lag_floor = end > geo_.detach_lag_bytes ? end - geo_.detach_lag_bytes : 0;
      if (lag_floor > cached_min_) RefreshReaders(lag_floor);
      break;
    }
    case SlowReaderPolicy::kDropOldest:
      break;
  }
  if (floor > oldest_) AdvanceOldest(floor);
  if (broken_) return WriteResult::kBroken;
  if (need != record_bytes) {
    StoreFrameHeader(geo_.ring + offset, {static_cast<uint32_t>(to_end), kFrameFlagPadding, seq_});
    tail_ += to_end;
  }
  *position = tail_;
  return WriteResult::kOk;
}

WriteResult BroadcastWriter::CheckSpace(uint64_t record_bytes) {
  if (broken_) return WriteResult::kBroken;
  RefreshReaders(0);
  const uint64_t end = tail_ + NeededFor(record_bytes);
  const uint64_t floor = end > geo_.ring_bytes ? end - geo_.ring_bytes : 0;
  return floor <= cached_min_ ? WriteResult::kOk : WriteResult::kFull;
}

Reservation BroadcastWriter::Reserve(size_t n) {
  SHMLANE_CHECK(!reservation_open_);
  return ReserveSlow(n);
}

Reservation BroadcastWriter::ReserveSlow(size_t n) {
  if (broken_) return {WriteResult::kBroken, {}};
  if (peer_closed_ || closed_) return {WriteResult::kClosed, {}};
  if (n > geo_.max_frame_bytes) return {WriteResult::kTooLarge, {}};
  const bool stamped = until_sample_ == 1;
  uint64_t pos = 0;
  WriteResult r = Claim(Record(n, stamped), &pos);
  if (r == WriteResult::kFull) {
    Store(geo_.blocks->writer_counters.backpressure_events, ++backpressure_events_,
          std::memory_order_relaxed);
    Publish();  // readers cannot free space for frames they cannot see
    if (PeerClosed()) r = WriteResult::kClosed;
  }
  if (r != WriteResult::kOk) return {r, {}};
  reservation_open_ = true;
  reservation_stamped_ = stamped;
  reserved_bytes_ = n;
  reserved_pos_ = pos;
  std::byte* payload = geo_.ring + (pos & geo_.mask) + kHeaderBytes + (stamped ? 8 : 0);
  return {WriteResult::kOk, std::span<std::byte>(payload, n)};
}

void BroadcastWriter::Commit(size_t used, PublishMode mode) {
  SHMLANE_CHECK(reservation_open_ && used <= reserved_bytes_);
  reservation_open_ = false;
  const uint64_t offset = reserved_pos_ & geo_.mask;
  uint32_t flags = 0;
  if (reservation_stamped_) {
    Store(*reinterpret_cast<uint64_t*>(geo_.ring + offset + kHeaderBytes), internal::MonotonicNs(),
          std::memory_order_relaxed);
    until_sample_ = geo_.sample_every;
    flags = kFrameFlagTimestamp;
  } else if (until_sample_ > 1) {
    --until_sample_;
  }
  StoreFrameHeader(geo_.ring + offset, {static_cast<uint32_t>(used), flags, seq_});
  last_frame_ = tail_;
  tail_ += Record(used, reservation_stamped_);
  ++seq_;
  ++frames_;
  bytes_ += used;
  if (mode == PublishMode::kNow) Publish();
}

void BroadcastWriter::Publish() {
  if (broken_) return;
  if (tail_ != published_) {
    Store(geo_.blocks->writer_index.last_frame, last_frame_, std::memory_order_relaxed);
    // Release: the records below tail_ (and last_frame) are visible before it.
    Store(geo_.blocks->writer_index.publish, tail_, kIndexStore);
    published_ = tail_;
    WriterCounters& c = geo_.blocks->writer_counters;
    Store(c.frames, frames_, std::memory_order_relaxed);
    Store(c.bytes, bytes_, std::memory_order_relaxed);
  }
  // Wake-up protocol: the fence orders the publish store before the loads
  // of the slot generation and of the readers' waiter words.
  StoreLoadFence();
  if (Load(geo_.blocks->supervisor.slots_generation, kFlagOrder) != seen_generation_) [[unlikely]] {
    RefreshReaders(0);
  }
  RingReaders();
  if (Load(geo_.blocks->supervisor.closed_by, std::memory_order_relaxed) != 0) [[unlikely]] {
    peer_closed_ = PeerClosed();
  }
}

void BroadcastWriter::RingReaders() {
  for (const auto& lp : links_) {
    Link& l = *lp;
    if (l.phase != Link::Phase::kJoining && l.phase != Link::Phase::kJoined) continue;
    uint64_t w = Load(l.page->control.waiting, kFlagOrder);
    if (!WaiterParked(w) || w == l.last_rung) [[likely]]
      continue;
    w = Load(l.page->control.waiting, std::memory_order_acquire);
    if (!WaiterParked(w) || w == l.last_rung) continue;
    // A reader that re-parks without having read what the last ring was for
    // is flipping its word: no ring, so it cannot make publishes syscalls.
    if (l.last_rung != 0 &&
        Load(l.page->index.cursor, std::memory_order_relaxed) < l.rung_publish) {
      continue;
    }
    l.last_rung = w;
    l.rung_publish = published_;
    if (absl::Status s = l.reader_bell->Notify(); !s.ok()) DoorbellError(std::move(s));
    Store(geo_.blocks->writer_counters.wakeups_sent, ++wakeups_sent_, std::memory_order_relaxed);
  }
}

WriteResult BroadcastWriter::TryWrite(std::span<const std::byte> frame) {
  Reservation r = Reserve(frame.size());
  if (r.result != WriteResult::kOk) return r.result;
  internal::CopyPayload(r.data.data(), frame.data(), frame.size());
  Commit(frame.size(), PublishMode::kNow);
  return WriteResult::kOk;
}

size_t BroadcastWriter::TryWriteBatch(std::span<const std::span<const std::byte>> frames,
                                      WriteResult* result) {
  size_t written = 0;
  WriteResult last = WriteResult::kOk;
  for (std::span<const std::byte> frame : frames) {
    Reservation r = Reserve(frame.size());
    if (r.result != WriteResult::kOk) {
      last = r.result;
      break;
    }
    internal::CopyPayload(r.data.data(), frame.data(), frame.size());
    Commit(frame.size(), PublishMode::kDefer);
    ++written;
  }
  Publish();
  if (result != nullptr) *result = last;
  return written;
}

WriteResult BroadcastWriter::Write(std::span<const std::byte> frame, absl::Time deadline) {
  return Write(frame, Deadline::FromTime(deadline));
}

WriteResult BroadcastWriter::Write(std::span<const std::byte> frame, Deadline deadline) {
  for (;;) {
    const WriteResult r = TryWrite(frame);
    if (r != WriteResult::kFull) return r;  // only kBlock ever finds the ring full
    const WriteResult w = WaitForSpace(Record(frame.size(), until_sample_ == 1), deadline);
    if (w != WriteResult::kOk) return w;
  }
}

void BroadcastWriter::DrainWriterBells() {
  epoll_event events[64];
  for (int round = 0; round < 16; ++round) {
    const int n = ::epoll_wait(epoll_.get(), events, 64, 0);
    if (n <= 0) return;
    for (int i = 0; i < n; ++i) {
      for (const auto& l : links_) {
        if (l->slot == events[i].data.u32) {
          (void)l->writer_bell->Clear();
          break;
        }
      }
    }
    if (n < 64) return;
  }
}

WriteResult BroadcastWriter::WaitForSpace(uint64_t record_bytes, Deadline deadline) {
  Publish();
  const BroadcastBlocks& b = *geo_.blocks;
  WriteResult space = WriteResult::kFull;
  // A full ring: the readers are draining it, so the strategy may spin up
  // to WaitOptions::spin (as a lane producer does), never under CPU pressure.
  const int64_t budget = waiter_.SpinBudgetNs(Deadline::NowNs());
  const SpinOutcome spun = Spin(
      budget, deadline,
      [&] {
        space = CheckSpace(record_bytes);
        return space != WriteResult::kFull ||
               Load(b.supervisor.closed_by, std::memory_order_relaxed) != 0;
      },
      64, waiter_.stop_on_long_yield());
  waiter_.Learn(budget, spun);
  if (spun.ready) {
    if (space != WriteResult::kFull) return space;
    if (PeerClosed()) return WriteResult::kClosed;
  }
  if (space == WriteResult::kBroken) return space;
  WriterControl& me = geo_.blocks->writer_control;
  for (;;) {
    FlushDeferredWakeups();
    if (++park_episode_ >= (uint64_t{1} << 63)) park_episode_ = 1;
    const uint64_t end = tail_ + NeededFor(record_bytes);
    Store(me.need_floor, end > geo_.ring_bytes ? end - geo_.ring_bytes : 0,
          std::memory_order_relaxed);
    Store(me.waiting, (park_episode_ << 1) | 1, kParkStore);
    StoreLoadFence();  // pairs with BroadcastReader::PublishCursor
    auto unpark = [&] { Store(me.waiting, park_episode_ << 1, std::memory_order_relaxed); };
    space = CheckSpace(record_bytes);
    if (space != WriteResult::kFull) {
      unpark();
      return space;
    }
    if (PeerClosed()) {
      unpark();
      return WriteResult::kClosed;
    }
    if (deadline.Expired()) {
      unpark();
      return WriteResult::kTimeout;
    }
    Store(geo_.blocks->writer_counters.full_waits, ++full_waits_, std::memory_order_relaxed);
    absl::StatusOr<WakeReason> woke = bells_.own->Await(deadline, epoll_.get());
    unpark();
    if (!woke.ok()) DoorbellError(woke.status());
    if (woke.ok() && *woke != WakeReason::kTimeout) {
      DrainWriterBells();
      Store(geo_.blocks->writer_counters.wakeups_received, ++wakeups_received_,
            std::memory_order_relaxed);
    }
    // A wake-up is a hint (a reader may flood its bell): look, then check the clock.
    space = CheckSpace(record_bytes);
    if (space != WriteResult::kFull) return space;
    if (PeerClosed()) return WriteResult::kClosed;
    if (!woke.ok() || deadline.Expired()) return WriteResult::kTimeout;
  }
}

void BroadcastWriter::Close() {
  if (closed_ || !ring_.valid()) return;
  if (reservation_open_) Commit(0, PublishMode::kDefer);
  Publish();
  closed_ = true;
  // Release: a reader that sees `closed` also sees the final publish.
  Store(geo_.blocks->writer_control.closed, 1u, std::memory_order_release);
  StoreLoadFence();
  for (const auto& l : links_) {
    if (absl::Status s = l->reader_bell->Notify(); !s.ok()) DoorbellError(std::move(s));
  }
}

}  // namespace shmlane::dataplane
