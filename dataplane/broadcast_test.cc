// Unit tests of broadcast rings (dataplane/broadcast.h): one writer and
// several readers in one process (threads where a side must block), the
// supervisor's slot calls, the slow-reader policies, late joiners, and
// hostile values in shared memory. Multi-process tests are in
// tests/dataplane/broadcast_multiprocess_test.cc.
#include "dataplane/broadcast.h"

#include <sys/mman.h>

#include <cerrno>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "dataplane/internal/shm_access.h"
#include "gtest/gtest.h"
#include "tests/dataplane/broadcast_fixture.h"

namespace shmlane::dataplane {
namespace {

using testing::BroadcastFixture;
using testing::CheckBroadcastFrame;
using testing::FillBroadcastFrame;
using testing::FrameSizeFor;

constexpr WaitOptions kNoSpin{absl::ZeroDuration()};

BroadcastOptions Opts(SlowReaderPolicy policy, uint64_t ring = 16384, uint32_t readers = 4) {
  BroadcastOptions o;
  o.ring_bytes = ring;
  o.max_frame_bytes = 1024;
  o.policy = policy;
  o.max_readers = readers;
  o.sample_every = 5;
  return o;
}

// Writes frame `seq`: random size up to `max`, or exactly `max` if `fixed`.
WriteResult WriteSeq(BroadcastWriter& w, uint64_t seq, size_t max = 1024, bool fixed = false) {
  std::vector<std::byte> buf(max);
  const size_t n = FillBroadcastFrame(buf.data(), seq, fixed ? max : FrameSizeFor(seq, max));
  return w.TryWrite({buf.data(), n});
}

// Reads everything available; checks order and content; returns the count.
uint64_t ReadAll(BroadcastReader& r, uint64_t* next_seq, uint64_t* missed = nullptr) {
  std::vector<std::byte> buf(2048);
  uint64_t n = 0;
  for (;;) {
    size_t len = 0;
    FrameInfo info;
    const BroadcastReadResult res = r.TryRead(buf, &len, &info);
    if (res != BroadcastReadResult::kOk) break;
    uint64_t seq = 0;
    EXPECT_TRUE(CheckBroadcastFrame({buf.data(), len}, &seq)) << "frame " << info.seq;
    EXPECT_EQ(seq, info.seq);
    EXPECT_EQ(seq, *next_seq + info.missed) << "out of order";
    if (missed != nullptr) *missed += info.missed;
    *next_seq = seq + 1;
    ++n;
  }
  return n;
}

TEST(BroadcastOptionsTest, RejectsBadOptions) {
  BroadcastOptions o = Opts(SlowReaderPolicy::kBlock);
  o.ring_bytes = 5000;
  EXPECT_EQ(ValidateBroadcastOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o = Opts(SlowReaderPolicy::kBlock);
  o.max_frame_bytes = 9000;
  EXPECT_EQ(ValidateBroadcastOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o = Opts(SlowReaderPolicy::kBlock);
  o.max_readers = 0;
  EXPECT_EQ(ValidateBroadcastOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o = Opts(SlowReaderPolicy::kBlock);
  o.policy = static_cast<SlowReaderPolicy>(9);
  EXPECT_EQ(ValidateBroadcastOptions(o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateBroadcastOptions(Opts(SlowReaderPolicy::kDropOldest)).ok());
}

TEST(BroadcastTest, EveryReaderSeesEveryFrameInOrder) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock));
  for (uint32_t i = 0; i < 3; ++i) f.Activate(i);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  std::vector<BroadcastReader> readers;
  for (uint32_t i = 0; i < 3; ++i) readers.push_back(f.MakeReader(i, {}, kNoSpin));
  std::vector<uint64_t> next(3, 0);
  uint64_t seq = 0;
  // Many times around the ring: wrap padding, sampling, Peek, TryRead, Drain.
  for (int round = 0; round < 300; ++round) {
    for (int k = 0; k < 7; ++k) {
      ASSERT_EQ(WriteSeq(w, seq), WriteResult::kOk) << seq;
      ++seq;
    }
    next[0] += 0;
    ReadAll(readers[0], &next[0]);
    // Zero-copy.
    for (;;) {
      BroadcastPeek p = readers[1].Peek();
      if (p.result != BroadcastReadResult::kOk) break;
      uint64_t s = 0;
      ASSERT_TRUE(CheckBroadcastFrame(p.data, &s));
      ASSERT_EQ(s, next[1]);
      ASSERT_EQ(p.seq, s);
      ASSERT_EQ(readers[1].Release(), ReleaseResult::kOk);
      ++next[1];
    }
    BroadcastReadResult dr;
    readers[2].Drain(
        [&](std::span<const std::byte> d, const FrameInfo& info) {
          uint64_t s = 0;
          EXPECT_TRUE(CheckBroadcastFrame(d, &s));
          EXPECT_EQ(s, next[2]);
          EXPECT_EQ(info.seq, s);
          ++next[2];
        },
        1000, &dr);
    EXPECT_EQ(dr, BroadcastReadResult::kEmpty);
  }
  for (uint64_t n : next) EXPECT_EQ(n, seq);
  absl::StatusOr<BroadcastSnapshot> snap = ObserveBroadcast(f.ring);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->writer.frames, seq);
  EXPECT_EQ(snap->slots.size(), 3u);
  absl::StatusOr<ReaderPageSnapshot> ps = ObserveReaderPage(f.slots[1].page, &f.ring);
  ASSERT_TRUE(ps.ok());
  EXPECT_EQ(ps->counters.frames, seq);
  EXPECT_EQ(ps->lag_bytes, 0u);
  EXPECT_GT(ps->counters.latency_count, 0u);
}

TEST(BroadcastTest, BatchAndDeferredCommitsPublishOnce) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock));
  f.Activate(0);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  std::vector<std::vector<std::byte>> frames(10, std::vector<std::byte>(100));
  std::vector<std::span<const std::byte>> spans;
  for (uint64_t i = 0; i < 10; ++i) {
    FillBroadcastFrame(frames[i].data(), i, 100);
    spans.emplace_back(frames[i]);
  }
  WriteResult why;
  EXPECT_EQ(w.TryWriteBatch(spans, &why), 10u);
  EXPECT_EQ(why, WriteResult::kOk);
  Reservation res = w.Reserve(50);
  ASSERT_EQ(res.result, WriteResult::kOk);
  FillBroadcastFrame(res.data.data(), 10, 50);
  w.Commit(50, PublishMode::kDefer);
  uint64_t next = 0;
  EXPECT_EQ(ReadAll(r, &next), 10u);  // the deferred one is not visible yet
  w.Publish();
  EXPECT_EQ(ReadAll(r, &next), 1u);
  EXPECT_EQ(next, 11u);
}

TEST(BroadcastTest, BlockWriterWaitsForSlowestActiveReader) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock, 4096));
  f.Activate(0);
  f.Activate(1);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader fast = f.MakeReader(0, {}, kNoSpin);
  BroadcastReader slow = f.MakeReader(1, {}, kNoSpin);
  uint64_t seq = 0, next_fast = 0;
  while (WriteSeq(w, seq, 200, true) == WriteResult::kOk) {
    ++seq;
    ReadAll(fast, &next_fast);
  }
  EXPECT_EQ(seq, 4096u / 224);  // the ring is exactly full for the slow reader
  std::vector<std::byte> buf(256);
  const size_t n = FillBroadcastFrame(buf.data(), seq, 200);
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(w.Write({buf.data(), n}, absl::Now() + absl::Milliseconds(30)), WriteResult::kTimeout);
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(25));
  EXPECT_GE(ObserveBroadcast(f.ring)->writer.backpressure_events, 1u);
  // The slow reader reads two frames (one may go to the wrap padding): room again.
  size_t len = 0;
  ASSERT_EQ(slow.TryRead(buf, &len), BroadcastReadResult::kOk);
  ASSERT_EQ(slow.TryRead(buf, &len), BroadcastReadResult::kOk);
  EXPECT_EQ(WriteSeq(w, seq, 200, true), WriteResult::kOk);
  ++seq;
  // Releasing the slow slot (its reader died) frees the writer entirely.
  while (WriteSeq(w, seq, 200, true) == WriteResult::kOk) {
    ++seq;
    ReadAll(fast, &next_fast);
  }
  f.Release(1);
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(WriteSeq(w, seq, 200, true), WriteResult::kOk);
    ++seq;
    ReadAll(fast, &next_fast);
  }
  EXPECT_EQ(next_fast, seq);
  // The released reader is told so (after any frames still intact).
  BroadcastReadResult res;
  do {
    res = slow.TryRead(buf, &len);
  } while (res == BroadcastReadResult::kOk);
  EXPECT_EQ(res, BroadcastReadResult::kDetached);
}

TEST(BroadcastTest, ParkedWriterIsWokenByTheReaderThatFreesSpace) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock, 4096));
  f.Activate(0);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  uint64_t seq = 0;
  while (WriteSeq(w, seq, 200, true) == WriteResult::kOk) ++seq;
  std::thread reader([&] {
    absl::SleepFor(absl::Milliseconds(50));
    std::vector<std::byte> buf(2048);
    size_t len = 0;
    (void)r.TryRead(buf, &len);
    (void)r.TryRead(buf, &len);
  });
  std::vector<std::byte> buf(200);
  const size_t n = FillBroadcastFrame(buf.data(), seq, 200);
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(w.Write({buf.data(), n}, absl::Now() + absl::Seconds(10)), WriteResult::kOk);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  reader.join();
  absl::StatusOr<BroadcastSnapshot> snap = ObserveBroadcast(f.ring);
  EXPECT_GE(snap->writer.full_waits, 1u);
}

TEST(BroadcastTest, ParkedReaderIsWokenByPublish) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock));
  f.Activate(0);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_EQ(WriteSeq(w, 0), WriteResult::kOk);
  });
  std::vector<std::byte> buf(2048);
  size_t len = 0;
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(r.Read(buf, &len, absl::Now() + absl::Seconds(10)), BroadcastReadResult::kOk);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  writer.join();
  EXPECT_EQ(r.Read(buf, &len, absl::Now() + absl::Milliseconds(20)), BroadcastReadResult::kTimeout);
  EXPECT_GE(ObserveReaderPage(f.slots[0].page, nullptr)->counters.wakeups_received, 1u);
}

TEST(BroadcastTest, DropOldestCountsExactLapsAndNeverHandsOutTornFrames) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kDropOldest, 8192));
  f.Activate(0);
  f.Activate(1);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader slow = f.MakeReader(0, {}, kNoSpin);
  BroadcastReader fast = f.MakeReader(1, {}, kNoSpin);
  uint64_t seq = 0, next_fast = 0, next_slow = 0, missed = 0, delivered = 0;
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 20; ++k) {
      ASSERT_EQ(WriteSeq(w, seq, 300), WriteResult::kOk);  // never waits
      ++seq;
      ReadAll(fast, &next_fast);
    }
    if (round % 10 == 0) delivered += ReadAll(slow, &next_slow, &missed);
  }
  delivered += ReadAll(slow, &next_slow, &missed);
  EXPECT_EQ(next_fast, seq);
  EXPECT_EQ(fast.missed_frames(), 0u);
  EXPECT_GT(missed, 0u);
  EXPECT_EQ(delivered + missed, seq);
  EXPECT_EQ(slow.missed_frames(), missed);
  EXPECT_EQ(slow.frames_read(), delivered);
  EXPECT_GT(slow.laps(), 0u);
  absl::StatusOr<ReaderPageSnapshot> ps = ObserveReaderPage(f.slots[0].page, &f.ring);
  EXPECT_EQ(ps->counters.lapped_frames, missed);
}

TEST(BroadcastTest, ReleaseReportsAViewOverwrittenWhileHeld) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kDropOldest, 4096));
  f.Activate(0);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  ASSERT_EQ(WriteSeq(w, 0, 100), WriteResult::kOk);
  BroadcastPeek p = r.Peek();
  ASSERT_EQ(p.result, BroadcastReadResult::kOk);
  for (uint64_t s = 1; s < 100; ++s) ASSERT_EQ(WriteSeq(w, s, 100), WriteResult::kOk);
  EXPECT_EQ(r.Release(), ReleaseResult::kOverwritten);
  EXPECT_EQ(r.frames_read(), 0u);
  // The overwritten view (frame 0) is reported as missed with the next frame.
  uint64_t next = 0, missed = 0;
  const uint64_t got = ReadAll(r, &next, &missed);
  EXPECT_EQ(next, 100u);
  EXPECT_EQ(got + missed, 100u);
  EXPECT_EQ(r.missed_frames(), missed);
}

TEST(BroadcastTest, DisconnectDetachesOnlyTheLaggard) {
  BroadcastOptions o = Opts(SlowReaderPolicy::kDisconnect, 8192);
  o.detach_lag_bytes = 4096;
  auto f = BroadcastFixture::Make(o);
  f.Activate(0);
  f.Activate(1);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader lag = f.MakeReader(0, {}, kNoSpin);
  BroadcastReader fast = f.MakeReader(1, {}, kNoSpin);
  uint64_t seq = 0, next_fast = 0;
  for (; seq < 200; ++seq) {
    ASSERT_EQ(WriteSeq(w, seq, 200), WriteResult::kOk);
    ReadAll(fast, &next_fast);
  }
  EXPECT_EQ(next_fast, seq);
  std::vector<std::byte> buf(2048);
  size_t len = 0;
  BroadcastReadResult res;
  do {
    res = lag.TryRead(buf, &len);
  } while (res == BroadcastReadResult::kOk);
  EXPECT_EQ(res, BroadcastReadResult::kDetached);
  EXPECT_EQ(ObserveBroadcast(f.ring)->writer.readers_detached, 1u);
  EXPECT_EQ(lag.WaitReadable(absl::Now() + absl::Seconds(1)), BroadcastReadResult::kDetached);
}

TEST(BroadcastTest, LateJoinerGetsExactHistoryThenLiveFrames) {
  for (SlowReaderPolicy policy : {SlowReaderPolicy::kBlock, SlowReaderPolicy::kDropOldest}) {
    BroadcastOptions o = Opts(policy, 65536);
    o.history_frames = 7;
    auto f = BroadcastFixture::Make(o);
    f.Activate(0);
    BroadcastWriter w = f.MakeWriter(kNoSpin);
    BroadcastReader first = f.MakeReader(0, {}, kNoSpin);
    uint64_t next0 = 0;
    for (uint64_t s = 0; s < 50; ++s) {
      ASSERT_EQ(WriteSeq(w, s, 100), WriteResult::kOk);
      ReadAll(first, &next0);
    }
    f.Activate(1);
    f.Activate(2);
    f.Activate(3);
    f.Link(w, 1);
    f.Link(w, 2);
    f.Link(w, 3);
    BroadcastReader channel_default = f.MakeReader(1, {}, kNoSpin);
    BroadcastReader live = f.MakeReader(2, {ReaderStart::Mode::kLiveTail, 0}, kNoSpin);
    BroadcastReader all = f.MakeReader(3, {ReaderStart::Mode::kHistory, 1000}, kNoSpin);
    for (uint64_t s = 50; s < 60; ++s) ASSERT_EQ(WriteSeq(w, s, 100), WriteResult::kOk);
    std::vector<std::byte> buf(2048);
    size_t len = 0;
    FrameInfo info;
    ASSERT_EQ(channel_default.TryRead(buf, &len, &info), BroadcastReadResult::kOk);
    EXPECT_EQ(info.seq, 43u);
    uint64_t next = 44;
    EXPECT_EQ(ReadAll(channel_default, &next), 16u);
    ASSERT_EQ(live.TryRead(buf, &len, &info), BroadcastReadResult::kOk);
    EXPECT_EQ(info.seq, 50u);
    ASSERT_EQ(all.TryRead(buf, &len, &info), BroadcastReadResult::kOk);
    EXPECT_EQ(info.seq, 0u);  // everything is still intact in a 64 KiB ring
    EXPECT_EQ(info.missed, 0u);
  }
}

TEST(BroadcastTest, ClosedWriterIsSeenAfterTheLastFrame) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock));
  f.Activate(0);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  for (uint64_t s = 0; s < 5; ++s) ASSERT_EQ(WriteSeq(w, s), WriteResult::kOk);
  w.Close();
  EXPECT_EQ(WriteSeq(w, 5), WriteResult::kClosed);
  uint64_t next = 0;
  EXPECT_EQ(ReadAll(r, &next), 5u);
  std::vector<std::byte> buf(2048);
  size_t len = 0;
  EXPECT_EQ(r.Read(buf, &len, absl::Now() + absl::Seconds(5)), BroadcastReadResult::kClosed);
}

TEST(BroadcastTest, SupervisorCloseWakesAParkedReader) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock));
  f.Activate(0);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  std::thread sup([&] {
    absl::SleepFor(absl::Milliseconds(30));
    const Doorbell* bells[] = {f.slots[0].reader_bell.get()};
    SupervisorCloseBroadcast(f.ring, kClosedProducerGone, f.writer_own.get(), bells);
  });
  std::vector<std::byte> buf(2048);
  size_t len = 0;
  EXPECT_EQ(r.Read(buf, &len, absl::Now() + absl::Seconds(10)), BroadcastReadResult::kClosed);
  sup.join();
}

TEST(BroadcastTest, ReadersMapTheRingReadOnly) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock));
  f.Activate(0);
  BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
  const Segment& ring = r.ring();
  EXPECT_EQ(mprotect(ring.data(), 4096, PROT_READ | PROT_WRITE), -1);
  EXPECT_EQ(errno, EACCES);
  void* p = mmap(nullptr, ring.size(), PROT_READ | PROT_WRITE, MAP_SHARED, ring.fd(), 0);
  EXPECT_EQ(p, MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  // A read-write ring is refused, as is an inactive slot.
  absl::StatusOr<BroadcastReader> rw =
      BroadcastReader::Attach(f.WriterRing(), f.PageFor(0, Access::kReadWrite), 0,
                              {f.slots[0].reader_bell, f.slots[0].writer_bell});
  EXPECT_EQ(rw.status().code(), absl::StatusCode::kInvalidArgument);
  f.slots[1].page = *CreateReaderPage(f.ring, 1);
  f.slots[1].reader_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
  f.slots[1].writer_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
  EXPECT_EQ(f.TryMakeReader(1).status().code(), absl::StatusCode::kFailedPrecondition);
  // The wrong page for a slot is refused.
  EXPECT_EQ(BroadcastReader::Attach(f.ReaderRing(), f.PageFor(0, Access::kReadWrite), 1,
                                    {f.slots[0].reader_bell, f.slots[0].writer_bell})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BroadcastHostileTest, ReaderCursorScribbleCannotHoldOrBreakTheWriter) {
  auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kBlock, 4096));
  f.Activate(0);
  f.Activate(1);
  BroadcastWriter w = f.MakeWriter(kNoSpin);
  BroadcastReader honest = f.MakeReader(0, {}, kNoSpin);
  BroadcastReader hostile = f.MakeReader(1, {}, kNoSpin);
  uint64_t& cursor = f.page(1)->index.cursor;
  uint64_t seq = 0, next = 0;
  // Far past the publish position: clamped to it (the hostile only gives up
  // its own frames), so it never holds the writer.
  for (int i = 0; i < 500; ++i) {
    internal::Store(cursor, uint64_t{1} << 50, std::memory_order_release);
    ASSERT_EQ(WriteSeq(w, seq, 200, true), WriteResult::kOk) << i;
    ++seq;
    ReadAll(honest, &next);
  }
  // Backwards, misaligned, garbage: the writer never gives back space it
  // has reused, so the hostile reader holds it no more than a reader that
  // stopped here (the BLOCK policy), and never breaks it.
  const uint64_t publish_then =
      internal::Load(f.blocks()->writer_index.publish, std::memory_order_relaxed);
  uint64_t written = 0;
  const uint64_t garbage[] = {0, 12345, ~uint64_t{0} - 7, 16, publish_then - 4096};
  for (int i = 0;; ++i) {
    internal::Store(cursor, garbage[i % 5], std::memory_order_release);
    const WriteResult r = WriteSeq(w, seq, 200, true);
    if (r != WriteResult::kOk) {
      EXPECT_EQ(r, WriteResult::kFull);
      break;
    }
    ++seq;
    ++written;
    ReadAll(honest, &next);
  }
  EXPECT_LE(written, 4096u / 224);  // at most a ring past the last valid cursor it saw
  EXPECT_TRUE(w.status().ok());
  // Flooding its writer bell does not end a wait early nor stretch it.
  std::thread flood([&] {
    for (int i = 0; i < 2000; ++i) f.slots[1].writer_bell->Ring();
  });
  std::vector<std::byte> buf(256);
  const size_t n = FillBroadcastFrame(buf.data(), seq, 200);
  const absl::Time t0 = absl::Now();
  EXPECT_EQ(w.Write({buf.data(), n}, absl::Now() + absl::Milliseconds(50)), WriteResult::kTimeout);
  const absl::Duration took = absl::Now() - t0;
  flood.join();
  EXPECT_GE(took, absl::Milliseconds(45));
  EXPECT_LT(took, absl::Seconds(2));
  // The supervisor releases the hostile slot: the writer goes on at once.
  f.Release(1);
  EXPECT_EQ(w.Write({buf.data(), n}, absl::Now() + absl::Seconds(5)), WriteResult::kOk);
  ReadAll(honest, &next);
  EXPECT_EQ(next, seq + 1);
  size_t len = 0;
  (void)hostile.TryRead(buf, &len);  // its own reads: whatever it gets, no crash
}

TEST(BroadcastHostileTest, CorruptFramesMarkTheReaderBroken) {
  struct Case {
    const char* name;
    void (*scribble)(std::byte* ring, BroadcastBlocks* b);
  };
  const Case cases[] = {
      {"huge length",
       [](std::byte* ring, BroadcastBlocks*) {
         internal::Store(*reinterpret_cast<uint64_t*>(ring), uint64_t{0xfffffff0},
                         std::memory_order_relaxed);
       }},
      {"unknown flags",
       [](std::byte* ring, BroadcastBlocks*) {
         internal::Store(*reinterpret_cast<uint64_t*>(ring), uint64_t{16} | (uint64_t{0x80} << 32),
                         std::memory_order_relaxed);
       }},
      {"wrong sequence",
       [](std::byte* ring, BroadcastBlocks*) {
         internal::Store(*reinterpret_cast<uint64_t*>(ring + 8), uint64_t{77},
                         std::memory_order_relaxed);
       }},
      {"publish misaligned",
       [](std::byte*, BroadcastBlocks* b) {
         internal::Store(b->writer_index.publish, uint64_t{13}, std::memory_order_relaxed);
       }},
      {"oldest beyond publish",
       [](std::byte*, BroadcastBlocks* b) {
         internal::Store(b->writer_index.publish, uint64_t{1} << 40, std::memory_order_relaxed);
         internal::Store(b->writer_index.oldest, (uint64_t{1} << 40) + 8,
                         std::memory_order_relaxed);
       }},
  };
  for (const Case& c : cases) {
    auto f = BroadcastFixture::Make(Opts(SlowReaderPolicy::kDropOldest));
    f.Activate(0);
    BroadcastWriter w = f.MakeWriter(kNoSpin);
    BroadcastReader r = f.MakeReader(0, {}, kNoSpin);
    ASSERT_EQ(WriteSeq(w, 0, 100), WriteResult::kOk);
    ASSERT_EQ(WriteSeq(w, 1, 100), WriteResult::kOk);
    std::vector<std::byte> buf(2048);
    size_t len = 0;
    ASSERT_EQ(r.TryRead(buf, &len), BroadcastReadResult::kOk) << c.name;
    // Scribble on frame 1's record (or on the indices).
    std::byte* ring = f.ring.data() + BroadcastHeaderBytes(f.options.max_readers);
    const uint64_t pos =
        internal::Load(f.page(0)->index.cursor, std::memory_order_relaxed);  // frame 1's record
    c.scribble(ring + (pos & (f.options.ring_bytes - 1)), f.blocks());
    BroadcastReadResult res = r.TryRead(buf, &len);
    if (res == BroadcastReadResult::kOk) res = r.TryRead(buf, &len);
    EXPECT_EQ(res, BroadcastReadResult::kBroken) << c.name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_EQ(r.WaitReadable(absl::Now() + absl::Seconds(1)), BroadcastReadResult::kBroken);
  }
}

}  // namespace
}  // namespace shmlane::dataplane
