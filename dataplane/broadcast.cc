#include "dataplane/broadcast.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "dataplane/internal/check.h"
#include "dataplane/internal/shm_access.h"
#include "dataplane/internal/spin.h"

namespace shmlane::dataplane {
namespace {

using internal::kFlagOrder;
using internal::kIndexLoad;
using internal::kIndexStore;
using internal::kParkStore;
using internal::Load;
using internal::Store;
using internal::StoreLoadFence;
using Geometry = BroadcastWriter::Geometry;

constexpr uint32_t kHeaderBytes = sizeof(BroadcastFrameHeader);

// Broken codes stored for observers (docs/shm_layout.md).
enum BrokenCode : uint32_t {
  kBadPublish = 1,
  kBadOldest = 2,
  kBadFrameLength = 3,
  kBadFrameFlags = 4,
  kBadPadding = 5,
  kBadSequence = 6,
  kBadOwnRecord = 7,  // writer: a record in its own ring is not what it wrote
};

constexpr uint64_t kAlign = kBroadcastRecordAlign;
// Records are 16-aligned so that a padding record (16-byte header) always
// fits before the ring's end.
constexpr uint64_t Record(uint64_t payload, bool stamped) {
  return (kHeaderBytes + (stamped ? 8 : 0) + payload + kAlign - 1) & ~(kAlign - 1);
}

// A frame header is two 8-byte words, each one relaxed atomic access: the
// writer may rewrite it at any moment (a torn pair is caught by the
// overwrite check that follows every read).
BroadcastFrameHeader LoadFrameHeader(const std::byte* at) {
  const uint64_t w = Load(*reinterpret_cast<const uint64_t*>(at), std::memory_order_relaxed);
  const uint64_t seq = Load(*reinterpret_cast<const uint64_t*>(at + 8), std::memory_order_relaxed);
  return {static_cast<uint32_t>(w), static_cast<uint32_t>(w >> 32), seq};
}
void StoreFrameHeader(std::byte* at, BroadcastFrameHeader h) {
  Store(*reinterpret_cast<uint64_t*>(at), uint64_t{h.length} | (uint64_t{h.flags} << 32),
        std::memory_order_relaxed);
  Store(*reinterpret_cast<uint64_t*>(at + 8), h.seq, std::memory_order_relaxed);
}

absl::Status ErrnoError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::StatusOr<Geometry> ReadGeometry(const Segment& segment) {
  if (!segment.valid() || segment.size() < kBroadcastFixedHeaderBytes) {
    return absl::DataLossError(absl::StrCat("segment of ", segment.size(),
                                            " bytes is too small to hold a broadcast header"));
  }
  auto* blocks = reinterpret_cast<BroadcastBlocks*>(segment.data());
  const BroadcastHeader& h = blocks->header;
  const uint32_t version = Load(h.version, std::memory_order_acquire);
  if (Load(h.magic, std::memory_order_relaxed) != kBroadcastMagic) {
    return absl::DataLossError("segment is not a shmlane broadcast ring (bad magic)");
  }
  if ((version >> 16) != kBroadcastLayoutMajor) {
    return absl::DataLossError(absl::StrCat("broadcast layout version ", version >> 16, ".",
                                            version & 0xffff,
                                            " is not supported (this build speaks ",
                                            kBroadcastLayoutMajor, ".x): upgrade the older side"));
  }
  Geometry g;
  g.blocks = blocks;
  const uint32_t header_bytes = Load(h.header_bytes, std::memory_order_relaxed);
  g.ring_bytes = Load(h.ring_bytes, std::memory_order_relaxed);
  g.max_frame_bytes = Load(h.max_frame_bytes, std::memory_order_relaxed);
  g.max_readers = Load(h.max_readers, std::memory_order_relaxed);
  g.history_frames = Load(h.history_frames, std::memory_order_relaxed);
  g.sample_every = Load(h.sample_every, std::memory_order_relaxed);
  g.detach_lag_bytes = Load(h.detach_lag_bytes, std::memory_order_relaxed);
  const uint32_t policy = Load(h.policy, std::memory_order_relaxed);
  if (g.max_readers < 1 || g.max_readers > kMaxBroadcastReaders ||
      header_bytes != BroadcastHeaderBytes(g.max_readers)) {
    return absl::DataLossError(absl::StrCat("broadcast max_readers ", g.max_readers,
                                            " / header_bytes ", header_bytes, " are inconsistent"));
  }
  if (g.ring_bytes < kMinRingBytes || g.ring_bytes > kMaxRingBytes ||
      (g.ring_bytes & (g.ring_bytes - 1)) != 0 || segment.size() < header_bytes ||
      g.ring_bytes != segment.size() - header_bytes) {
    return absl::DataLossError(absl::StrCat("broadcast ring_bytes ", g.ring_bytes,
                                            " does not match a segment of ", segment.size(),
                                            " bytes"));
  }
  if (g.max_frame_bytes > MaxBroadcastFrameBytesFor(g.ring_bytes)) {
    return absl::DataLossError(
        absl::StrCat("broadcast max_frame_bytes ", g.max_frame_bytes, " is too large"));
  }
  if (policy < 1 || policy > 3) {
    return absl::DataLossError(absl::StrCat("broadcast policy ", policy, " is unknown"));
  }
  if (g.detach_lag_bytes == 0 || g.detach_lag_bytes > g.ring_bytes) {
    return absl::DataLossError(
        absl::StrCat("broadcast detach_lag_bytes ", g.detach_lag_bytes, " is out of range"));
  }
  g.policy = static_cast<SlowReaderPolicy>(policy);
  g.slots = reinterpret_cast<SlotControl*>(segment.data() + kBroadcastFixedHeaderBytes);
  g.ring = segment.data() + header_bytes;
  g.mask = g.ring_bytes - 1;
  return g;
}

absl::StatusOr<ReaderPage*> CheckPage(const Segment& page, uint32_t slot) {
  if (!page.valid() || page.size() < sizeof(ReaderPage)) {
    return absl::DataLossError("reader cursor page is too small");
  }
  auto* p = reinterpret_cast<ReaderPage*>(page.data());
  const uint32_t version = Load(p->header.version, std::memory_order_acquire);
  if (Load(p->header.magic, std::memory_order_relaxed) != kReaderPageMagic ||
      (version >> 16) != kBroadcastLayoutMajor) {
    return absl::DataLossError("segment is not a broadcast reader cursor page (magic/version)");
  }
  const uint32_t page_slot = Load(p->header.slot, std::memory_order_relaxed);
  if (page_slot != slot) {
    return absl::InvalidArgumentError(
        absl::StrCat("cursor page belongs to slot ", page_slot, ", not slot ", slot));
  }
  return p;
}

bool ReadOnlyFd(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_ACCMODE) == O_RDONLY;
}

}  // namespace

const char* ToString(BroadcastReadResult r) {
  switch (r) {
    case BroadcastReadResult::kOk:
      return "ok";
    case BroadcastReadResult::kEmpty:
      return "empty";
    case BroadcastReadResult::kClosed:
      return "closed";
    case BroadcastReadResult::kBroken:
      return "broken";
    case BroadcastReadResult::kTimeout:
      return "timeout";
    case BroadcastReadResult::kTooSmall:
      return "buffer too small";
    case BroadcastReadResult::kDetached:
      return "detached";
  }
  return "unknown";
}

absl::Status ValidateBroadcastOptions(const BroadcastOptions& o) {
  if (o.ring_bytes < kMinRingBytes || o.ring_bytes > kMaxRingBytes ||
      (o.ring_bytes & (o.ring_bytes - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ring_bytes ", o.ring_bytes,
                                                   " must be a power of two between ",
                                                   kMinRingBytes, " and ", kMaxRingBytes));
  }
  if (o.max_frame_bytes > MaxBroadcastFrameBytesFor(o.ring_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_frame_bytes ", o.max_frame_bytes, " exceeds ", MaxBroadcastFrameBytesFor(o.ring_bytes),
        ", the limit for a ring of ", o.ring_bytes, " bytes: use a bigger ring or smaller frames"));
  }
  if (o.max_readers < 1 || o.max_readers > kMaxBroadcastReaders) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_readers ", o.max_readers, " must be in [1, ", kMaxBroadcastReaders, "]"));
  }
  if (o.detach_lag_bytes > o.ring_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("detach_lag_bytes ", o.detach_lag_bytes,
                                                   " exceeds ring_bytes ", o.ring_bytes));
  }
  switch (o.policy) {
    case SlowReaderPolicy::kBlock:
    case SlowReaderPolicy::kDropOldest:
    case SlowReaderPolicy::kDisconnect:
      break;
    default:
      return absl::InvalidArgumentError("unknown slow-reader policy");
  }
  return absl::OkStatus();
}

absl::StatusOr<Segment> CreateBroadcastRing(const BroadcastOptions& o) {
  if (absl::Status s = ValidateBroadcastOptions(o); !s.ok()) return s;
  const uint64_t header_bytes = BroadcastHeaderBytes(o.max_readers);
  absl::StatusOr<Segment> seg =
      Segment::Create(absl::StrCat("bcast-", o.channel_id), header_bytes + o.ring_bytes);
  if (!seg.ok()) return seg.status();
  // Owner read-only: a reader of another uid holding a read-only fd cannot
  // reopen it read-write through /proc/self/fd (root can; it can do anything).
  if (::fchmod(seg->fd(), 0400) != 0) return ErrnoError("fchmod of broadcast memfd");
  auto* b = reinterpret_cast<BroadcastBlocks*>(seg->data());
  BroadcastHeader& h = b->header;
  h.magic = kBroadcastMagic;
  h.header_bytes = static_cast<uint32_t>(header_bytes);
  h.ring_bytes = o.ring_bytes;
  h.max_frame_bytes = o.max_frame_bytes;
  h.policy = static_cast<uint32_t>(o.policy);
  h.max_readers = o.max_readers;
  h.history_frames = o.history_frames;
  h.sample_every = o.sample_every;
  h.detach_lag_bytes = o.detach_lag_bytes == 0 ? o.ring_bytes : o.detach_lag_bytes;
  h.created_unix_ns = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  h.channel_id = o.channel_id;
  Store(h.version, (uint32_t{kBroadcastLayoutMajor} << 16) | kBroadcastLayoutMinor,
        std::memory_order_release);
  return seg;
}

absl::StatusOr<Segment> CreateReaderPage(const Segment& ring, uint32_t slot) {
  absl::StatusOr<Geometry> g = ReadGeometry(ring);
  if (!g.ok()) return g.status();
  if (slot >= g->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", g->max_readers, ")"));
  }
  const uint64_t channel = Load(g->blocks->header.channel_id, std::memory_order_relaxed);
  absl::StatusOr<Segment> seg =
      Segment::Create(absl::StrCat("bcast-", channel, "-reader-", slot), kReaderPageBytes);
  if (!seg.ok()) return seg.status();
  auto* p = reinterpret_cast<ReaderPage*>(seg->data());
  p->header.magic = kReaderPageMagic;
  p->header.slot = slot;
  p->header.channel_id = channel;
  Store(p->header.version, (uint32_t{kBroadcastLayoutMajor} << 16) | kBroadcastLayoutMinor,
        std::memory_order_release);
  return seg;
}

absl::StatusOr<UniqueFd> ReopenReadOnly(const Segment& segment) {
  if (!segment.valid()) return absl::InvalidArgumentError("segment is not valid");
  const std::string path = absl::StrCat("/proc/self/fd/", segment.fd());
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(absl::StrCat("reopening ", path, " read-only"));
  return fd;
}

// ------------------------------ supervisor --------------------------------

absl::StatusOr<uint64_t> ActivateReaderSlot(const Segment& ring, uint32_t slot) {
  absl::StatusOr<Geometry> g = ReadGeometry(ring);
  if (!g.ok()) return g.status();
  if (ring.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("activating a slot needs the ring mapped read-write");
  }
  if (slot >= g->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", g->max_readers, ")"));
  }
  SlotControl& s = g->slots[slot];
  const uint64_t old = Load(s.state, std::memory_order_acquire);
  if (SlotActive(old)) {
    return absl::FailedPreconditionError(absl::StrCat("reader slot ", slot, " is already active"));
  }
  const uint64_t epoch = SlotEpoch(old) + 1;
  Store(s.state, (epoch << 1) | 1, std::memory_order_release);
  std::atomic_ref<uint64_t>(g->blocks->supervisor.slots_generation)
      .fetch_add(1, std::memory_order_release);
  return epoch;
}

absl::Status ReleaseReaderSlot(const Segment& ring, uint32_t slot, const Doorbell* writer_bell,
                               const Doorbell* reader_bell) {
  absl::StatusOr<Geometry> g = ReadGeometry(ring);
  if (!g.ok()) return g.status();
  if (ring.access() != Access::kReadWrite) {
    return absl::InvalidArgumentError("releasing a slot needs the ring mapped read-write");
  }
  if (slot >= g->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", g->max_readers, ")"));
  }
  SlotControl& s = g->slots[slot];
  const uint64_t old = Load(s.state, std::memory_order_acquire);
  Store(s.state, old & ~uint64_t{1}, std::memory_order_release);
  std::atomic_ref<uint64_t>(g->blocks->supervisor.slots_generation)
      .fetch_add(1, std::memory_order_release);
  StoreLoadFence();
  if (writer_bell != nullptr && writer_bell->valid()) writer_bell->Ring();
  if (reader_bell != nullptr && reader_bell->valid()) reader_bell->Ring();
  return absl::OkStatus();
}

void SupervisorCloseBroadcast(const Segment& ring, uint32_t reason, const Doorbell* writer_bell,
                              std::span<const Doorbell* const> reader_bells) {
  if (ring.valid() && ring.access() == Access::kReadWrite &&
      ring.size() >= kBroadcastFixedHeaderBytes) {
    auto* b = reinterpret_cast<BroadcastBlocks*>(ring.data());
    std::atomic_ref<uint32_t>(b->supervisor.closed_by).fetch_or(reason, std::memory_order_release);
  }
  StoreLoadFence();
  if (writer_bell != nullptr && writer_bell->valid()) writer_bell->Ring();
  for (const Doorbell* bell : reader_bells) {
    if (bell != nullptr && bell->valid()) bell->Ring();
  }
}

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
  absl::StatusOr<Geometry> geo = ReadGeometry(ring);
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
  absl::StatusOr<ReaderPage*> p = CheckPage(page, slot);
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
      Fail(kBadOwnRecord, absl::StrCat("record at ", o, " in the writer's own ring is corrupt"));
      o = tail_;
      break;
    }
    o += rec;
  }
  oldest_ = o;
  Store(geo_.blocks->writer_index.oldest, o, std::memory_order_relaxed);
  // Orders the store above before every store that overwrites the bytes
  // below it (readers: acquire fence, then load `oldest`).
  std::atomic_thread_fence(std::memory_order_release);
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
  if (internal::SpinUntil(wait_.spin, deadline, [&] {
        space = CheckSpace(record_bytes);
        return space != WriteResult::kFull ||
               Load(b.supervisor.closed_by, std::memory_order_relaxed) != 0;
      })) {
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

// -------------------------------- reader ----------------------------------

absl::StatusOr<BroadcastReader> BroadcastReader::Attach(Segment ring, Segment page, uint32_t slot,
                                                        BroadcastReaderBells bells,
                                                        ReaderStart start, WaitOptions wait) {
  if (!ring.valid() || !ReadOnlyFd(ring.fd()) || ring.access() != Access::kReadOnly) {
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
  absl::StatusOr<Geometry> geo = ReadGeometry(ring);
  if (!geo.ok()) return geo.status();
  if (slot >= geo->max_readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " is outside [0, ", geo->max_readers, ")"));
  }
  absl::StatusOr<ReaderPage*> p = CheckPage(page, slot);
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
      wait_(wait) {
  // Counters continue from the page (a reused page of the same slot).
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
      Fail(kBadOldest, absl::StrCat("oldest ", oldest, " / publish ", publish, " inconsistent"));
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
            Fail(kBadFrameFlags, absl::StrCat("frame at ", o, " has unknown flags ", h.flags));
            return status();
          }
          rec = padding ? h.length : Record(h.length, (h.flags & kFrameFlagTimestamp) != 0);
          if ((padding && rec != to_end) || (!padding && h.length > geo_.max_frame_bytes) ||
              rec < kHeaderBytes || rec > to_end || rec > publish - o) {
            Fail(kBadFrameLength, absl::StrCat("record at ", o, " of ", rec, " bytes is invalid"));
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
    Fail(kBadPublish, "publish position misaligned");
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
  std::atomic_thread_fence(std::memory_order_acquire);
  return Load(geo_.blocks->writer_index.oldest, std::memory_order_relaxed) > pos;
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
    Fail(kBadPublish, absl::StrCat("publish position ", p, " went back from ", cached_publish_,
                                   " or misaligned"));
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
      return Fail(kBadOldest, absl::StrCat("oldest ", o, " / publish ", p, " inconsistent"));
    }
    cached_publish_ = p;
    if (o <= pos_) return true;  // not lapped after all
    const BroadcastFrameHeader h = LoadFrameHeader(geo_.ring + (o & geo_.mask));
    if (Overwritten(o)) continue;  // it moved again while we looked
    if (seq_known_ && h.seq < next_seq_) {
      return Fail(kBadSequence, absl::StrCat("oldest frame's sequence ", h.seq,
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
      Fail(kBadFrameFlags, absl::StrCat("frame at ", pos_, " has unknown flags ", h.flags));
      return BroadcastReadResult::kBroken;
    }
    if (seq_known_ && h.seq != next_seq_) {
      Fail(kBadSequence,
           absl::StrCat("record at ", pos_, " has sequence ", h.seq, ", expected ", next_seq_));
      return BroadcastReadResult::kBroken;
    }
    if ((h.flags & kFrameFlagPadding) != 0) {
      if (h.flags != kFrameFlagPadding || h.length != to_end || available < to_end) {
        Fail(kBadPadding,
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
      Fail(kBadFrameLength, absl::StrCat("frame at ", pos_, " claims ", h.length, " bytes (max ",
                                         geo_.max_frame_bytes, ", ", available, " published, ",
                                         to_end, " to the ring's end)"));
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
  if (internal::SpinUntil(wait_.spin, deadline, [&] {
        return Load(b.writer_index.publish, std::memory_order_relaxed) != pos_ ||
               Load(b.writer_control.closed, std::memory_order_relaxed) != 0 ||
               Load(b.supervisor.closed_by, std::memory_order_relaxed) != 0 ||
               Load(slot_ctl_->state, std::memory_order_relaxed) != my_state ||
               Load(slot_ctl_->detached_epoch, std::memory_order_relaxed) == epoch_;
      })) {
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

// ------------------------------- observers --------------------------------

absl::StatusOr<BroadcastSnapshot> ObserveBroadcast(const Segment& ring) {
  absl::StatusOr<Geometry> g = ReadGeometry(ring);
  if (!g.ok()) return g.status();
  auto r = [](const auto& field) { return Load(field, std::memory_order_relaxed); };
  const BroadcastBlocks& b = *g->blocks;
  BroadcastSnapshot s;
  s.channel_id = r(b.header.channel_id);
  s.ring_bytes = g->ring_bytes;
  s.max_frame_bytes = g->max_frame_bytes;
  s.policy = g->policy;
  s.publish = r(b.writer_index.publish);
  s.oldest = r(b.writer_index.oldest);
  const WriterCounters& c = b.writer_counters;
  s.writer.frames = r(c.frames);
  s.writer.bytes = r(c.bytes);
  s.writer.backpressure_events = r(c.backpressure_events);
  s.writer.full_waits = r(c.full_waits);
  s.writer.readers_detached = r(c.readers_detached);
  s.writer.wakeups_sent = r(c.wakeups_sent);
  s.writer.wakeups_received = r(c.wakeups_received);
  s.writer.broken = r(c.broken);
  s.writer.wakeup_errors = r(c.wakeup_errors);
  s.writer_closed = r(b.writer_control.closed);
  s.writer_waiting = WaiterParked(r(b.writer_control.waiting)) ? 1 : 0;
  s.supervisor_closed_by = r(b.supervisor.closed_by);
  for (uint32_t i = 0; i < g->max_readers; ++i) {
    const uint64_t state = r(g->slots[i].state);
    const bool detached =
        SlotEpoch(state) != 0 && r(g->slots[i].detached_epoch) == SlotEpoch(state);
    if (!SlotActive(state)) continue;
    s.slots.push_back({i, true, detached, SlotEpoch(state)});
  }
  return s;
}

absl::StatusOr<ReaderPageSnapshot> ObserveReaderPage(const Segment& page, const Segment* ring) {
  if (!page.valid() || page.size() < sizeof(ReaderPage)) {
    return absl::DataLossError("reader cursor page is too small");
  }
  const auto* p = reinterpret_cast<const ReaderPage*>(page.data());
  if (Load(p->header.magic, std::memory_order_relaxed) != kReaderPageMagic) {
    return absl::DataLossError("segment is not a broadcast reader cursor page");
  }
  auto r = [](const auto& field) { return Load(field, std::memory_order_relaxed); };
  ReaderPageSnapshot s;
  s.slot = r(p->header.slot);
  s.cursor = r(p->index.cursor);
  s.waiting = WaiterParked(r(p->control.waiting)) ? 1 : 0;
  const ReaderCounters& c = p->counters;
  s.counters.frames = r(c.frames);
  s.counters.bytes = r(c.bytes);
  s.counters.lapped_frames = r(c.lapped_frames);
  s.counters.laps = r(c.laps);
  s.counters.empty_waits = r(c.empty_waits);
  s.counters.wakeups_sent = r(c.wakeups_sent);
  s.counters.wakeups_received = r(c.wakeups_received);
  s.counters.latency_count = r(c.latency_count);
  s.counters.latency_sum_ns = r(c.latency_sum_ns);
  s.counters.broken = r(c.broken);
  s.counters.wakeup_errors = r(c.wakeup_errors);
  for (uint32_t i = 0; i < kLatencyBuckets; ++i) {
    s.counters.latency_buckets[i] = r(c.latency_buckets[i]);
  }
  if (ring != nullptr) {
    absl::StatusOr<Geometry> g = ReadGeometry(*ring);
    if (!g.ok()) return g.status();
    const uint64_t publish = r(g->blocks->writer_index.publish);
    s.lag_bytes = publish >= s.cursor ? std::min(publish - s.cursor, g->ring_bytes) : 0;
  }
  return s;
}

}  // namespace shmlane::dataplane
