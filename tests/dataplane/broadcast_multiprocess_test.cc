// Multi-process tests of broadcast rings: one writer and N readers in
// separate forked processes over one memfd ring (readers map it read-only),
// the test parent playing the supervisor (activating and releasing slots,
// reaping dead readers). Frames carry sequence numbers and checksums; every
// reader checks order and content of every frame. Frame counts scale with
// SHMLANE_TEST_SCALE; the label "broadcast_long" runs 10 M frames.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataplane/broadcast.h"
#include "gtest/gtest.h"
#include "tests/dataplane/broadcast_fixture.h"
#include "tests/dataplane/process_util.h"
#include "tests/dataplane/watchdog.h"

namespace shmlane::dataplane {
namespace {

using testing::BroadcastFixture;
using testing::CheckBroadcastFrame;
using testing::FillBroadcastFrame;
using testing::FrameSizeFor;
using testing::Shared;

uint64_t Scaled(uint64_t n) {
  const char* s = std::getenv("SHMLANE_TEST_SCALE");
  const double scale = s != nullptr ? std::atof(s) : 1.0;
  return std::max<uint64_t>(1000, static_cast<uint64_t>(static_cast<double>(n) * scale));
}
uint64_t Frames(uint64_t default_frames) {
  // SHMLANE_BROADCAST_FRAMES overrides (the long label sets 10 M).
  const char* s = std::getenv("SHMLANE_BROADCAST_FRAMES");
  return s != nullptr ? std::strtoull(s, nullptr, 10) : Scaled(default_frames);
}

// Per-reader figures in the shared page: 8 values per reader.
enum Field { kDelivered = 0, kMissed, kNext, kErrors, kLaps, kDone, kJoined };
int At(int reader, Field f) { return 16 + reader * 8 + f; }
constexpr int kWriterDone = 0;
constexpr int kGo = 1;
constexpr int kReleasedAtNs = 2;
constexpr int kLongestWriteEndNs = 3;
constexpr int kLongestWriteNs = 4;
constexpr int kPhase = 5;

int Fail(const char* who, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", who, what.c_str());
  return 1;
}

// A reader process body: reads until closed/detached, checking every frame.
// `slow_every` > 0 sleeps `slow_us` every that many frames. `die_after` > 0
// kills itself with SIGKILL after that many frames. The first frame must
// have sequence number `first_seq` (history exactness).
struct ReaderPlan {
  uint32_t slot = 0;
  ReaderStart start;
  uint64_t slow_every = 0;
  uint64_t slow_us = 0;
  uint64_t die_after = 0;
  int64_t first_seq = 0;  // -1: any
  int style = 0;          // 0 Read, 1 Peek/Release, 2 Drain
};

int RunReader(const BroadcastFixture& f, Shared* sh, int idx, ReaderPlan plan) {
  absl::StatusOr<BroadcastReader> rr = f.TryMakeReader(plan.slot, plan.start);
  if (!rr.ok()) return Fail("reader", rr.status().ToString());
  BroadcastReader& r = *rr;
  sh->Set(At(idx, kJoined), 1);
  std::vector<std::byte> buf(f.options.max_frame_bytes);
  uint64_t delivered = 0, missed = 0, errors = 0;
  int64_t next = plan.first_seq;
  const Deadline give_up = Deadline::After(absl::Seconds(120));
  // Accounts one frame whose content was checked (ok, content_seq) while it
  // was known intact.
  auto account = [&](bool ok, uint64_t content_seq, uint64_t seq, uint64_t frame_missed) {
    if (!ok || content_seq != seq) {
      if (errors++ < 5) std::fprintf(stderr, "reader %d: bad frame %lu\n", idx, (unsigned long)seq);
    } else if (next >= 0 && seq != static_cast<uint64_t>(next) + frame_missed) {
      if (errors++ < 5) {
        std::fprintf(stderr, "reader %d: seq %lu, expected %ld + %lu\n", idx, (unsigned long)seq,
                     (long)next, (unsigned long)frame_missed);
      }
    }
    next = static_cast<int64_t>(seq) + 1;
    missed += frame_missed;
    ++delivered;
    if (plan.slow_every != 0 && delivered % plan.slow_every == 0) {
      absl::SleepFor(absl::Microseconds(static_cast<int64_t>(plan.slow_us)));
    }
    if (plan.die_after != 0 && delivered == plan.die_after) raise(SIGKILL);
  };
  struct Seen {
    bool ok;
    uint64_t content_seq, seq, missed;
  };
  std::vector<Seen> batch;
  BroadcastReadResult res = BroadcastReadResult::kOk;
  for (;;) {
    if (give_up.Expired()) return Fail("reader", "gave up after 120 s");
    if (plan.style == 1) {
      BroadcastPeek p = r.Peek();
      res = p.result;
      if (res == BroadcastReadResult::kOk) {
        uint64_t s = 0;
        const bool ok = CheckBroadcastFrame(p.data, &s);
        if (r.Release() == ReleaseResult::kOk) {
          account(ok, s, p.seq, p.missed);
        } else {
          // The view was overwritten: r counts it as missed (reported with
          // the next frame); the frames missed before it were reported now.
          missed += p.missed;
          next = static_cast<int64_t>(p.seq);
        }
        continue;
      }
    } else if (plan.style == 2) {
      bool over = false;
      batch.clear();
      r.Drain(
          [&](std::span<const std::byte> d, const FrameInfo& info) {
            uint64_t s = 0;
            const bool ok = CheckBroadcastFrame(d, &s);
            batch.push_back({ok, s, info.seq, info.missed});
          },
          256, &res, &over);
      Seen last{};
      if (over) {  // the last frame was overwritten while we looked at it
        last = batch.back();
        batch.pop_back();
      }
      for (const Seen& x : batch) account(x.ok, x.content_seq, x.seq, x.missed);
      if (over) {
        missed += last.missed;
        next = static_cast<int64_t>(last.seq);
      }
      if (res == BroadcastReadResult::kOk) continue;
    } else {
      size_t len = 0;
      FrameInfo info;
      res = r.TryRead(buf, &len, &info);
      if (res == BroadcastReadResult::kOk) {
        uint64_t s = 0;
        const bool ok = CheckBroadcastFrame({buf.data(), len}, &s);
        account(ok, s, info.seq, info.missed);
        continue;
      }
    }
    if (res == BroadcastReadResult::kEmpty) {
      res = r.WaitReadable(give_up);
      if (res == BroadcastReadResult::kOk || res == BroadcastReadResult::kTimeout) continue;
    }
    break;
  }
  sh->Set(At(idx, kDelivered), delivered);
  sh->Set(At(idx, kMissed), r.missed_frames());
  sh->Set(At(idx, kNext), static_cast<uint64_t>(next));
  sh->Set(At(idx, kErrors), errors);
  sh->Set(At(idx, kLaps), r.laps());
  sh->Set(At(idx, kDone), static_cast<uint64_t>(res) + 1);
  if (missed != r.missed_frames()) return Fail("reader", "missed frames reported != counted");
  return res == BroadcastReadResult::kClosed || res == BroadcastReadResult::kDetached ? 0 : 2;
}

// Writes frames 0..n-1 (random sizes), then closes. Records the longest
// Write call and when it ended.
int RunWriter(const BroadcastFixture& f, Shared* sh, uint64_t from, uint64_t n, bool close = true) {
  BroadcastWriter w = f.MakeWriter();
  std::vector<std::byte> buf(f.options.max_frame_bytes);
  int64_t longest = 0;
  for (uint64_t seq = from; seq < from + n; ++seq) {
    const size_t len =
        FillBroadcastFrame(buf.data(), seq, FrameSizeFor(seq, f.options.max_frame_bytes));
    const int64_t t0 = testing::NowNs();
    WriteResult r;
    if (seq % 7 == 3) {  // zero-copy path now and then
      Reservation res = w.Reserve(len);
      r = res.result;
      if (r == WriteResult::kOk) {
        std::memcpy(res.data.data(), buf.data(), len);
        w.Commit(len);
      } else if (r == WriteResult::kFull) {
        r = w.Write({buf.data(), len}, Deadline::After(absl::Seconds(30)));
      }
    } else {
      r = w.Write({buf.data(), len}, Deadline::After(absl::Seconds(30)));
    }
    if (r != WriteResult::kOk)
      return Fail("writer", absl::StrCat("frame ", seq, ": ", ToString(r)));
    const int64_t took = testing::NowNs() - t0;
    if (took > longest) {
      longest = took;
      sh->Set(kLongestWriteNs, static_cast<uint64_t>(took));
      sh->Set(kLongestWriteEndNs, static_cast<uint64_t>(t0 + took));
    }
  }
  if (close) w.Close();
  sh->Set(kWriterDone, 1);
  return 0;
}

// Waits until readers [0, n) have attached (as the daemon would hand the
// writer its first frames only after subscribers it must wait for joined).
void WaitJoined(Shared* sh, int n) {
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        for (int i = 0; i < n; ++i) {
          if (sh->Get(At(i, kJoined)) == 0) return false;
        }
        return true;
      },
      absl::Seconds(60)))
      << "readers did not attach";
}

BroadcastOptions Options(SlowReaderPolicy policy, uint32_t readers) {
  BroadcastOptions o;
  o.ring_bytes = 256 << 10;
  o.max_frame_bytes = 2048;
  o.policy = policy;
  o.max_readers = readers;
  o.sample_every = 64;
  return o;
}

class BroadcastFanoutTest : public ::testing::TestWithParam<int> {};

TEST_P(BroadcastFanoutTest, BlockEveryReaderSeesEveryFrameInOrder) {
  const int n = GetParam();
  const uint64_t frames = Frames(n == 1 ? 500'000 : n == 8 ? 300'000 : 100'000);
  shmlane::testing::SetTestTimeLimit(absl::Seconds(300));
  auto f = BroadcastFixture::Make(Options(SlowReaderPolicy::kBlock, static_cast<uint32_t>(n)));
  for (int i = 0; i < n; ++i) f.Activate(static_cast<uint32_t>(i));
  Shared* sh = testing::MakeShared();
  std::vector<pid_t> readers;
  for (int i = 0; i < n; ++i) {
    ReaderPlan plan;
    plan.slot = static_cast<uint32_t>(i);
    plan.style = i % 3;
    // Odd readers join with "all history": a BLOCK writer holds the ring for
    // activated slots until they join, so they too start at frame 0, even
    // if they attach after the writer started.
    if (i % 2 == 1) plan.start = {ReaderStart::Mode::kHistory, ~0u};
    readers.push_back(testing::Spawn([&, i, plan] { return RunReader(f, sh, i, plan); }));
  }
  for (int i = 0; i < n; i += 2) {
    ASSERT_TRUE(testing::WaitFor([&] { return sh->Get(At(i, kJoined)) != 0; }, absl::Seconds(60)));
  }
  const int64_t t0 = testing::NowNs();
  const pid_t writer = testing::Spawn([&] { return RunWriter(f, sh, 0, frames); });
  EXPECT_EQ(testing::ExitCodeWithin(writer, absl::Seconds(240)), 0);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(testing::ExitCodeWithin(readers[i], absl::Seconds(60)), 0) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kDelivered)), frames) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kMissed)), 0u) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kErrors)), 0u) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kNext)), frames) << "reader " << i;
  }
  const double s = static_cast<double>(testing::NowNs() - t0) / 1e9;
  std::printf("block fan-out: %lu frames to %d readers in %.2f s (%.0f deliveries/s)\n",
              (unsigned long)frames, n, s, static_cast<double>(frames) * n / s);
}

INSTANTIATE_TEST_SUITE_P(Readers, BroadcastFanoutTest, ::testing::Values(1, 8, 32));

TEST(BroadcastMultiprocessTest, DropOldestSlowReaderCountsExactLapsFastOnesLoseNothing) {
  shmlane::testing::SetTestTimeLimit(absl::Seconds(300));
  const uint64_t frames = Frames(200'000);
  constexpr int kReaders = 4;  // reader 0 is slow
  BroadcastOptions o = Options(SlowReaderPolicy::kDropOldest, kReaders);
  o.ring_bytes = 64 << 10;
  auto f = BroadcastFixture::Make(o);
  for (int i = 0; i < kReaders; ++i) f.Activate(static_cast<uint32_t>(i));
  Shared* sh = testing::MakeShared();
  std::vector<pid_t> readers;
  for (int i = 0; i < kReaders; ++i) {
    ReaderPlan plan;
    plan.slot = static_cast<uint32_t>(i);
    plan.style = i == 0 ? 0 : i % 3;
    if (i == 0) {
      plan.slow_every = 16;
      plan.slow_us = 500;
    }
    readers.push_back(testing::Spawn([&, i, plan] { return RunReader(f, sh, i, plan); }));
  }
  WaitJoined(sh, kReaders);
  // The writer never waits for a reader (DROP_OLDEST); the test paces it to
  // the fast readers only (polling their cursor pages as an observer), so
  // that they can never be lapped while the slow one is, many times.
  const pid_t writer = testing::Spawn([&] {
    BroadcastWriter w = f.MakeWriter();
    std::vector<std::byte> buf(o.max_frame_bytes);
    const uint64_t burst_bytes = o.ring_bytes / 4;
    uint64_t burst = 0;
    for (uint64_t seq = 0; seq < frames; ++seq) {
      const size_t len = FillBroadcastFrame(buf.data(), seq, FrameSizeFor(seq, o.max_frame_bytes));
      const WriteResult r = w.TryWrite({buf.data(), len});
      if (r != WriteResult::kOk) return Fail("writer", ToString(r));
      burst += len + 32;
      if (burst < burst_bytes) continue;
      burst = 0;
      const Deadline limit = Deadline::After(absl::Seconds(60));
      for (int i = 1; i < kReaders; ++i) {
        for (;;) {
          absl::StatusOr<ReaderPageSnapshot> p = ObserveReaderPage(f.slots[i].page, &f.ring);
          if (p.ok() && p->lag_bytes <= o.ring_bytes / 4) break;
          if (limit.Expired()) return Fail("writer", "fast reader stuck");
          absl::SleepFor(absl::Microseconds(50));
        }
      }
    }
    w.Close();
    return 0;
  });
  EXPECT_EQ(testing::ExitCodeWithin(writer, absl::Seconds(200)), 0);
  for (int i = 0; i < kReaders; ++i) {
    EXPECT_EQ(testing::ExitCodeWithin(readers[i], absl::Seconds(60)), 0) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kErrors)), 0u) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kDelivered)) + sh->Get(At(i, kMissed)), frames) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kNext)), frames) << "reader " << i;
  }
  EXPECT_GT(sh->Get(At(0, kMissed)), 0u) << "the slow reader was never lapped";
  EXPECT_GT(sh->Get(At(0, kLaps)), 0u);
  for (int i = 1; i < kReaders; ++i) {
    EXPECT_EQ(sh->Get(At(i, kMissed)), 0u) << "fast reader " << i;
    EXPECT_EQ(sh->Get(At(i, kDelivered)), frames) << "fast reader " << i;
  }
  std::printf("drop-oldest: slow reader delivered %lu, missed %lu in %lu laps of %lu frames\n",
              (unsigned long)sh->Get(At(0, kDelivered)), (unsigned long)sh->Get(At(0, kMissed)),
              (unsigned long)sh->Get(At(0, kLaps)), (unsigned long)frames);
}

TEST(BroadcastMultiprocessTest, KilledReaderReleasesABlockedWriter) {
  shmlane::testing::SetTestTimeLimit(absl::Seconds(200));
  const uint64_t frames = Frames(100'000);
  constexpr int kReaders = 3;  // reader 2 dies mid-stream
  auto f = BroadcastFixture::Make(Options(SlowReaderPolicy::kBlock, kReaders));
  for (int i = 0; i < kReaders; ++i) f.Activate(static_cast<uint32_t>(i));
  Shared* sh = testing::MakeShared();
  std::vector<pid_t> readers;
  for (int i = 0; i < kReaders; ++i) {
    ReaderPlan plan;
    plan.slot = static_cast<uint32_t>(i);
    plan.style = i;
    if (i == 2) plan.die_after = 1000;
    readers.push_back(testing::Spawn([&, i, plan] { return RunReader(f, sh, i, plan); }));
  }
  WaitJoined(sh, kReaders);
  const pid_t writer = testing::Spawn([&] { return RunWriter(f, sh, 0, frames); });
  // The supervisor learns of the death (here: waitpid; the daemon: the
  // attach socket's hang-up) and releases the slot.
  EXPECT_EQ(testing::ExitCodeWithin(readers[2], absl::Seconds(60)), 128 + SIGKILL);
  // Give the writer time to fill the ring and park on the dead reader.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(sh->Get(kWriterDone), 0u) << "the writer was never held by the dead reader";
  sh->Set(kReleasedAtNs, static_cast<uint64_t>(testing::NowNs()));
  f.Release(2);
  EXPECT_EQ(testing::ExitCodeWithin(writer, absl::Seconds(120)), 0);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(testing::ExitCodeWithin(readers[i], absl::Seconds(60)), 0) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kDelivered)), frames) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kErrors)), 0u) << "reader " << i;
  }
  // The longest Write is the one held by the dead reader; it ended soon
  // after the release.
  const int64_t after_release = static_cast<int64_t>(sh->Get(kLongestWriteEndNs)) -
                                static_cast<int64_t>(sh->Get(kReleasedAtNs));
  EXPECT_GE(after_release, 0);
  EXPECT_LT(after_release, 500'000'000) << "writer resumed " << after_release / 1000 << " us after";
  std::printf("writer held %.1f ms by the dead reader, resumed %.3f ms after the release\n",
              static_cast<double>(sh->Get(kLongestWriteNs)) / 1e6,
              static_cast<double>(after_release) / 1e6);
}

TEST(BroadcastMultiprocessTest, LateJoinersGetExactHistoryMidStream) {
  for (SlowReaderPolicy policy : {SlowReaderPolicy::kBlock, SlowReaderPolicy::kDropOldest}) {
    SCOPED_TRACE(static_cast<int>(policy));
    BroadcastOptions o = Options(policy, 3);
    o.ring_bytes = 4 << 20;  // 2000 frames fit: nobody is lapped, history is exact
    o.history_frames = 100;
    auto f = BroadcastFixture::Make(o);
    f.Activate(0);
    f.Activate(1);  // pages and bells exist before the writer forks; released below
    f.Activate(2);
    f.Release(1);
    f.Release(2);
    Shared* sh = testing::MakeShared();
    ReaderPlan first;
    first.slot = 0;
    const pid_t r0 = testing::Spawn([&] { return RunReader(f, sh, 0, first); });
    WaitJoined(sh, 1);
    const pid_t writer = testing::Spawn([&] {
      BroadcastWriter w = f.MakeWriter();
      std::vector<std::byte> buf(o.max_frame_bytes);
      for (uint64_t seq = 0; seq < 2000; ++seq) {
        if (seq == 1000) {
          sh->Set(kPhase, 1);
          while (sh->Get(kGo) == 0) absl::SleepFor(absl::Microseconds(100));
        }
        const size_t len = FillBroadcastFrame(buf.data(), seq, FrameSizeFor(seq, 500));
        if (w.Write({buf.data(), len}, Deadline::After(absl::Seconds(30))) != WriteResult::kOk) {
          return 1;
        }
      }
      w.Close();
      return 0;
    });
    ASSERT_TRUE(testing::WaitFor([&] { return sh->Get(kPhase) == 1; }, absl::Seconds(60)));
    // Two subscribers join mid-stream: the channel's history, and the live tail.
    ASSERT_TRUE(ActivateReaderSlot(f.ring, 1).ok());
    ASSERT_TRUE(ActivateReaderSlot(f.ring, 2).ok());
    ReaderPlan hist;
    hist.slot = 1;
    hist.first_seq = 900;
    const pid_t r1 = testing::Spawn([&] { return RunReader(f, sh, 1, hist); });
    ReaderPlan live;
    live.slot = 2;
    live.start = {ReaderStart::Mode::kLiveTail, 0};
    live.first_seq = 1000;
    const pid_t r2 = testing::Spawn([&] { return RunReader(f, sh, 2, live); });
    ASSERT_TRUE(testing::WaitFor(
        [&] { return sh->Get(At(1, kJoined)) == 1 && sh->Get(At(2, kJoined)) == 1; }));
    sh->Set(kGo, 1);
    EXPECT_EQ(testing::ExitCodeWithin(writer, absl::Seconds(60)), 0);
    for (pid_t p : {r0, r1, r2}) EXPECT_EQ(testing::ExitCodeWithin(p, absl::Seconds(60)), 0);
    EXPECT_EQ(sh->Get(At(0, kDelivered)), 2000u);
    EXPECT_EQ(sh->Get(At(1, kDelivered)), 1100u);  // 900..1999, exactly
    EXPECT_EQ(sh->Get(At(2, kDelivered)), 1000u);  // 1000..1999
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(sh->Get(At(i, kErrors)), 0u) << i;
      EXPECT_EQ(sh->Get(At(i, kMissed)), 0u) << i;
      EXPECT_EQ(sh->Get(At(i, kNext)), 2000u) << i;
    }
  }
}

TEST(BroadcastMultiprocessTest, AReaderCannotWriteTheRing) {
  auto f = BroadcastFixture::Make(Options(SlowReaderPolicy::kBlock, 2));
  f.Activate(0);
  // Control: the creator's uid could reopen it read-write (root), so the
  // file mode is what stops other uids.
  struct stat st {};
  ASSERT_EQ(fstat(f.ring.fd(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  const pid_t child = testing::Spawn([&] {
    BroadcastReader r = f.MakeReader(0);
    const int fd = r.ring().fd();
    // As another uid, as a real subscriber would run.
    const gid_t gid = 64001;
    if (setgroups(1, &gid) != 0 || setresgid(64001, 64001, 64001) != 0 ||
        setresuid(64001, 64001, 64001) != 0) {
      return Fail("child", "setresuid");
    }
    prctl(PR_SET_DUMPABLE, 1);  // keep /proc/self/fd reachable after the uid change
    if (mprotect(r.ring().data(), 4096, PROT_READ | PROT_WRITE) == 0 || errno != EACCES) {
      return Fail("child", "mprotect(PROT_WRITE) on the ring did not fail with EACCES");
    }
    void* p = mmap(nullptr, r.ring().size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED || errno != EACCES) {
      return Fail("child", "mmap(PROT_WRITE) of the ring fd did not fail with EACCES");
    }
    const std::string path = absl::StrCat("/proc/self/fd/", fd);
    const int rw = open(path.c_str(), O_RDWR);
    if (rw >= 0 || errno != EACCES) {
      return Fail("child", absl::StrCat("reopening the ring read-write: ", rw, " errno ", errno));
    }
    // It can still read.
    size_t len = 0;
    std::vector<std::byte> buf(64);
    return r.TryRead(buf, &len) == BroadcastReadResult::kEmpty ? 0 : 3;
  });
  EXPECT_EQ(testing::ExitCodeWithin(child, absl::Seconds(30)), 0);
}

TEST(BroadcastMultiprocessTest, HostileReaderHarmsNobodyElse) {
  shmlane::testing::SetTestTimeLimit(absl::Seconds(200));
  const uint64_t frames = Frames(200'000);
  constexpr int kReaders = 3;  // reader 2 is hostile
  auto f = BroadcastFixture::Make(Options(SlowReaderPolicy::kBlock, kReaders));
  for (int i = 0; i < kReaders; ++i) f.Activate(static_cast<uint32_t>(i));
  Shared* sh = testing::MakeShared();
  std::vector<pid_t> readers;
  for (int i = 0; i < 2; ++i) {
    ReaderPlan plan;
    plan.slot = static_cast<uint32_t>(i);
    plan.style = i;
    readers.push_back(testing::Spawn([&, i, plan] { return RunReader(f, sh, i, plan); }));
  }
  WaitJoined(sh, 2);
  const pid_t hostile = testing::Spawn([&] {
    BroadcastReader r = f.MakeReader(2);
    auto* page = reinterpret_cast<ReaderPage*>(f.slots[2].page.data());
    uint64_t x = 88172645463325252ull;
    for (uint64_t i = 0;; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      uint64_t& cursor = page->index.cursor;
      // Mostly far ahead (so the BLOCK writer is not held, as a slow reader
      // would hold it), sometimes backwards, misaligned or random.
      const uint64_t v = i % 4 == 0 ? x : i % 4 == 1 ? 0 : uint64_t{1} << 55;
      __atomic_store_n(&cursor, v, __ATOMIC_RELEASE);
      __atomic_store_n(&page->control.waiting, (i << 1) | 1, __ATOMIC_RELEASE);  // flip the word
      f.slots[2].writer_bell->Ring();                                            // flood the writer
      f.slots[2].reader_bell->Ring();                                            // and its own bell
      // Try to write the ring: must fail, never succeed.
      if (mprotect(r.ring().data(), 4096, PROT_READ | PROT_WRITE) == 0) return 9;
      if (i % 64 == 0) sched_yield();
    }
  });
  const int64_t t0 = testing::NowNs();
  const pid_t writer = testing::Spawn([&] { return RunWriter(f, sh, 0, frames); });
  EXPECT_EQ(testing::ExitCodeWithin(writer, absl::Seconds(150)), 0);
  const double s = static_cast<double>(testing::NowNs() - t0) / 1e9;
  EXPECT_NE(waitpid(hostile, nullptr, WNOHANG), hostile) << "the hostile reader exited early";
  testing::KillAndReap(hostile);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(testing::ExitCodeWithin(readers[i], absl::Seconds(60)), 0) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kDelivered)), frames) << "reader " << i;
    EXPECT_EQ(sh->Get(At(i, kErrors)), 0u) << "reader " << i;
  }
  std::printf("with a hostile reader: %lu frames to 2 honest readers in %.2f s\n",
              (unsigned long)frames, s);
}

}  // namespace
}  // namespace shmlane::dataplane
