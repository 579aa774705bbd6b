// Fuzz target: the consumer is the victim. libFuzzer's thread is a consumer
// of lane 0 (Peek/Release/TryRead/Read/Drain/WaitReadable/Close) and of a
// LaneSet over lanes 1..N (Poll/Wait/Remove). A second thread plays the
// producer side DURING the victim's calls: it writes frames through real
// Producers, and as a hostile peer scribbles indices, flags, closed words and
// frame headers of lane 0 and of the set's hostile lane 1, flips them in tight
// loops while the victim is blocked, and rings or drains the doorbells it
// holds (lane 0's consumer doorbell, the set's shared doorbell, the set's
// extra fd). Lanes 2..N of the set are honest producers.
//
// Oracles:
//  - every call returns within its deadline + slack (CallGuard, Watchdog);
//  - frames lie inside the ring and within max_frame_bytes;
//  - results are ones the call may return, and kBroken is sticky with
//    status() DataLoss;
//  - lane 0 when the script leaves it clean, and honest set lanes always:
//    the frames arrive exactly as written, in order, never kBroken, and all
//    of them by the end;
//  - lost wake-ups: a wait that times out (or a poll that finds nothing)
//    while an honest frame has been published for kReactNs has missed it
//    (always for honest set lanes; for lane 0 when the peer also left its
//    doorbell alone).
//
// Input: [config 4 bytes][victim script length u16][victim script][adversary
// script]; see Decode* below and tests/fuzz/make_seeds.py.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "dataplane/lane.h"
#include "dataplane/lane_set.h"
#include "tests/fuzz/fuzz_harness.h"

namespace shmlane::fuzz {
namespace {

// ----------------------------------------------------------------- config

struct Config {
  bool clean0 = false;  // skip every scribble, flip and drain aimed at lane 0
  sd::WaitOptions wait;
  sd::LaneOptions lane;
  int set_lanes = 1;  // lanes in the LaneSet (ids 1..set_lanes); id 1 is hostile
  size_t batch = 64;
};

Config DecodeConfig(Bytes& in) {
  static constexpr int64_t kSpinNs[4] = {0, 2'000, 20'000, 50'000};
  static constexpr uint64_t kRing[4] = {4096, 8192, 16384, 65536};
  static constexpr uint32_t kSample[8] = {0, 1, 2, 3, 5, 16, 64, 255};
  static constexpr size_t kBatch[4] = {1, 2, 4, 64};
  Config c;
  const uint8_t b0 = in.U8();
  const uint8_t b1 = in.U8();
  const uint8_t b2 = in.U8();
  const uint8_t b3 = in.U8();
  c.clean0 = (b0 & 1) != 0;
  c.wait.spin = absl::Nanoseconds(kSpinNs[(b0 >> 1) & 3]);
  c.lane.ring_bytes = kRing[(b0 >> 3) & 3];
  c.lane.sample_every = kSample[b0 >> 5];
  const uint32_t max = static_cast<uint32_t>(sd::MaxFrameBytesFor(c.lane.ring_bytes));
  const uint32_t kMaxFrame[8] = {max, 64, 256, 1000, 8, 0, max / 2, max + 8};
  c.lane.max_frame_bytes = kMaxFrame[b2 % 8];
  c.lane.policy = static_cast<sd::BackpressurePolicy>(1 + (b2 >> 3) % 3);
  c.set_lanes = 1 + b1 % 24;
  c.batch = kBatch[b3 % 4];
  return c;
}

// ---------------------------------------------------------------- scripts

enum VictimOp : uint8_t {
  kPeek,
  kRelease,
  kTryRead,
  kRead,
  kDrain,
  kWaitReadable,
  kPoll,
  kSetWait,
  kClose,
  kRemove,
  kSleep,
  kObserve,
  kPeekRelease,
  kVictimOps
};

struct VOp {
  uint8_t op, a, b;
};

std::vector<VOp> DecodeVictim(Bytes in) {
  std::vector<VOp> ops;
  while (!in.empty() && ops.size() < 128) {
    VOp v{static_cast<uint8_t>(in.U8() % kVictimOps), 0, 0};
    switch (v.op) {
      case kTryRead:
      case kDrain:
      case kWaitReadable:
      case kRemove:
      case kSleep:
        v.a = in.U8();
        break;
      case kRead:
      case kSetWait:
        v.a = in.U8();
        v.b = in.U8();
        break;
      default:
        break;
    }
    ops.push_back(v);
  }
  return ops;
}

enum AdvOp : uint8_t {
  kTryWrite,
  kWrite,
  kTryWriteBatch,
  kReserveCommit,
  kPublish,
  kProducerClose,
  kScribble,
  kScribbleSlot,
  kFlip,
  kFlood,
  kDrainBell,
  kSupervisorClose,
  kAwaitCall,
  kAdvSleep,
  kHonestWrite,
  kHonestClose,
  kRingOnce,
  kAdvOps
};

struct AOp {
  uint8_t op = 0, lane = 0, a = 0, b = 0, c = 0, d = 0;
  uint16_t len = 0, len2 = 0;
  uint64_t raw = 0;
};

std::vector<AOp> DecodeAdversary(Bytes in) {
  std::vector<AOp> ops;
  while (!in.empty() && ops.size() < 256) {
    AOp o;
    o.op = in.U8() % kAdvOps;
    switch (o.op) {
      case kTryWrite:
        o.lane = in.U8();
        o.len = in.U16();
        break;
      case kWrite:
        o.lane = in.U8();
        o.len = in.U16();
        o.a = in.U8();
        break;
      case kTryWriteBatch:
        o.lane = in.U8();
        o.a = in.U8();
        o.len = in.U16();
        break;
      case kReserveCommit:
        o.lane = in.U8();
        o.len = in.U16();
        o.len2 = in.U16();
        o.a = in.U8();
        break;
      case kPublish:
      case kProducerClose:
        o.lane = in.U8();
        break;
      case kScribble:
      case kScribbleSlot:
        o.lane = in.U8();
        o.a = in.U8();
        o.b = in.U8();
        o.raw = in.U64();
        break;
      case kFlip:
        o.lane = in.U8();
        o.a = in.U8();  // bit 7: ring slot, else header field; low bits select it
        o.b = in.U8();  // first value
        o.c = in.U8();  // second value
        o.d = in.U8();  // duration
        o.raw = in.U64();
        break;
      case kFlood:
      case kDrainBell:
        o.a = in.U8();  // which doorbell
        o.b = in.U8();  // duration
        break;
      case kSupervisorClose:
        o.lane = in.U8();
        o.a = in.U8();
        break;
      case kAdvSleep:
      case kHonestClose:
      case kRingOnce:
        o.a = in.U8();
        break;
      case kHonestWrite:
        o.a = in.U8();
        o.len = in.U16();
        break;
      default:
        break;
    }
    ops.push_back(o);
  }
  return ops;
}

// ------------------------------------------------------------------ lanes

// One lane: the creator's mapping, the adversary's own mapping of it, the
// producer endpoint (used only on the adversary thread) and what the
// producer wrote.
struct Lane {
  uint32_t salt = 0;
  sd::Segment creator;
  sd::Segment adversary_map;
  const std::byte* consumer_ring = nullptr;  // the consumer's mapping of the ring
  const std::byte* consumer_end = nullptr;
  ShmView view;
  std::shared_ptr<const sd::Doorbell> producer_bell;
  std::shared_ptr<const sd::Doorbell> consumer_bell;
  std::optional<sd::Producer> producer;
  FrameLog log;
  // Consumer-side bookkeeping (victim thread only).
  uint32_t delivered = 0;
  bool ended = false;    // on_end reported it
  bool removed = false;  // the victim removed it
  bool peek_open = false;
  bool broken_seen = false;
};

// Creates a lane and its producer; returns the consumer's segment.
absl::StatusOr<sd::Segment> MakeLane(const Config& cfg, uint32_t id, Lane& lane,
                                     std::shared_ptr<const sd::Doorbell> consumer_bell,
                                     const sd::WaitOptions& producer_wait) {
  sd::LaneOptions o = cfg.lane;
  o.lane_id = id;
  absl::StatusOr<sd::Segment> seg = sd::CreateLaneSegment(o);
  if (!seg.ok()) return seg.status();
  lane.salt = id * 7919 + 1;
  lane.creator = std::move(*seg);
  absl::StatusOr<sd::Doorbell> pb = sd::Doorbell::Create();
  if (!pb.ok()) return pb.status();
  lane.producer_bell = std::make_shared<const sd::Doorbell>(std::move(*pb));
  lane.consumer_bell = std::move(consumer_bell);
  auto map = [&]() { return sd::Segment::Map(*lane.creator.DupFd(), sd::Access::kReadWrite); };
  absl::StatusOr<sd::Segment> adv = map();
  absl::StatusOr<sd::Segment> prod = map();
  absl::StatusOr<sd::Segment> cons = map();
  if (!adv.ok() || !prod.ok() || !cons.ok()) return absl::InternalError("map");
  lane.adversary_map = std::move(*adv);
  lane.view = {lane.adversary_map.data(), o.ring_bytes, o.max_frame_bytes};
  absl::StatusOr<sd::Producer> p = sd::Producer::Attach(
      std::move(*prod), {lane.producer_bell, lane.consumer_bell}, producer_wait);
  if (!p.ok()) Fail("Producer::Attach on a fresh lane: %s", p.status().ToString().c_str());
  lane.producer.emplace(std::move(*p));
  lane.consumer_ring = cons->data() + sd::kLaneHeaderBytes;
  lane.consumer_end = cons->data() + cons->size();
  return std::move(*cons);
}

// The consumer's park counter of a lane, in shared memory.
const uint64_t* ConsumerParks(const Lane& l) {
  return &reinterpret_cast<const sd::LaneBlocks*>(l.creator.data())->consumer_counters.empty_waits;
}

// The frame of lane `lane` is inside its ring and no longer than allowed.
void CheckInside(const Lane& lane, std::span<const std::byte> frame, uint32_t max_frame) {
  const std::byte* lo = lane.consumer_ring;
  const std::byte* hi = lane.consumer_end;
  if (frame.size() > max_frame)
    Fail("frame of %zu bytes > max_frame_bytes %u", frame.size(), max_frame);
  if (!frame.empty() && (frame.data() < lo || frame.data() + frame.size() > hi)) {
    Fail("frame [%p, +%zu) lies outside the ring [%p, %p)", static_cast<const void*>(frame.data()),
         frame.size(), static_cast<const void*>(lo), static_cast<const void*>(hi));
  }
}

// ------------------------------------------------------------- adversary

// The producer side of every lane, honest or not. Runs its script once,
// then publishes what it left deferred.
class Adversary {
 public:
  Adversary(const Config& cfg, std::vector<std::unique_ptr<Lane>>& lanes, VictimState& victim,
            const sd::Doorbell& also)
      : cfg_(cfg), lanes_(lanes), victim_(victim), also_(also) {
    scratch_.resize(1 << 16);
  }

  void Run(const std::vector<AOp>& ops) {
    const uint64_t start = NowNs();
    for (const AOp& o : ops) {
      if (NowNs() - start > 300'000'000) break;
      Step(o);
    }
    for (auto& l : lanes_) {
      if (l->producer.has_value() && !l->log.closed.load()) {
        l->producer->Publish();
        MarkPublished(*l);
      }
    }
  }

  // Lane 0, or the set's hostile lane 1.
  Lane& Pick(uint8_t sel) { return *lanes_[(sel & 1) != 0 && lanes_.size() > 1 ? 1 : 0]; }
  // An honest set lane (2..), or null if there is none.
  Lane* Honest(uint8_t sel) {
    if (lanes_.size() <= 2) return nullptr;
    return lanes_[2 + sel % (lanes_.size() - 2)].get();
  }

 private:
  int BellFd(uint8_t which) {
    switch (which % 4) {
      case 0:
        return lanes_[0]->consumer_bell->fd();
      case 1:
        return lanes_.size() > 1 ? lanes_[1]->consumer_bell->fd() : lanes_[0]->consumer_bell->fd();
      case 2:
        return also_.fd();
      default:
        return lanes_[0]->producer_bell->fd();
    }
  }

  uint32_t FrameLen(const Lane& l, uint16_t raw) const {
    return raw % (l.view.max_frame + 9u);  // a few past the limit: kTooLarge
  }

  static void MarkPublished(Lane& l) {
    const uint32_t committed = l.log.committed.load(std::memory_order_relaxed);
    uint32_t p = l.log.published.load(std::memory_order_relaxed);
    if (p == committed) return;
    const uint64_t now = NowNs();
    for (; p < committed; ++p) l.log.published_ns[p % FrameLog::kMax].store(now);
    l.log.published.store(committed, std::memory_order_release);
  }

  // Stages frame `seq` of `len` bytes in the log and the scratch buffer.
  std::span<const std::byte> Stage(Lane& l, uint32_t seq, uint32_t len, size_t at = 0) {
    l.log.len[seq % FrameLog::kMax].store(len, std::memory_order_relaxed);
    std::span<std::byte> out(scratch_.data() + at, len);
    FillFrame(l.salt, seq, out);
    return out;
  }

  bool Room(const Lane& l, uint32_t n = 1) const {
    return l.log.committed.load(std::memory_order_relaxed) + n < FrameLog::kMax - 1;
  }

  // One frame through TryWrite (or Write with `deadline`).
  void WriteOne(Lane& l, uint16_t raw_len, const Deadline* deadline) {
    if (!Room(l) || l.log.closed.load()) return;
    const uint32_t seq = l.log.committed.load(std::memory_order_relaxed);
    const uint32_t len = FrameLen(l, raw_len);
    std::span<const std::byte> f = Stage(l, seq, len);
    l.log.committed.store(seq + 1, std::memory_order_release);
    const sd::WriteResult r =
        deadline != nullptr ? l.producer->Write(f, deadline->at) : l.producer->TryWrite(f);
    if (r == sd::WriteResult::kOk) {
      MarkPublished(l);
    } else {
      l.log.committed.store(seq, std::memory_order_release);
    }
  }

  void Step(const AOp& o) {
    switch (o.op) {
      case kTryWrite:
        WriteOne(Pick(o.lane), o.len, nullptr);
        break;
      case kWrite: {
        int64_t budget = 5000;
        Deadline d = MakeDeadline(o.a % 6, &budget);
        WriteOne(Pick(o.lane), o.len, &d);
        break;
      }
      case kTryWriteBatch: {
        Lane& l = Pick(o.lane);
        const uint32_t count = 1 + o.a % 16;
        if (!Room(l, count) || l.log.closed.load()) break;
        const uint32_t seq = l.log.committed.load(std::memory_order_relaxed);
        std::vector<std::span<const std::byte>> frames;
        size_t at = 0;
        for (uint32_t i = 0; i < count; ++i) {
          const uint32_t len = FrameLen(l, static_cast<uint16_t>(o.len + i * 37));
          if (at + len > scratch_.size()) break;
          frames.push_back(Stage(l, seq + i, len, at));
          at += len;
        }
        l.log.committed.store(seq + static_cast<uint32_t>(frames.size()),
                              std::memory_order_release);
        sd::WriteResult why = sd::WriteResult::kOk;
        const size_t n = l.producer->TryWriteBatch(frames, &why);
        l.log.committed.store(seq + static_cast<uint32_t>(n), std::memory_order_release);
        MarkPublished(l);
        break;
      }
      case kReserveCommit: {
        Lane& l = Pick(o.lane);
        if (!Room(l) || l.log.closed.load()) break;
        const uint32_t n = FrameLen(l, o.len);
        sd::Reservation r = l.producer->Reserve(n);
        if (r.result != sd::WriteResult::kOk) break;
        const uint32_t used = n == 0 ? 0 : o.len2 % (n + 1);
        const uint32_t seq = l.log.committed.load(std::memory_order_relaxed);
        l.log.len[seq % FrameLog::kMax].store(used, std::memory_order_relaxed);
        FillFrame(l.salt, seq, r.data.first(used));
        l.log.committed.store(seq + 1, std::memory_order_release);
        const bool now = (o.a & 1) != 0;
        l.producer->Commit(used, now ? sd::PublishMode::kNow : sd::PublishMode::kDefer);
        if (now) MarkPublished(l);
        break;
      }
      case kPublish: {
        Lane& l = Pick(o.lane);
        l.producer->Publish();
        MarkPublished(l);
        break;
      }
      case kProducerClose: {
        Lane& l = Pick(o.lane);
        l.log.closed.store(true);  // before the consumer can see it
        l.producer->Close();
        MarkPublished(l);
        break;
      }
      case kScribble: {
        Lane& l = Pick(o.lane);
        if (cfg_.clean0 && &l == lanes_[0].get()) break;
        const Target t = PickField(l.view, o.a, o.raw);
        Poke(l.view, t, PickValue(l.view, t, o.b, o.raw));
        break;
      }
      case kScribbleSlot: {
        Lane& l = Pick(o.lane);
        if (cfg_.clean0 && &l == lanes_[0].get()) break;
        const Target t = PickSlot(l.view, o.a, o.raw);
        Poke(l.view, t, PickValue(l.view, t, o.b, o.raw));
        break;
      }
      case kFlip: {
        Lane& l = Pick(o.lane);
        if (cfg_.clean0 && &l == lanes_[0].get()) break;
        const Target t =
            (o.a & 0x80) != 0 ? PickSlot(l.view, o.a, o.raw) : PickField(l.view, o.a, o.raw);
        const uint64_t v1 = PickValue(l.view, t, o.b, o.raw);
        const uint64_t v2 = PickValue(l.view, t, o.c, ~o.raw);
        bool phase = false;
        Loop(victim_, o.d, [&] {
          Poke(l.view, t, phase ? v2 : v1);
          phase = !phase;
        });
        break;
      }
      case kFlood: {
        const int fd = BellFd(o.a);
        Loop(victim_, o.b, [&] { RingFd(fd); });
        break;
      }
      case kDrainBell: {
        if (cfg_.clean0 && o.a % 4 == 0) break;
        const int fd = BellFd(o.a);
        Loop(victim_, o.b, [&] { DrainFd(fd); });
        break;
      }
      case kSupervisorClose: {
        static constexpr uint32_t kBits[4] = {sd::kClosedProducerGone, sd::kClosedConsumerGone,
                                              sd::kClosedDeleted,
                                              sd::kClosedProducerGone | sd::kClosedConsumerGone};
        Lane& l = Pick(o.lane);
        sd::SupervisorClose(l.creator, kBits[o.a % 4], l.producer_bell.get(),
                            l.consumer_bell.get());
        break;
      }
      case kAwaitCall:
        AwaitCall(victim_);
        break;
      case kAdvSleep:
        ::usleep(10u * (o.a % 64));
        break;
      case kHonestWrite:
        if (Lane* l = Honest(o.a); l != nullptr) WriteOne(*l, o.len, nullptr);
        break;
      case kHonestClose:
        if (Lane* l = Honest(o.a); l != nullptr && !l->log.closed.load()) {
          l->log.closed.store(true);
          l->producer->Close();
        }
        break;
      case kRingOnce:
        RingFd(BellFd(o.a));
        break;
      default:
        break;
    }
  }

  const Config& cfg_;
  std::vector<std::unique_ptr<Lane>>& lanes_;
  VictimState& victim_;
  const sd::Doorbell& also_;
  std::vector<std::byte> scratch_;
};

// ---------------------------------------------------------------- victim

class Victim {
 public:
  Victim(const Config& cfg, std::vector<std::unique_ptr<Lane>>& lanes, sd::Consumer& c0,
         sd::LaneSet& set, VictimState& state, const sd::Doorbell& also, bool clean0, bool wake0)
      : cfg_(cfg),
        lanes_(lanes),
        c0_(c0),
        set_(set),
        state_(state),
        also_(also),
        clean0_(clean0),
        wake0_(wake0) {
    buf_.resize(1 << 16);
  }

  void Run(const std::vector<VOp>& ops) {
    for (const VOp& v : ops) Step(v);
  }

  // After the adversary has finished: everything published must arrive.
  void Finish();

 private:
  auto OnFrameFn() {
    return [this](uint64_t id, std::span<const std::byte> f) { OnSetFrame(id, f); };
  }
  auto OnEndFn() {
    return [this](uint64_t id, sd::ReadResult why, const absl::Status& s) { OnSetEnd(id, why, s); };
  }

  void OnSetFrame(uint64_t id, std::span<const std::byte> f) {
    if (id < 1 || id >= lanes_.size()) Fail("LaneSet delivered a frame of unknown lane %lu", id);
    Lane& l = *lanes_[id];
    if (l.ended || l.removed) Fail("LaneSet delivered a frame of lane %lu after it ended", id);
    CheckInside(l, f, cfg_.lane.max_frame_bytes);
    if (id >= 2) {
      CheckFrame("honest set lane", l.salt, l.log, l.delivered, f);
      NoteAvailable(l, l.delivered);
    }
    ++l.delivered;
  }

  void OnSetEnd(uint64_t id, sd::ReadResult why, const absl::Status& s) {
    if (id < 1 || id >= lanes_.size()) Fail("LaneSet ended unknown lane %lu", id);
    Lane& l = *lanes_[id];
    if (l.ended || l.removed) Fail("LaneSet ended lane %lu twice", id);
    l.ended = true;
    if (why == sd::ReadResult::kBroken) {
      if (s.code() != absl::StatusCode::kDataLoss) {
        Fail("lane %lu ended kBroken with status %s (want DataLoss)", id, s.ToString().c_str());
      }
      if (id >= 2) Fail("honest set lane %lu reported broken: %s", id, s.ToString().c_str());
    } else if (why == sd::ReadResult::kClosed) {
      if (!s.ok()) Fail("lane %lu ended kClosed with status %s", id, s.ToString().c_str());
      if (id >= 2 && (!l.log.closed.load() || l.delivered != l.log.published.load())) {
        Fail("honest set lane %lu reported closed after %u of %u frames (producer closed: %d)", id,
             l.delivered, l.log.published.load(), l.log.closed.load() ? 1 : 0);
      }
    } else {
      Fail("LaneSet on_end with %s", sd::ToString(why));
    }
  }

  // Lost wake-up oracle for delivered frames: a frame that became available
  // during a blocking call (published after it started) must be delivered
  // within kReactNs, not at the deadline. BeginWait/EndWait bracket the call.
  void BeginWait(uint64_t start) {
    wait_start_ = start;
    oldest_available_ = UINT64_MAX;
  }
  void NoteAvailable(const Lane& l, uint32_t seq) {
    const uint64_t t = l.log.published_ns[seq % FrameLog::kMax].load();
    if (t == 0 || wait_start_ == 0) return;  // not recorded yet: it is recent
    oldest_available_ = std::min(oldest_available_, std::max(t, wait_start_));
  }
  void EndWait(const char* what, uint64_t end) {
    if (oldest_available_ != UINT64_MAX && end > oldest_available_ + kReactNs &&
        OracleEnabled("lost-wakeup")) {
      Fail(
          "%s delivered a frame %.1f ms after it was published (a wake-up was lost or "
          "swallowed; the frame was found only at the deadline)",
          what, static_cast<double>(end - oldest_available_) / 1e6);
    }
    wait_start_ = 0;
    oldest_available_ = UINT64_MAX;
  }

  // The park counter of a lane still in the set (every lane of a parked set
  // counts the park).
  const uint64_t* SetParks() const {
    for (size_t id = lanes_.size() - 1; id >= 1; --id) {
      if (!lanes_[id]->ended && !lanes_[id]->removed) return ConsumerParks(*lanes_[id]);
    }
    return nullptr;
  }

  // Lost wake-up oracle of the set: returned with nothing while an honest
  // lane has had a frame published for kReactNs.
  void CheckSetLiveness(const char* what, uint64_t end) {
    if (!OracleEnabled("lost-wakeup")) return;
    for (size_t id = 2; id < lanes_.size(); ++id) {
      Lane& l = *lanes_[id];
      if (l.ended || l.removed) continue;
      const uint32_t pub = l.log.published.load(std::memory_order_acquire);
      if (l.delivered >= pub) continue;
      const uint64_t t = l.log.published_ns[l.delivered % FrameLog::kMax].load();
      if (end > t + kReactNs) {
        Fail(
            "%s returned no frame although honest lane %zu published frame #%u %.1f ms earlier "
            "(a wake-up was lost or swallowed)",
            what, id, l.delivered, static_cast<double>(end - t) / 1e6);
      }
    }
  }

  void CheckLiveness0(const char* what, uint64_t end) {
    if (!wake0_ || !OracleEnabled("lost-wakeup")) return;
    Lane& l = *lanes_[0];
    const uint32_t pub = l.log.published.load(std::memory_order_acquire);
    if (l.delivered >= pub) return;
    const uint64_t t = l.log.published_ns[l.delivered % FrameLog::kMax].load();
    if (end > t + kReactNs) {
      Fail("lane 0: %s found nothing although frame #%u was published %.1f ms earlier", what,
           l.delivered, static_cast<double>(end - t) / 1e6);
    }
  }

  // Every result of a lane-0 call goes through here.
  void CheckResult0(const char* what, sd::ReadResult r) {
    Lane& l = *lanes_[0];
    if (l.broken_seen && r != sd::ReadResult::kBroken) {
      Fail("lane 0: %s returned %s after the lane was reported broken", what, sd::ToString(r));
    }
    if (r == sd::ReadResult::kBroken) {
      if (clean0_)
        Fail("lane 0 (clean): %s returned kBroken: %s", what, c0_.status().ToString().c_str());
      l.broken_seen = true;
    }
    if (l.broken_seen && c0_.status().code() != absl::StatusCode::kDataLoss) {
      Fail("lane 0: broken, but status() is %s", c0_.status().ToString().c_str());
    }
    if (!l.broken_seen && !c0_.status().ok()) {
      Fail("lane 0: status() is %s without a kBroken result", c0_.status().ToString().c_str());
    }
  }

  void OnFrame0(std::span<const std::byte> f) {
    Lane& l = *lanes_[0];
    CheckInside(l, f, cfg_.lane.max_frame_bytes);
    if (clean0_) CheckFrame("lane 0", l.salt, l.log, l.delivered, f);
  }

  void OnRead0(const char* what, sd::ReadResult r, size_t n) {
    CheckResult0(what, r);
    Lane& l = *lanes_[0];
    if (r == sd::ReadResult::kOk) {
      if (clean0_) {
        CheckFrame("lane 0", l.salt, l.log, l.delivered,
                   std::span<const std::byte>(buf_.data(), n));
      } else if (n > cfg_.lane.max_frame_bytes) {
        Fail("lane 0: %s read %zu bytes > max %u", what, n, cfg_.lane.max_frame_bytes);
      }
      ++l.delivered;
      l.peek_open = false;
    } else if (r == sd::ReadResult::kTooSmall) {
      l.peek_open = true;  // the frame stays peeked: Release() consumes it
      const uint32_t want = l.log.len[l.delivered % FrameLog::kMax].load();
      if (clean0_ && n != want) Fail("lane 0: kTooSmall reports %zu bytes, frame has %u", n, want);
    }
  }

  size_t BufSize(uint8_t sel) const {
    const size_t max = cfg_.lane.max_frame_bytes;
    const size_t kSizes[6] = {0, 8, 64, max, max > 0 ? max - 1 : 0, 1 << 16};
    return kSizes[sel % 6];
  }

  void Step(const VOp& v) {
    Lane& l0 = *lanes_[0];
    switch (v.op) {
      case kPeek:
      case kPeekRelease: {
        CallGuard g(state_, "Consumer::Peek", -1);
        sd::PeekResult p = c0_.Peek();
        g.Done();
        CheckResult0("Peek", p.result);
        if (p.result == sd::ReadResult::kTooSmall || p.result == sd::ReadResult::kTimeout) {
          Fail("Peek returned %s", sd::ToString(p.result));
        }
        if (p.result == sd::ReadResult::kOk) {
          OnFrame0(p.data);
          l0.peek_open = true;
          if (v.op == kPeekRelease) Release0();
        }
        break;
      }
      case kRelease:
        Release0();
        break;
      case kTryRead: {
        size_t n = 0;
        std::span<std::byte> out(buf_.data(), BufSize(v.a));
        CallGuard g(state_, "Consumer::TryRead", -1);
        const sd::ReadResult r = c0_.TryRead(out, &n);
        const uint64_t end = g.Done();
        if (r == sd::ReadResult::kTimeout) Fail("TryRead returned kTimeout");
        OnRead0("TryRead", r, n);
        if (r == sd::ReadResult::kEmpty) CheckLiveness0("TryRead", end);
        break;
      }
      case kRead: {
        size_t n = 0;
        std::span<std::byte> out(buf_.data(), BufSize(v.a));
        const Deadline d = MakeDeadline(v.b, &budget_us_);
        CallGuard g(state_, "Consumer::Read", d.timeout_ns, ConsumerParks(l0));
        const sd::ReadResult r = c0_.Read(out, &n, d.at);
        const uint64_t end = g.Done();
        if (r == sd::ReadResult::kEmpty) Fail("Read returned kEmpty");
        if (r == sd::ReadResult::kOk && wake0_) {
          BeginWait(g.start());
          NoteAvailable(l0, l0.delivered);
          EndWait("Consumer::Read", end);
        }
        OnRead0("Read", r, n);
        if (r == sd::ReadResult::kTimeout) CheckLiveness0("Read", end);
        break;
      }
      case kDrain: {
        sd::ReadResult why = sd::ReadResult::kOk;
        const size_t max = v.a % 40;
        size_t seen = 0;
        CallGuard g(state_, "Consumer::Drain", -1);
        const size_t n = c0_.Drain(
            [&](std::span<const std::byte> f) {
              OnFrame0(f);
              ++l0.delivered;
              ++seen;
            },
            max, &why);
        g.Done();
        if (n != seen) Fail("Drain returned %zu but called fn %zu times", n, seen);
        if (n > 0) l0.peek_open = false;
        // Drain(0) stops "at max_frames" before looking at the lane: kOk.
        if (max == 0) {
          if (n != 0 || why != sd::ReadResult::kOk)
            Fail("Drain(0) returned %zu, %s", n, sd::ToString(why));
          break;
        }
        CheckResult0("Drain", why);
        if (why == sd::ReadResult::kTooSmall || why == sd::ReadResult::kTimeout ||
            (why == sd::ReadResult::kOk && n != max)) {
          Fail("Drain(%zu) returned %zu with %s", max, n, sd::ToString(why));
        }
        break;
      }
      case kWaitReadable: {
        const Deadline d = MakeDeadline(v.a, &budget_us_);
        CallGuard g(state_, "Consumer::WaitReadable", d.timeout_ns, ConsumerParks(l0));
        const sd::ReadResult r = c0_.WaitReadable(d.at);
        const uint64_t end = g.Done();
        if (r == sd::ReadResult::kOk && wake0_ && l0.delivered < l0.log.published.load()) {
          BeginWait(g.start());
          NoteAvailable(l0, l0.delivered);
          EndWait("Consumer::WaitReadable", end);
        }
        CheckResult0("WaitReadable", r);
        if (r == sd::ReadResult::kEmpty || r == sd::ReadResult::kTooSmall) {
          Fail("WaitReadable returned %s", sd::ToString(r));
        }
        if (r == sd::ReadResult::kTimeout) CheckLiveness0("WaitReadable", end);
        break;
      }
      case kPoll: {
        CallGuard g(state_, "LaneSet::Poll", -1);
        const size_t n = set_.Poll(OnFrameFn(), OnEndFn());
        const uint64_t end = g.Done();
        if (n == 0) CheckSetLiveness("LaneSet::Poll", end);
        break;
      }
      case kSetWait: {
        const Deadline d = MakeDeadline(v.a, &budget_us_);
        const int also = (v.b & 1) != 0 ? also_.fd() : -1;
        CallGuard g(state_, "LaneSet::Wait", d.timeout_ns, SetParks());
        BeginWait(g.start());
        const size_t n = set_.Wait(OnFrameFn(), OnEndFn(), d.at, also);
        const uint64_t end = g.Done();
        EndWait("LaneSet::Wait", end);
        if (also >= 0) also_.Clear();
        if (Tracing() && lanes_.size() > 1) {
          absl::StatusOr<sd::LaneSnapshot> snap = sd::Observe(lanes_[1]->creator);
          if (snap.ok()) {
            std::fprintf(stderr, "  lane 1 consumer: %lu parks, %lu rung wake-ups\n",
                         snap->consumer.empty_waits, snap->consumer.wakeups_received);
          }
        }
        if (n == 0) CheckSetLiveness("LaneSet::Wait", end);
        break;
      }
      case kClose: {
        CallGuard g(state_, "Consumer::Close", -1);
        c0_.Close();
        break;
      }
      case kRemove: {
        const uint64_t id = 1 + v.a % (lanes_.size() - 1);
        CallGuard g(state_, "LaneSet::Remove", -1);
        const bool had = set_.Remove(id);
        g.Done();
        Lane& l = *lanes_[id];
        if (had != (!l.ended && !l.removed)) {
          Fail("LaneSet::Remove(%lu) returned %d (ended %d, removed %d)", id, had ? 1 : 0,
               l.ended ? 1 : 0, l.removed ? 1 : 0);
        }
        if (had) l.removed = true;
        break;
      }
      case kSleep:
        ::usleep(100u * (v.a % 16));
        break;
      case kObserve:
        for (auto& l : lanes_) {
          // Observe re-reads the header, which a hostile peer may scribble
          // (DataLoss is then right); honest lanes and a clean lane 0 pass.
          absl::StatusOr<sd::LaneSnapshot> s = sd::Observe(l->creator);
          const bool trusted =
              l.get() != lanes_[1].get() && (l.get() != lanes_[0].get() || clean0_);
          if (!s.ok() && (trusted || s.status().code() != absl::StatusCode::kDataLoss)) {
            Fail("Observe: %s", s.status().ToString().c_str());
          }
          if (s.ok() && s->occupancy_bytes > s->ring_bytes) Fail("Observe: occupancy > ring");
        }
        break;
      default:
        break;
    }
  }

  // Only after a Peek (or kTooSmall) that left a frame peeked: Release()
  // consumes "the frame returned by the last Peek()".
  void Release0() {
    Lane& l0 = *lanes_[0];
    if (!l0.peek_open) return;
    CallGuard g(state_, "Consumer::Release", -1);
    c0_.Release();
    g.Done();
    ++l0.delivered;
    l0.peek_open = false;
  }

  const Config& cfg_;
  std::vector<std::unique_ptr<Lane>>& lanes_;
  sd::Consumer& c0_;
  sd::LaneSet& set_;
  VictimState& state_;
  const sd::Doorbell& also_;
  const bool clean0_;
  const bool wake0_;
  int64_t budget_us_ = 250'000;
  uint64_t wait_start_ = 0;
  uint64_t oldest_available_ = UINT64_MAX;
  std::vector<std::byte> buf_;
};

void Victim::Finish() {
  Lane& l0 = *lanes_[0];
  for (uint32_t i = 0; i < FrameLog::kMax + 8; ++i) {
    size_t n = 0;
    CallGuard g(state_, "final Consumer::TryRead", -1);
    const sd::ReadResult r = c0_.TryRead(buf_, &n);
    g.Done();
    OnRead0("TryRead", r, n);
    if (r != sd::ReadResult::kOk) {
      if (clean0_ && r != sd::ReadResult::kEmpty && r != sd::ReadResult::kClosed) {
        Fail("lane 0 (clean): final read ended with %s", sd::ToString(r));
      }
      break;
    }
  }
  if (clean0_) {
    const uint32_t published = l0.log.published.load();
    const uint32_t committed = l0.log.committed.load();
    if (l0.delivered < published || l0.delivered > committed) {
      Fail("lane 0 (clean): consumer got %u frames, producer published %u (committed %u)",
           l0.delivered, published, committed);
    }
  }
  for (int i = 0; i < 64 && !set_.empty(); ++i) {
    CallGuard g(state_, "final LaneSet::Poll", -1);
    const size_t n = set_.Poll(OnFrameFn(), OnEndFn());
    g.Done();
    if (n == 0) break;
  }
  for (size_t id = 2; id < lanes_.size(); ++id) {
    Lane& l = *lanes_[id];
    if (l.removed) continue;
    if (l.delivered != l.log.published.load()) {
      Fail("honest set lane %zu: delivered %u of %u published frames by the end", id, l.delivered,
           l.log.published.load());
    }
  }
}

}  // namespace
}  // namespace shmlane::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shmlane::fuzz;  // NOLINT(google-build-using-namespace): a fuzz entry point
  Bytes in(data, size);
  const Config cfg = DecodeConfig(in);
  if (absl::Status s = sd::ValidateLaneOptions(cfg.lane); !s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument)
      Fail("ValidateLaneOptions: %s", s.ToString().c_str());
    return 0;
  }
  const uint16_t vlen = in.U16();
  const std::vector<VOp> vops = DecodeVictim(in.Take(vlen % 512));
  const std::vector<AOp> aops = DecodeAdversary(in);

  // Lane 0 stays clean (exact delivery) when the script never touches its
  // memory; its wake-ups are owed when the peer also leaves its doorbell be.
  bool clean0 = cfg.clean0;
  bool wake0 = true;
  if (!clean0) {
    clean0 = true;
    for (const AOp& o : aops) {
      const bool lane0 = (o.lane & 1) == 0;
      if ((o.op == kScribble || o.op == kScribbleSlot || o.op == kFlip) && lane0) clean0 = false;
    }
  }
  for (const AOp& o : aops) {
    if (o.op == kDrainBell && o.a % 4 == 0 && !cfg.clean0) wake0 = false;
  }
  wake0 = wake0 && clean0;

  auto bell = [] {
    absl::StatusOr<sd::Doorbell> b = sd::Doorbell::Create();
    if (!b.ok()) Fail("Doorbell::Create: %s", b.status().ToString().c_str());
    return std::make_shared<const sd::Doorbell>(std::move(*b));
  };
  std::shared_ptr<const sd::Doorbell> c0_bell = bell();
  std::shared_ptr<const sd::Doorbell> set_bell = bell();
  std::shared_ptr<const sd::Doorbell> also = bell();

  std::vector<std::unique_ptr<Lane>> lanes;
  const sd::WaitOptions producer_wait{absl::Microseconds(5)};
  lanes.push_back(std::make_unique<Lane>());
  absl::StatusOr<sd::Segment> c0_seg = MakeLane(cfg, 0, *lanes[0], c0_bell, producer_wait);
  if (!c0_seg.ok()) Fail("lane 0: %s", c0_seg.status().ToString().c_str());
  absl::StatusOr<sd::Consumer> c0 =
      sd::Consumer::Attach(std::move(*c0_seg), {c0_bell, lanes[0]->producer_bell}, cfg.wait);
  if (!c0.ok()) Fail("Consumer::Attach: %s", c0.status().ToString().c_str());
  sd::LaneSet set(set_bell, cfg.batch, cfg.wait);
  for (int id = 1; id <= cfg.set_lanes; ++id) {
    lanes.push_back(std::make_unique<Lane>());
    // Each lane its own consumer-side bell, as the daemon hands them out: a
    // hostile lane can ring or drain only its own (issue 8, defect 2).
    std::shared_ptr<const sd::Doorbell> lane_bell = bell();
    absl::StatusOr<sd::Segment> seg = MakeLane(cfg, id, *lanes.back(), lane_bell, producer_wait);
    if (!seg.ok()) Fail("set lane %d: %s", id, seg.status().ToString().c_str());
    absl::StatusOr<sd::Consumer> c =
        sd::Consumer::Attach(std::move(*seg), {lane_bell, lanes.back()->producer_bell}, cfg.wait);
    if (!c.ok()) Fail("Consumer::Attach: %s", c.status().ToString().c_str());
    set.Add(static_cast<uint64_t>(id), std::move(*c));
  }

  VictimState state;
  Adversary adversary(cfg, lanes, state, *also);
  Victim victim(cfg, lanes, *c0, set, state, *also, clean0, wake0);
  std::thread peer([&] { adversary.Run(aops); });
  victim.Run(vops);
  state.done.store(true);
  peer.join();
  victim.Finish();
  return 0;
}
