// Broadcast rings: one writer, N readers over ONE ring of variable-length
// frames in a sealed memfd. Every frame is written once and read in place by
// every reader (zero-copy Peek/Release; Reserve/Commit on the writer side).
// Layout and ownership of every field: broadcast_layout.h and
// docs/shm_layout.md ("Broadcast rings").
//
//   // supervisor (the daemon):
//   auto ring = CreateBroadcastRing({.ring_bytes = 1 << 20, .policy = kBlock});
//   auto page = CreateReaderPage(*ring, slot);           // one per reader slot
//   auto epoch = ActivateReaderSlot(*ring, slot);
//   // hand the writer: ring fd (RW), each page fd (it maps them read-only);
//   // hand a reader: ReopenReadOnly(*ring) (O_RDONLY), its page fd (RW).
//   auto w = BroadcastWriter::Attach(std::move(ring_rw), {writer_bell});
//   w->AddReader(slot, std::move(page_ro), reader_bell, writer_bell_for_slot);
//   auto r = BroadcastReader::Attach(std::move(ring_ro), std::move(page_rw), slot,
//                                    {reader_bell, writer_bell_for_slot});
//
// Readers cannot write the ring: they map a read-only fd PROT_READ, so a
// later mprotect(PROT_WRITE) or mmap(PROT_WRITE) fails with EACCES, and
// CreateBroadcastRing sets the memfd's mode to 0400 so that another uid
// cannot reopen it read-write through /proc/self/fd. Each reader writes only
// its own cursor page; the writer validates every value it reads there
// (a cursor never moves backwards or past the publish position), so a
// hostile reader can hold a kBlock writer no more than a slow one (until the
// deadline or until the supervisor releases its slot), and cannot delay
// another reader's wake-up (each reader has its own doorbell, rung by the
// writer only when that reader is parked).
//
// Slow readers (SlowReaderPolicy, fixed per ring):
//   kBlock      the writer waits for the slowest ACTIVE reader (Write with a
//               deadline; TryWrite returns kFull). Readers miss nothing.
//   kDropOldest the writer never waits. A lapped reader skips to the oldest
//               intact frame and learns exactly how many it missed
//               (PeekResult::missed, FrameInfo::missed, ReaderCounters).
//   kDisconnect the writer never waits; a reader more than detach_lag_bytes
//               behind is detached (its reads return kDetached).
//
// Torn frames: the writer stores `oldest` before overwriting anything below
// it; a reader re-checks it after using a frame. TryRead/Read/Drain copy or
// call back, then check, and never report a torn copy as kOk. Peek hands out
// a view into shared memory that the writer may overwrite (kDropOldest)
// while the application reads it: Release() says whether that happened
// (kOverwritten: discard whatever was derived from the view).
//
// Thread safety: a BroadcastWriter is used by one thread at a time, so is a
// BroadcastReader; they live in different processes. The supervisor
// functions may run anywhere at any time.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/broadcast_layout.h"
#include "dataplane/deadline.h"
#include "dataplane/doorbell.h"
#include "dataplane/lane.h"
#include "dataplane/segment.h"
#include "dataplane/unique_fd.h"

namespace shmlane::dataplane {

// What a broadcast ring's creator chooses.
struct BroadcastOptions {
  uint64_t ring_bytes = 1 << 20;        // power of two in [kMinRingBytes, kMaxRingBytes]
  uint32_t max_frame_bytes = 64 << 10;  // <= MaxBroadcastFrameBytesFor(ring_bytes)
  SlowReaderPolicy policy = SlowReaderPolicy::kBlock;
  uint32_t max_readers = 32;      // [1, kMaxBroadcastReaders]
  uint32_t history_frames = 0;    // default history for late joiners (ReaderStart::kChannel)
  uint64_t detach_lag_bytes = 0;  // kDisconnect bound; 0 means ring_bytes
  uint32_t sample_every = 64;     // one frame in N carries a send timestamp; 0 = off
  uint64_t channel_id = 0;        // for observers
};

// Largest payload a broadcast ring of `ring_bytes` can carry (a padding
// record plus one frame always fit an empty ring).
constexpr uint64_t MaxBroadcastFrameBytesFor(uint64_t ring_bytes) { return ring_bytes / 2 - 32; }

// Checks options; InvalidArgument says which field is wrong and why.
absl::Status ValidateBroadcastOptions(const BroadcastOptions& options);

// Creates, initializes and seals a ring segment (header, slot table, frame
// area) mapped read-write, and sets the memfd's mode to 0400.
absl::StatusOr<Segment> CreateBroadcastRing(const BroadcastOptions& options);

// Creates and seals the cursor page of reader slot `slot` of `ring`.
absl::StatusOr<Segment> CreateReaderPage(const Segment& ring, uint32_t slot);

// A new O_RDONLY fd for the same memfd (reopened through /proc/self/fd), to
// hand to readers: a mapping of it can never be made writable.
absl::StatusOr<UniqueFd> ReopenReadOnly(const Segment& segment);

// --------------------------- supervisor side -------------------------------

// Activates a free slot for a new reader: bumps its epoch and marks it
// active (then bumps slots_generation). Returns the new epoch.
// FailedPrecondition if the slot is already active.
absl::StatusOr<uint64_t> ActivateReaderSlot(const Segment& ring, uint32_t slot);

// Releases a slot (its reader left or died): a kBlock writer no longer waits
// for it. Rings the writer's doorbell and the reader's, when given, so a
// parked writer re-checks at once and a parked reader returns kDetached.
absl::Status ReleaseReaderSlot(const Segment& ring, uint32_t slot, const Doorbell* writer_bell,
                               const Doorbell* reader_bell);

// Marks the ring closed for `reason` (kClosed* bits of lane_layout.h, OR-ed
// in) and rings the writer and every given reader doorbell: readers drain
// what was committed, then see kClosed; the writer's calls return kClosed.
void SupervisorCloseBroadcast(const Segment& ring, uint32_t reason, const Doorbell* writer_bell,
                              std::span<const Doorbell* const> reader_bells);

// ------------------------------- writer ------------------------------------

struct BroadcastWriterBells {
  // Where the writer parks on a full ring (kBlock): the supervisor rings it
  // on a slot release or a close. Readers ring their per-slot bell instead
  // (AddReader), which the writer also waits on.
  std::shared_ptr<const Doorbell> own;
};

class BroadcastWriter {
 public:
  static absl::StatusOr<BroadcastWriter> Attach(Segment ring, BroadcastWriterBells bells,
                                                WaitOptions wait = WaitOptions());

  BroadcastWriter(BroadcastWriter&&) noexcept;
  BroadcastWriter& operator=(BroadcastWriter&&) noexcept;
  BroadcastWriter(const BroadcastWriter&) = delete;
  BroadcastWriter& operator=(const BroadcastWriter&) = delete;
  ~BroadcastWriter();

  // Links reader slot `slot`: its cursor page (mapped read-only is enough),
  // the reader's doorbell (the writer rings it when the reader is parked)
  // and the doorbell this reader rings when it frees space for a parked
  // writer (one per reader, so that no reader can swallow another's rings).
  // The writer counts the slot only while the supervisor has it active.
  absl::Status AddReader(uint32_t slot, Segment page, std::shared_ptr<const Doorbell> reader_bell,
                         std::shared_ptr<const Doorbell> writer_bell);
  // Unlinks a slot (the supervisor normally releases it too).
  absl::Status RemoveReader(uint32_t slot);

  // As the lane Producer's calls (lane.h). Write applies the policy: kBlock
  // waits for the slowest active reader until `deadline` (kTimeout); the
  // other policies never wait.
  WriteResult TryWrite(std::span<const std::byte> frame);
  WriteResult Write(std::span<const std::byte> frame, absl::Time deadline = absl::InfiniteFuture());
  WriteResult Write(std::span<const std::byte> frame, Deadline deadline);
  size_t TryWriteBatch(std::span<const std::span<const std::byte>> frames, WriteResult* result);
  Reservation Reserve(size_t n);
  void Commit(size_t used, PublishMode mode = PublishMode::kNow);
  void Publish();

  // Publishes what was committed and marks the ring closed; readers drain,
  // then see kClosed.
  void Close();

  absl::Status status() const;
  const absl::Status& doorbell_status() const { return doorbell_status_; }
  const Segment& segment() const { return ring_; }
  uint32_t max_frame_bytes() const { return geo_.max_frame_bytes; }
  SlowReaderPolicy policy() const { return geo_.policy; }
  uint64_t frames_published() const { return frames_; }

  // Internal, for broadcast.cc.
  struct Geometry {
    BroadcastBlocks* blocks = nullptr;
    SlotControl* slots = nullptr;
    std::byte* ring = nullptr;
    uint64_t ring_bytes = 0;
    uint64_t mask = 0;
    uint32_t max_frame_bytes = 0;
    uint32_t max_readers = 0;
    uint32_t history_frames = 0;
    uint32_t sample_every = 0;
    uint64_t detach_lag_bytes = 0;
    SlowReaderPolicy policy = SlowReaderPolicy::kBlock;
  };
  struct Link;

 private:
  BroadcastWriter(Segment ring, Geometry geo, BroadcastWriterBells bells, WaitOptions wait);
  WriteResult Claim(uint64_t record_bytes, uint64_t* position);
  // Re-reads the slot table and linked cursor pages; under kDisconnect
  // detaches readers below `detach_below`. Sets cached_min_.
  void RefreshReaders(uint64_t detach_below);
  void AdvanceOldest(uint64_t floor);
  void RingReaders();
  Reservation ReserveSlow(size_t n);
  WriteResult WaitForSpace(uint64_t record_bytes, Deadline deadline);
  WriteResult CheckSpace(uint64_t record_bytes);
  void Detach(Link& link);
  uint64_t NeededFor(uint64_t record_bytes) const;
  bool PeerClosed() const;
  void DoorbellError(absl::Status s);
  bool Fail(uint32_t code, std::string message);
  void DrainWriterBells();

  Segment ring_;
  Geometry geo_;
  BroadcastWriterBells bells_;
  WaitOptions wait_;
  Waiter waiter_;   // what this writer's spins on a full ring have learned
  UniqueFd epoll_;  // every linked reader's writer bell
  std::vector<std::unique_ptr<Link>> links_;
  uint64_t tail_ = 0;
  uint64_t published_ = 0;
  uint64_t oldest_ = 0;
  uint64_t cached_min_ = UINT64_MAX;  // every counted reader is at or past this
  uint64_t seen_generation_ = 0;
  uint64_t seq_ = 0;         // sequence number of the next frame
  uint64_t last_frame_ = 0;  // start of the last committed frame's record
  uint64_t reserved_bytes_ = 0;
  uint64_t reserved_pos_ = 0;
  bool reservation_open_ = false;
  bool reservation_stamped_ = false;
  bool broken_ = false;
  bool closed_ = false;
  bool peer_closed_ = false;
  uint32_t until_sample_ = 0;
  uint64_t park_episode_ = 0;
  uint64_t frames_ = 0;
  uint64_t bytes_ = 0;
  uint64_t backpressure_events_ = 0;
  uint64_t full_waits_ = 0;
  uint64_t readers_detached_ = 0;
  uint64_t wakeups_sent_ = 0;
  uint64_t wakeups_received_ = 0;
  uint32_t wakeup_errors_ = 0;
  std::string broken_message_;
  absl::Status doorbell_status_;
};

// ------------------------------- reader ------------------------------------

enum class [[nodiscard]] BroadcastReadResult{
    kOk,        // a frame (see `missed` for frames skipped just before it)
    kEmpty,     // nothing new now
    kClosed,    // the writer closed (or died) and every committed frame was read
    kBroken,    // the ring is corrupt; status() says why
    kTimeout,   // Read/WaitReadable: the deadline passed
    kTooSmall,  // TryRead/Read: the buffer is smaller than the next frame (kept)
    kDetached,  // the slot was released by the supervisor or detached for lag
};
const char* ToString(BroadcastReadResult r);

enum class [[nodiscard]] ReleaseResult{
    kOk,           // the view was intact until Release
    kOverwritten,  // the writer overwrote it while it was held: counted as missed
};

// Where a new reader starts.
struct ReaderStart {
  enum class Mode { kLiveTail, kHistory, kChannel };
  Mode mode = Mode::kChannel;   // kChannel: the ring's history_frames
  uint32_t history_frames = 0;  // kHistory: up to this many frames still intact
};

struct BroadcastReaderBells {
  std::shared_ptr<const Doorbell> own;     // this reader parks on it; only the writer rings it
  std::shared_ptr<const Doorbell> writer;  // this slot's writer bell (rung for a parked writer)
};

struct BroadcastPeek {
  BroadcastReadResult result;
  std::span<const std::byte> data;  // into shared memory, valid until Release()
  uint64_t seq = 0;                 // the frame's sequence number
  uint64_t missed = 0;              // frames skipped (lapped) just before this one
};

struct FrameInfo {
  uint64_t seq = 0;
  uint64_t missed = 0;  // frames lost just before this one (overwritten)
};

class BroadcastReader {
 public:
  // `ring` should be a read-only mapping of a ReopenReadOnly fd; `page` is
  // this slot's cursor page, read-write. The slot must be active.
  static absl::StatusOr<BroadcastReader> Attach(Segment ring, Segment page, uint32_t slot,
                                                BroadcastReaderBells bells,
                                                ReaderStart start = ReaderStart(),
                                                WaitOptions wait = WaitOptions());

  BroadcastReader(BroadcastReader&&) noexcept = default;
  BroadcastReader& operator=(BroadcastReader&&) noexcept = default;
  ~BroadcastReader();

  // Zero-copy: the next intact frame (skipping, and counting, overwritten
  // ones). Never blocks.
  BroadcastPeek Peek();
  // Releases the frame of the last Peek; kOverwritten if the writer
  // overwrote it meanwhile (the frame is then counted as missed).
  ReleaseResult Release();

  // Copies the next intact frame; *length gets its size (also on kTooSmall).
  BroadcastReadResult TryRead(std::span<std::byte> out, size_t* length, FrameInfo* info = nullptr);
  BroadcastReadResult Read(std::span<std::byte> out, size_t* length,
                           absl::Time deadline = absl::InfiniteFuture(), FrameInfo* info = nullptr);
  BroadcastReadResult Read(std::span<std::byte> out, size_t* length, Deadline deadline,
                           FrameInfo* info = nullptr);

  // Calls fn(std::span<const std::byte>[, const FrameInfo&]) for up to
  // `max_frames` frames, then publishes the cursor once. Returns the number
  // of frames that were intact when fn returned. If a frame was overwritten
  // while fn ran it stops, *overwritten (if given) is true and that frame is
  // counted as missed: discard what fn derived from the last call.
  template <typename Fn>
  size_t Drain(Fn&& fn, size_t max_frames, BroadcastReadResult* result = nullptr,
               bool* overwritten = nullptr);

  // Blocks until a frame is readable, or closed/detached/broken/timeout.
  BroadcastReadResult WaitReadable(absl::Time deadline);
  BroadcastReadResult WaitReadable(Deadline deadline);

  // Publishes the cursor and marks this reader closed (a kBlock writer stops
  // waiting for it) and rings the writer.
  void Close();

  absl::Status status() const;
  const absl::Status& doorbell_status() const { return doorbell_status_; }
  uint32_t slot() const { return slot_; }
  uint64_t epoch() const { return epoch_; }
  uint64_t frames_read() const { return frames_; }
  uint64_t missed_frames() const { return lapped_frames_; }
  uint64_t laps() const { return laps_; }
  // Sequence number of the next frame expected (valid once one was read).
  uint64_t next_seq() const { return next_seq_; }
  const Segment& ring() const { return ring_; }
  uint32_t max_frame_bytes() const { return geo_.max_frame_bytes; }

 private:
  BroadcastReader(Segment ring, Segment page, BroadcastWriter::Geometry geo, uint32_t slot,
                  uint64_t epoch, BroadcastReaderBells bells, WaitOptions wait);
  absl::Status Join(ReaderStart start);
  // Live-tail start: the next frame's sequence number from the last
  // published frame (WriterIndex::last_frame), checked against `publish`.
  bool LearnSeqAt(uint64_t publish);
  BroadcastReadResult PeekAt(BroadcastPeek* out);
  // True if the writer may have started overwriting the record at `pos`.
  bool Overwritten(uint64_t pos) const;
  // Skips to the oldest intact record after a lap; false if broken.
  bool Resync();
  // Non-consuming check used by the waits: kOk if something is published.
  BroadcastReadResult Probe();
  BroadcastReadResult RefreshPublish();
  bool Detached() const;
  bool WriterClosed() const;
  // Moves past the peeked frame; counts it delivered (intact) or missed.
  void Advance(bool intact);
  void CountMissed(uint64_t n);
  void PublishCursor();
  void RecordLatency(const std::byte* stamp);
  bool Fail(uint32_t code, std::string message);
  void DoorbellError(absl::Status s);
  void FinishPark(bool rung);

  Segment ring_;
  Segment page_seg_;
  BroadcastWriter::Geometry geo_;
  ReaderPage* page_ = nullptr;
  const SlotControl* slot_ctl_ = nullptr;
  uint32_t slot_ = 0;
  uint64_t epoch_ = 0;
  BroadcastReaderBells bells_;
  WaitOptions wait_;
  Waiter waiter_;                // what this reader's spins have learned (wait_strategy.h)
  uint64_t pos_ = 0;             // local read position
  uint64_t published_pos_ = 0;   // last cursor stored to the page
  uint64_t cached_publish_ = 0;  // last validated publish position
  uint64_t cached_oldest_ = 0;   // last validated oldest position
  uint64_t next_seq_ = 0;
  bool seq_known_ = false;
  uint64_t peeked_pos_ = 0;
  uint64_t peeked_bytes_ = 0;
  uint64_t peeked_payload_ = 0;
  uint64_t pending_missed_ = 0;  // missed frames not yet reported with a frame
  bool broken_ = false;
  bool closed_ = false;
  uint64_t park_episode_ = 0;
  uint64_t last_rung_ = 0;  // writer waiter word we last rang for
  uint64_t frames_ = 0;
  uint64_t bytes_ = 0;
  uint64_t lapped_frames_ = 0;
  uint64_t laps_ = 0;
  uint64_t empty_waits_ = 0;
  uint64_t wakeups_sent_ = 0;
  uint64_t wakeups_received_ = 0;
  uint64_t latency_count_ = 0;
  uint64_t latency_sum_ns_ = 0;
  uint64_t latency_buckets_[kLatencyBuckets] = {};
  uint32_t wakeup_errors_ = 0;
  std::string broken_message_;
  absl::Status doorbell_status_;
};

// ------------------------------ observers ----------------------------------

struct BroadcastSlotSnapshot {
  uint32_t slot = 0;
  bool active = false;
  bool detached = false;
  uint64_t epoch = 0;
};
struct BroadcastSnapshot {
  uint64_t channel_id = 0;
  uint64_t ring_bytes = 0;
  uint32_t max_frame_bytes = 0;
  SlowReaderPolicy policy = SlowReaderPolicy::kBlock;
  uint64_t publish = 0;
  uint64_t oldest = 0;
  WriterCounters writer{};
  uint32_t writer_closed = 0;
  uint32_t writer_waiting = 0;
  uint32_t supervisor_closed_by = 0;
  std::vector<BroadcastSlotSnapshot> slots;  // active or detached slots only
};
absl::StatusOr<BroadcastSnapshot> ObserveBroadcast(const Segment& ring);

struct ReaderPageSnapshot {
  uint32_t slot = 0;
  uint64_t cursor = 0;
  uint64_t lag_bytes = 0;  // publish - cursor, clamped to [0, ring_bytes] (with the ring given)
  uint32_t waiting = 0;
  ReaderCounters counters{};
};
// `ring` may be null (lag_bytes is then 0).
absl::StatusOr<ReaderPageSnapshot> ObserveReaderPage(const Segment& page, const Segment* ring);

// ---------------------------------------------------------------------------

template <typename Fn>
size_t BroadcastReader::Drain(Fn&& fn, size_t max_frames, BroadcastReadResult* result,
                              bool* overwritten) {
  size_t n = 0;
  BroadcastReadResult last = BroadcastReadResult::kOk;
  if (overwritten != nullptr) *overwritten = false;
  while (n < max_frames) {
    BroadcastPeek p = Peek();
    last = p.result;
    if (last != BroadcastReadResult::kOk) break;
    if constexpr (std::is_invocable_v<Fn&, std::span<const std::byte>, const FrameInfo&>) {
      fn(p.data, FrameInfo{p.seq, p.missed});
    } else {
      fn(p.data);
    }
    if (Overwritten(peeked_pos_)) {
      Advance(/*intact=*/false);  // counted as missed, not delivered
      if (overwritten != nullptr) *overwritten = true;
      break;
    }
    Advance(/*intact=*/true);
    ++n;
  }
  PublishCursor();
  if (result != nullptr) *result = last;
  return n;
}

}  // namespace shmlane::dataplane
