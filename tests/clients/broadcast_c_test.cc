// The C ABI's BROADCAST calls end to end: a real shmlaned, a publisher and
// subscribers in separate processes written in C (broadcast_c_peer.c, and
// the shipped clients/examples/broadcast_c.c), talking only through
// clients/shmlane.h.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/clients/test_util.h"

namespace shmlane::client {
namespace {

using ::shmlane::testing::Child;
using ::shmlane::testing::Daemon;

class BroadcastCTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }

  void Create(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> argv = {SHMLANECTL_PATH, "--runtime-dir", daemon_->dir(),
                                     "channels",      "create",        name,
                                     "--pattern",     "broadcast"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto ctl = Child::Spawn(argv);
    ASSERT_TRUE(ctl.ok()) << ctl.status();
    absl::StatusOr<int> code = ctl->Wait(absl::Now() + absl::Seconds(20));
    ASSERT_TRUE(code.ok() && *code == 0)
        << "shmlanectl channels create failed: " << ctl->RestOfOutput(absl::Now());
  }

  Child Spawn(std::vector<std::string> argv) {
    auto child = Child::Spawn(argv);
    EXPECT_TRUE(child.ok()) << child.status();
    return std::move(*child);
  }
  Child Peer(const std::string& mode, const std::string& channel, const std::string& arg) {
    return Spawn({BROADCAST_C_PEER_PATH, mode, daemon_->dir(), channel, arg});
  }

  static std::string Line(Child& c, const std::string& prefix, absl::Duration within) {
    absl::StatusOr<std::string> got = c.ExpectLine(prefix, absl::Now() + within);
    EXPECT_TRUE(got.ok()) << "waiting for " << prefix << ": " << got.status()
                          << "; output: " << c.RestOfOutput(absl::Now() + absl::Milliseconds(100));
    return got.value_or("");
  }

  static void ExpectExit(Child& c, int code) {
    absl::StatusOr<int> got = c.Wait(absl::Now() + absl::Seconds(20));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, code) << c.RestOfOutput(absl::Now() + absl::Milliseconds(100));
  }

  std::unique_ptr<Daemon> daemon_;
};

// Block policy: two subscribers (copying reads, zero-copy peeks) see every
// frame, in order and intact; the error conventions hold.
TEST_F(BroadcastCTest, BlockPolicyEverySubscriberSeesEveryFrame) {
  Create("cb", {"--ring-bytes", "65536"});
  Child reader = Peer("read", "cb", "0");
  Child peeker = Peer("peek", "cb", "0");
  Line(reader, "ATTACHED", absl::Seconds(10));
  Line(peeker, "ATTACHED", absl::Seconds(10));
  const uint64_t frames = testing::Scaled(20000);
  Child pub = Peer("publish", "cb", absl::StrCat(frames));
  EXPECT_EQ(Line(pub, "READY", absl::Seconds(10)), "READY 2");
  // FAILED_PRECONDITION (a second publisher), NOT_FOUND, INVALID_ARGUMENT,
  // a message written, SHMLANE_INVALID for a NULL handle.
  EXPECT_EQ(Line(pub, "ERRORS", absl::Seconds(10)), "ERRORS 9 5 3 1 1");
  EXPECT_EQ(Line(pub, "DONE", absl::Seconds(40)), absl::StrCat("DONE ", frames));
  ExpectExit(pub, 0);
  const std::string all = absl::StrCat("CLOSED got=", frames, " missed=0 counted=0 bad=0 read=");
  for (Child* c : {&reader, &peeker}) {
    const std::string line = Line(*c, "CLOSED", absl::Seconds(30));
    EXPECT_EQ(line.substr(0, all.size()), all) << line;
    ExpectExit(*c, 0);
  }
}

// Drop-oldest: a subscriber that starts reading late is lapped and counts
// exactly what it missed; every frame is either delivered or counted.
TEST_F(BroadcastCTest, DropOldestLappedSubscriberCountsWhatItMissed) {
  Create("cd", {"--ring-bytes", "65536", "--slow-subscriber-policy", "drop-oldest"});
  Child late = Peer("read", "cd", "300");
  Child late_peeker = Peer("peek", "cd", "300");
  Line(late, "ATTACHED", absl::Seconds(10));
  Line(late_peeker, "ATTACHED", absl::Seconds(10));
  const uint64_t frames = 20000;  // ~1 MiB of records through a 64 KiB ring
  Child pub = Peer("publish", "cd", absl::StrCat(frames));
  EXPECT_EQ(Line(pub, "DONE", absl::Seconds(40)), absl::StrCat("DONE ", frames));
  ExpectExit(pub, 0);
  for (Child* c : {&late, &late_peeker}) {
    const std::string line = Line(*c, "CLOSED", absl::Seconds(30));
    uint64_t got = 0, missed = 0, counted = 0, bad = 0, read = 0;
    ASSERT_EQ(std::sscanf(line.c_str(),
                          "CLOSED got=%" SCNu64 " missed=%" SCNu64 " counted=%" SCNu64
                          " bad=%" SCNu64 " read=%" SCNu64,
                          &got, &missed, &counted, &bad, &read),
              5)
        << line;
    EXPECT_EQ(bad, 0u) << line;
    EXPECT_GT(missed, 0u) << "a 300 ms late start must be lapped: " << line;
    EXPECT_EQ(missed, counted) << "the handle's count is the sum of per-frame counts: " << line;
    EXPECT_EQ(got, read) << line;
    EXPECT_EQ(got + missed, frames) << line;
    ExpectExit(*c, 0);
  }
}

// The shipped C example, as its header comment says to run it.
TEST_F(BroadcastCTest, ShippedExample) {
  Create("cx", {});
  std::vector<Child> subs;
  for (int i = 0; i < 2; ++i) {
    subs.push_back(Spawn({"/usr/bin/env", "SHMLANE_RUNTIME_DIR=" + daemon_->dir(),
                          BROADCAST_C_EXAMPLE_PATH, "subscribe", "cx"}));
  }
  for (Child& s : subs) Line(s, "ATTACHED", absl::Seconds(10));
  Child pub = Spawn({"/usr/bin/env", "SHMLANE_RUNTIME_DIR=" + daemon_->dir(),
                     BROADCAST_C_EXAMPLE_PATH, "publish", "cx", "5000"});
  EXPECT_EQ(Line(pub, "READY", absl::Seconds(10)), "READY 2");
  EXPECT_EQ(Line(pub, "DONE", absl::Seconds(30)), "DONE 5000");
  ExpectExit(pub, 0);
  for (Child& s : subs) {
    EXPECT_EQ(Line(s, "CLOSED", absl::Seconds(30)), "CLOSED got=5000 missed=0 bad=0");
    ExpectExit(s, 0);
  }
}

}  // namespace
}  // namespace shmlane::client
