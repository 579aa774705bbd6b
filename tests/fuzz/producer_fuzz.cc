// Fuzz target: the producer is the victim. libFuzzer's thread drives a
// Producer (TryWrite, Write under the lane's backpressure policy, TryWriteBatch,
// Reserve/Commit with kNow and kDefer, Publish, Close); a second thread plays
// the consumer side DURING the victim's calls: it reads through a real
// Consumer, and as a hostile peer scribbles the consumer-owned words (head,
// waiting, closed), the supervisor word and frame headers, flips them in tight
// loops while the victim is blocked, and floods or drains the producer's
// doorbell (the consumer holds it to ring it).
//
// Oracles:
//  - every call returns within its deadline + slack; calls that must not
//    block (TryWrite, TryWriteBatch, Reserve, Commit, Publish, Close, and
//    Write under kFailFast/kDrop) within the slack alone;
//  - results are ones the call may return under the lane's policy; a frame
//    over max_frame_bytes is never accepted; reservations lie in the ring;
//  - kBroken is sticky and status() is then DataLoss (and only then);
//  - when the script leaves the lane clean: never kBroken, the consumer gets
//    exactly the frames written, in order, and all of them by the end; and
//    Write never times out on a ring the consumer had emptied kReactNs
//    before (committed frames left unpublished while parked: issue 8 item 3).
//
// Input: [config 3 bytes][victim script length u16][victim script][consumer
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
#include "tests/fuzz/fuzz_harness.h"

namespace shmlane::fuzz {
namespace {

struct Config {
  bool clean = false;  // skip every scribble, flip and doorbell drain
  sd::WaitOptions wait;
  sd::WaitOptions consumer_wait;
  sd::LaneOptions lane;
};

Config DecodeConfig(Bytes& in) {
  static constexpr int64_t kSpinNs[4] = {0, 2'000, 20'000, 50'000};
  static constexpr uint64_t kRing[4] = {4096, 8192, 16384, 65536};
  static constexpr uint32_t kSample[8] = {0, 1, 2, 3, 5, 16, 64, 255};
  Config c;
  const uint8_t b0 = in.U8();
  const uint8_t b1 = in.U8();
  const uint8_t b2 = in.U8();
  c.clean = (b0 & 1) != 0;
  c.wait.spin = absl::Nanoseconds(kSpinNs[(b0 >> 1) & 3]);
  c.lane.ring_bytes = kRing[(b0 >> 3) & 3];
  c.lane.sample_every = kSample[b0 >> 5];
  const uint32_t max = static_cast<uint32_t>(sd::MaxFrameBytesFor(c.lane.ring_bytes));
  const uint32_t kMaxFrame[8] = {max, 64, 256, 1000, 8, 0, max / 2, max + 8};
  c.lane.max_frame_bytes = kMaxFrame[b1 % 8];
  c.lane.policy = static_cast<sd::BackpressurePolicy>(1 + (b1 >> 3) % 3);
  c.consumer_wait.spin = absl::Nanoseconds(kSpinNs[b2 & 3]);
  return c;
}

enum VictimOp : uint8_t {
  kTryWrite,
  kWrite,
  kTryWriteBatch,
  kReserve,
  kCommit,
  kPublish,
  kClose,
  kSleep,
  kObserve,
  kVictimOps
};

struct VOp {
  uint8_t op = 0, a = 0, b = 0;
  uint16_t len = 0;
};

std::vector<VOp> DecodeVictim(Bytes in) {
  std::vector<VOp> ops;
  while (!in.empty() && ops.size() < 128) {
    VOp v;
    v.op = in.U8() % kVictimOps;
    switch (v.op) {
      case kTryWrite:
      case kReserve:
        v.len = in.U16();
        break;
      case kWrite:
        v.len = in.U16();
        v.a = in.U8();
        break;
      case kTryWriteBatch:
        v.a = in.U8();
        v.len = in.U16();
        break;
      case kCommit:
        v.len = in.U16();
        v.a = in.U8();
        break;
      case kSleep:
        v.a = in.U8();
        break;
      default:
        break;
    }
    ops.push_back(v);
  }
  return ops;
}

enum AdvOp : uint8_t {
  kTryRead,
  kRead,
  kDrain,
  kPeek,
  kRelease,
  kConsumerClose,
  kScribble,
  kScribbleSlot,
  kFlip,
  kFlood,
  kDrainBell,
  kSupervisorClose,
  kAwaitCall,
  kAdvSleep,
  kRingOnce,
  kConsume,
  kAdvOps
};

struct AOp {
  uint8_t op = 0, a = 0, b = 0, c = 0, d = 0;
  uint64_t raw = 0;
};

std::vector<AOp> DecodeAdversary(Bytes in) {
  std::vector<AOp> ops;
  while (!in.empty() && ops.size() < 256) {
    AOp o;
    o.op = in.U8() % kAdvOps;
    switch (o.op) {
      case kTryRead:
      case kDrain:
      case kFlood:
      case kDrainBell:
      case kSupervisorClose:
      case kAdvSleep:
      case kConsume:
        o.a = in.U8();
        break;
      case kRead:
        o.a = in.U8();
        o.b = in.U8();
        break;
      case kScribble:
      case kScribbleSlot:
        o.a = in.U8();
        o.b = in.U8();
        o.raw = in.U64();
        break;
      case kFlip:
        o.a = in.U8();
        o.b = in.U8();
        o.c = in.U8();
        o.d = in.U8();
        o.raw = in.U64();
        break;
      default:
        break;
    }
    ops.push_back(o);
  }
  return ops;
}

bool IsScribble(const AOp& o) {
  return o.op == kScribble || o.op == kScribbleSlot || o.op == kFlip || o.op == kDrainBell;
}

// Everything both threads share.
struct Shared {
  Config cfg;
  bool clean = false;
  uint32_t salt = 0x5eed;
  sd::Segment creator;
  ShmView view;  // the consumer thread's own mapping
  sd::Segment view_map;
  std::shared_ptr<const sd::Doorbell> producer_bell;
  std::shared_ptr<const sd::Doorbell> consumer_bell;
  std::optional<sd::Consumer> consumer;
  FrameLog log;
  VictimState victim;
  uint64_t start_ns = 0;
  // When the consumer's head last moved (stored after the call that moved
  // it returned): the "ring has been empty since" clock of the item 3 oracle.
  std::atomic<uint64_t> head_moved_ns{0};
  // Consumer bookkeeping (consumer thread; main thread after the join).
  uint32_t delivered = 0;
  bool peek_open = false;
  std::vector<std::byte> buf = std::vector<std::byte>(1 << 16);
};

// ------------------------------------------------------------- adversary

class Adversary {
 public:
  explicit Adversary(Shared& s) : s_(s) {}

  void Run(const std::vector<AOp>& ops) {
    for (const AOp& o : ops) {
      if (NowNs() - s_.start_ns > 400'000'000) break;
      Step(o);
    }
  }

  // Calls `fn` on the consumer, noting whether the head moved.
  template <typename F>
  auto Call(F fn) {
    const uint64_t before = s_.view.head();
    auto r = fn(*s_.consumer);
    if (s_.view.head() != before) s_.head_moved_ns.store(NowNs(), std::memory_order_release);
    return r;
  }

  void OnFrame(std::span<const std::byte> f) {
    if (f.size() > s_.cfg.lane.max_frame_bytes) Fail("consumer got %zu bytes > max", f.size());
    if (s_.clean) CheckFrame("producer lane (clean)", s_.salt, s_.log, s_.delivered, f);
  }

  void CheckResult(const char* what, sd::ReadResult r) {
    if (s_.clean && r == sd::ReadResult::kBroken) {
      Fail("clean lane: consumer %s returned kBroken: %s", what,
           s_.consumer->status().ToString().c_str());
    }
  }

  sd::ReadResult ReadOne(size_t bufsize, const Deadline* d) {
    size_t n = 0;
    std::span<std::byte> out(s_.buf.data(), bufsize);
    const sd::ReadResult r = Call([&](sd::Consumer& c) {
      return d != nullptr ? c.Read(out, &n, d->at) : c.TryRead(out, &n);
    });
    CheckResult("read", r);
    if (r == sd::ReadResult::kOk) {
      OnFrame(std::span<const std::byte>(s_.buf.data(), n));
      ++s_.delivered;
      s_.peek_open = false;
    } else if (r == sd::ReadResult::kTooSmall) {
      s_.peek_open = true;
    }
    return r;
  }

 private:
  size_t BufSize(uint8_t sel) const {
    const size_t max = s_.cfg.lane.max_frame_bytes;
    const size_t kSizes[6] = {0, 8, 64, max, max > 0 ? max - 1 : 0, 1 << 16};
    return kSizes[sel % 6];
  }

  void Step(const AOp& o) {
    if (s_.clean && IsScribble(o)) return;
    switch (o.op) {
      case kTryRead:
        (void)ReadOne(BufSize(o.a), nullptr);
        break;
      case kRead: {
        int64_t budget = 100'000;
        const Deadline d = MakeDeadline(o.b, &budget);
        (void)ReadOne(BufSize(o.a), &d);
        break;
      }
      case kDrain: {
        sd::ReadResult why = sd::ReadResult::kOk;
        const size_t n = Call([&](sd::Consumer& c) {
          return c.Drain(
              [&](std::span<const std::byte> f) {
                OnFrame(f);
                ++s_.delivered;
              },
              o.a % 40, &why);
        });
        if (n > 0) s_.peek_open = false;
        CheckResult("Drain", why);
        break;
      }
      case kPeek: {
        sd::PeekResult p = s_.consumer->Peek();
        CheckResult("Peek", p.result);
        if (p.result == sd::ReadResult::kOk) {
          OnFrame(p.data);
          s_.peek_open = true;
        }
        break;
      }
      case kRelease:
        if (s_.peek_open) {
          Call([](sd::Consumer& c) {
            c.Release();
            return 0;
          });
          ++s_.delivered;
          s_.peek_open = false;
        }
        break;
      case kConsumerClose:
        Call([](sd::Consumer& c) {
          c.Close();
          return 0;
        });
        break;
      case kScribble: {
        const Target t = PickField(s_.view, o.a, o.raw);
        Poke(s_.view, t, PickValue(s_.view, t, o.b, o.raw));
        break;
      }
      case kScribbleSlot: {
        const Target t = PickSlot(s_.view, o.a, o.raw);
        Poke(s_.view, t, PickValue(s_.view, t, o.b, o.raw));
        break;
      }
      case kFlip: {
        const Target t =
            (o.a & 0x80) != 0 ? PickSlot(s_.view, o.a, o.raw) : PickField(s_.view, o.a, o.raw);
        const uint64_t v1 = PickValue(s_.view, t, o.b, o.raw);
        const uint64_t v2 = PickValue(s_.view, t, o.c, ~o.raw);
        bool phase = false;
        Loop(s_.victim, o.d, [&] {
          Poke(s_.view, t, phase ? v2 : v1);
          phase = !phase;
        });
        break;
      }
      case kFlood: {
        const int fd = s_.producer_bell->fd();
        Loop(s_.victim, o.a, [&] { RingFd(fd); });
        break;
      }
      case kDrainBell: {
        const int fd = s_.producer_bell->fd();
        Loop(s_.victim, o.a, [&] { DrainFd(fd); });
        break;
      }
      case kSupervisorClose: {
        static constexpr uint32_t kBits[4] = {sd::kClosedProducerGone, sd::kClosedConsumerGone,
                                              sd::kClosedDeleted,
                                              sd::kClosedProducerGone | sd::kClosedConsumerGone};
        sd::SupervisorClose(s_.creator, kBits[o.a % 4], s_.producer_bell.get(),
                            s_.consumer_bell.get());
        break;
      }
      case kAwaitCall:
        AwaitCall(s_.victim);
        break;
      case kAdvSleep:
        ::usleep(10u * (o.a % 64));
        break;
      case kRingOnce:
        RingFd(s_.producer_bell->fd());
        break;
      case kConsume: {
        // An honest consumer keeping up, for the duration selected.
        int64_t budget = 1'000'000;
        Loop(s_.victim, o.a, [&] {
          const Deadline d = MakeDeadline(3, &budget);  // 1 ms
          (void)ReadOne(1 << 16, &d);
        });
        break;
      }
      default:
        break;
    }
  }

  Shared& s_;
};

// ---------------------------------------------------------------- victim

class Victim {
 public:
  Victim(Shared& s, sd::Producer& p) : s_(s), p_(p) { scratch_.resize(1 << 17); }

  void Run(const std::vector<VOp>& ops) {
    for (const VOp& v : ops) {
      if (closed_) break;  // nothing may follow Close()
      Step(v);
    }
    if (!closed_) {
      if (reservation_open_) CommitOpen(0, sd::PublishMode::kNow);
      CallGuard g(s_.victim, "Producer::Publish", -1);
      p_.Publish();
      g.Done();
      MarkPublished();
    }
  }

  // The producer's frame log after everything: what the consumer must get.
  void Finish(Adversary& consumer) {
    for (uint32_t i = 0; i < FrameLog::kMax + 8; ++i) {
      const sd::ReadResult r = consumer.ReadOne(1 << 16, nullptr);
      if (r == sd::ReadResult::kOk) continue;
      if (s_.clean && r != sd::ReadResult::kEmpty && r != sd::ReadResult::kClosed) {
        Fail("clean lane: the final read ended with %s", sd::ToString(r));
      }
      break;
    }
    if (s_.clean) {
      const uint32_t published = s_.log.published.load();
      const uint32_t committed = s_.log.committed.load();
      if (s_.delivered < published || s_.delivered > committed) {
        Fail("clean lane: consumer got %u frames, producer published %u (committed %u)",
             s_.delivered, published, committed);
      }
    }
  }

 private:
  const uint64_t* Parks() const {
    return &reinterpret_cast<const sd::LaneBlocks*>(s_.creator.data())
                ->producer_counters.full_waits;
  }

  uint32_t FrameLen(uint16_t raw) const { return raw % (s_.cfg.lane.max_frame_bytes + 9u); }
  bool Room(uint32_t n = 1) const {
    return s_.log.committed.load(std::memory_order_relaxed) + n < FrameLog::kMax - 1;
  }

  void MarkPublished() {
    const uint32_t committed = s_.log.committed.load(std::memory_order_relaxed);
    uint32_t p = s_.log.published.load(std::memory_order_relaxed);
    if (p == committed) return;
    const uint64_t now = NowNs();
    for (; p < committed; ++p) s_.log.published_ns[p % FrameLog::kMax].store(now);
    s_.log.published.store(committed, std::memory_order_release);
  }

  std::span<const std::byte> Stage(uint32_t seq, uint32_t len, size_t at = 0) {
    s_.log.len[seq % FrameLog::kMax].store(len, std::memory_order_relaxed);
    std::span<std::byte> out(scratch_.data() + at, len);
    FillFrame(s_.salt, seq, out);
    return out;
  }

  // Checks a write result: allowed for the call and policy, sticky states.
  void CheckWrite(const char* what, sd::WriteResult r, size_t len, bool blocking) {
    using W = sd::WriteResult;
    const sd::BackpressurePolicy policy = s_.cfg.lane.policy;
    bool allowed = r == W::kOk || r == W::kTooLarge || r == W::kClosed || r == W::kBroken;
    if (!blocking) {
      allowed = allowed || r == W::kFull;
    } else if (policy == sd::BackpressurePolicy::kBlock) {
      allowed = allowed || r == W::kTimeout;
    } else if (policy == sd::BackpressurePolicy::kFailFast) {
      allowed = allowed || r == W::kFull;
    } else {
      allowed = allowed || r == W::kDropped;
    }
    if (!allowed)
      Fail("%s returned %s under policy %u", what, sd::ToString(r), static_cast<unsigned>(policy));
    if (len > s_.cfg.lane.max_frame_bytes && r != W::kTooLarge && r != W::kClosed &&
        r != W::kBroken) {
      Fail("%s of %zu bytes (max %u) returned %s", what, len, s_.cfg.lane.max_frame_bytes,
           sd::ToString(r));
    }
    if (len <= s_.cfg.lane.max_frame_bytes && r == W::kTooLarge) {
      Fail("%s of %zu bytes (max %u) returned kTooLarge", what, len, s_.cfg.lane.max_frame_bytes);
    }
    if (broken_seen_ && r != W::kBroken) {
      Fail("%s returned %s after the lane was reported broken", what, sd::ToString(r));
    }
    if (r == W::kBroken) {
      if (s_.clean)
        Fail("clean lane: %s returned kBroken: %s", what, p_.status().ToString().c_str());
      broken_seen_ = true;
    }
    // kClosed is not sticky by contract: TryWrite reports it "once a publish
    // has seen" the close, so a Write that saw it while parked may be
    // followed by one more accepted (and lost) frame.
    CheckStatus(what);
  }

  void CheckStatus(const char* what) {
    const absl::Status st = p_.status();
    if (broken_seen_ && st.code() != absl::StatusCode::kDataLoss) {
      Fail("after kBroken, status() is %s (after %s)", st.ToString().c_str(), what);
    }
    if (!broken_seen_ && !st.ok()) {
      Fail("status() is %s without a kBroken result (after %s)", st.ToString().c_str(), what);
    }
  }

  void CheckReservation(const sd::Reservation& r, size_t n) {
    if (r.result != sd::WriteResult::kOk) return;
    const std::byte* lo = p_.segment().data() + sd::kLaneHeaderBytes;
    const std::byte* hi = p_.segment().data() + p_.segment().size();
    if (r.data.size() != n) Fail("Reserve(%zu) gave %zu bytes", n, r.data.size());
    if (n != 0 && (r.data.data() < lo || r.data.data() + n > hi)) {
      Fail("Reserve(%zu) gave memory outside the ring", n);
    }
  }

  // Issue 8 item 3 in a form that needs no knowledge of the implementation:
  // with a clean lane, a Write that times out although the consumer had
  // consumed every published byte (head == tail, and the head unmoved for
  // kReactNs) waited on a ring that was empty all along: the frames it was
  // waiting behind were never published.
  void CheckTimeout(uint64_t end) {
    if (!s_.clean || !OracleEnabled("defer-publish")) return;
    const uint64_t head = s_.view.head();
    const uint64_t tail = s_.view.tail();
    const uint64_t moved = std::max(s_.head_moved_ns.load(std::memory_order_acquire), s_.start_ns);
    if (head == tail && end > moved + kReactNs) {
      Fail(
          "Write timed out on a ring whose consumer had read everything published (head == tail "
          "== %lu) %.1f ms before: committed frames were not published before parking",
          tail, static_cast<double>(end - moved) / 1e6);
    }
  }

  void CommitOpen(size_t used_raw, sd::PublishMode mode) {
    const uint32_t used = reserved_ == 0 ? 0 : static_cast<uint32_t>(used_raw % (reserved_ + 1));
    const uint32_t seq = s_.log.committed.load(std::memory_order_relaxed);
    s_.log.len[seq % FrameLog::kMax].store(used, std::memory_order_relaxed);
    FillFrame(s_.salt, seq, reservation_.first(used));
    s_.log.committed.store(seq + 1, std::memory_order_release);
    CallGuard g(s_.victim, "Producer::Commit", -1);
    p_.Commit(used, mode);
    g.Done();
    reservation_open_ = false;
    if (mode == sd::PublishMode::kNow) MarkPublished();
  }

  // One frame through TryWrite or Write.
  void WriteOne(uint16_t raw_len, const Deadline* d) {
    if (!Room()) return;
    if (reservation_open_) CommitOpen(raw_len, sd::PublishMode::kDefer);
    const uint32_t seq = s_.log.committed.load(std::memory_order_relaxed);
    const uint32_t len = FrameLen(raw_len);
    std::span<const std::byte> f = Stage(seq, len);
    s_.log.committed.store(seq + 1, std::memory_order_release);
    const bool blocking = d != nullptr;
    const bool may_wait = blocking && s_.cfg.lane.policy == sd::BackpressurePolicy::kBlock;
    CallGuard g(s_.victim, blocking ? "Producer::Write" : "Producer::TryWrite",
                may_wait ? d->timeout_ns : -1, may_wait ? Parks() : nullptr);
    const sd::WriteResult r = blocking ? p_.Write(f, d->at) : p_.TryWrite(f);
    const uint64_t end = g.Done();
    if (r == sd::WriteResult::kOk) {
      MarkPublished();
    } else {
      s_.log.committed.store(seq, std::memory_order_release);
    }
    CheckWrite(blocking ? "Write" : "TryWrite", r, len, blocking);
    if (r == sd::WriteResult::kTimeout) CheckTimeout(end);
  }

  void Step(const VOp& v) {
    switch (v.op) {
      case kTryWrite:
        WriteOne(v.len, nullptr);
        break;
      case kWrite: {
        const Deadline d = MakeDeadline(v.a, &budget_us_);
        WriteOne(v.len, &d);
        break;
      }
      case kTryWriteBatch: {
        const uint32_t count = 1 + v.a % 16;
        if (!Room(count)) break;
        if (reservation_open_) CommitOpen(v.len, sd::PublishMode::kDefer);
        const uint32_t seq = s_.log.committed.load(std::memory_order_relaxed);
        std::vector<std::span<const std::byte>> frames;
        size_t at = 0;
        size_t first_too_large = SIZE_MAX;
        for (uint32_t i = 0; i < count; ++i) {
          const uint32_t len = FrameLen(static_cast<uint16_t>(v.len + i * 41));
          if (at + len > scratch_.size()) break;
          if (len > s_.cfg.lane.max_frame_bytes && first_too_large == SIZE_MAX) first_too_large = i;
          frames.push_back(Stage(seq + i, len, at));
          at += len;
        }
        s_.log.committed.store(seq + static_cast<uint32_t>(frames.size()),
                               std::memory_order_release);
        sd::WriteResult why = sd::WriteResult::kOk;
        CallGuard g(s_.victim, "Producer::TryWriteBatch", -1);
        const size_t n = p_.TryWriteBatch(frames, &why);
        g.Done();
        s_.log.committed.store(seq + static_cast<uint32_t>(n), std::memory_order_release);
        MarkPublished();
        if (n > frames.size() || n > first_too_large) {
          Fail("TryWriteBatch wrote %zu of %zu frames (first too large: %zu)", n, frames.size(),
               first_too_large);
        }
        if (n < frames.size()) {
          CheckWrite("TryWriteBatch", why, frames[n].size(), false);
          if (why == sd::WriteResult::kOk) Fail("TryWriteBatch stopped early with kOk");
        } else if (why != sd::WriteResult::kOk) {
          Fail("TryWriteBatch wrote all %zu frames but reports %s", n, sd::ToString(why));
        }
        break;
      }
      case kReserve: {
        if (reservation_open_) CommitOpen(v.len, sd::PublishMode::kDefer);
        if (!Room()) break;
        const uint32_t n = FrameLen(v.len);
        CallGuard g(s_.victim, "Producer::Reserve", -1);
        sd::Reservation r = p_.Reserve(n);
        g.Done();
        CheckWrite("Reserve", r.result, n, false);
        CheckReservation(r, n);
        if (r.result == sd::WriteResult::kOk) {
          reservation_open_ = true;
          reservation_ = r.data;
          reserved_ = n;
        }
        break;
      }
      case kCommit:
        if (reservation_open_) {
          CommitOpen(v.len, (v.a & 1) != 0 ? sd::PublishMode::kNow : sd::PublishMode::kDefer);
        }
        break;
      case kPublish: {
        CallGuard g(s_.victim, "Producer::Publish", -1);
        p_.Publish();
        g.Done();
        MarkPublished();
        break;
      }
      case kClose: {
        if (reservation_open_) {
          // Close() commits an open reservation as an empty frame.
          const uint32_t seq = s_.log.committed.load(std::memory_order_relaxed);
          s_.log.len[seq % FrameLog::kMax].store(0, std::memory_order_relaxed);
          s_.log.committed.store(seq + 1, std::memory_order_release);
          reservation_open_ = false;
        }
        CallGuard g(s_.victim, "Producer::Close", -1);
        p_.Close();
        g.Done();
        MarkPublished();
        closed_ = true;
        break;
      }
      case kSleep:
        ::usleep(100u * (v.a % 16));
        break;
      case kObserve: {
        // Observe re-reads the header: a hostile peer may have scribbled it
        // (then DataLoss is the right answer), a clean lane's must pass.
        absl::StatusOr<sd::LaneSnapshot> snap = sd::Observe(s_.creator);
        if (!snap.ok() && (s_.clean || snap.status().code() != absl::StatusCode::kDataLoss)) {
          Fail("Observe: %s", snap.status().ToString().c_str());
        }
        if (snap.ok() && snap->occupancy_bytes > snap->ring_bytes)
          Fail("Observe: occupancy > ring");
        CheckStatus("Observe");
        (void)p_.PeerClosed();
        break;
      }
      default:
        break;
    }
  }

  Shared& s_;
  sd::Producer& p_;
  std::vector<std::byte> scratch_;
  int64_t budget_us_ = 250'000;
  bool reservation_open_ = false;
  std::span<std::byte> reservation_;
  uint32_t reserved_ = 0;
  bool closed_ = false;
  bool broken_seen_ = false;
};

}  // namespace
}  // namespace shmlane::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shmlane::fuzz;  // NOLINT(google-build-using-namespace): a fuzz entry point
  Bytes in(data, size);
  auto s = std::make_unique<Shared>();
  s->cfg = DecodeConfig(in);
  s->start_ns = NowNs();
  if (absl::Status st = sd::ValidateLaneOptions(s->cfg.lane); !st.ok()) {
    if (st.code() != absl::StatusCode::kInvalidArgument) {
      Fail("ValidateLaneOptions: %s", st.ToString().c_str());
    }
    return 0;
  }
  const uint16_t vlen = in.U16();
  const std::vector<VOp> vops = DecodeVictim(in.Take(vlen % 512));
  const std::vector<AOp> aops = DecodeAdversary(in);
  s->clean = s->cfg.clean || std::none_of(aops.begin(), aops.end(), IsScribble);

  absl::StatusOr<sd::Segment> seg = sd::CreateLaneSegment(s->cfg.lane);
  if (!seg.ok()) Fail("CreateLaneSegment: %s", seg.status().ToString().c_str());
  s->creator = std::move(*seg);
  auto bell = [] {
    absl::StatusOr<sd::Doorbell> b = sd::Doorbell::Create();
    if (!b.ok()) Fail("Doorbell::Create: %s", b.status().ToString().c_str());
    return std::make_shared<const sd::Doorbell>(std::move(*b));
  };
  s->producer_bell = bell();
  s->consumer_bell = bell();
  auto map = [&] { return sd::Segment::Map(*s->creator.DupFd(), sd::Access::kReadWrite); };
  absl::StatusOr<sd::Segment> view = map();
  absl::StatusOr<sd::Segment> pseg = map();
  absl::StatusOr<sd::Segment> cseg = map();
  if (!view.ok() || !pseg.ok() || !cseg.ok()) Fail("Segment::Map failed");
  s->view_map = std::move(*view);
  s->view = {s->view_map.data(), s->cfg.lane.ring_bytes, s->cfg.lane.max_frame_bytes};
  absl::StatusOr<sd::Consumer> c = sd::Consumer::Attach(
      std::move(*cseg), {s->consumer_bell, s->producer_bell}, s->cfg.consumer_wait);
  if (!c.ok()) Fail("Consumer::Attach: %s", c.status().ToString().c_str());
  s->consumer.emplace(std::move(*c));
  absl::StatusOr<sd::Producer> p =
      sd::Producer::Attach(std::move(*pseg), {s->producer_bell, s->consumer_bell}, s->cfg.wait);
  if (!p.ok()) Fail("Producer::Attach: %s", p.status().ToString().c_str());

  Adversary adversary(*s);
  Victim victim(*s, *p);
  std::thread peer([&] { adversary.Run(aops); });
  victim.Run(vops);
  s->victim.done.store(true);
  peer.join();
  victim.Finish(adversary);
  return 0;
}
