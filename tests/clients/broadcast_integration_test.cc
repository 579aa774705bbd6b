// BROADCAST channels end to end: a real shmlaned, a channel created with
// `shmlanectl channels create x --pattern broadcast`, a publisher and
// subscribers in separate processes (broadcast_test_peer), checksummed
// sequence-numbered frames of random size.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/broadcast.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/clients/test_util.h"

namespace shmlane::client {
namespace {

using ::shmlane::testing::Child;
using ::shmlane::testing::Daemon;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Outcome {
  uint64_t delivered = 0, missed = 0, errors = 0;
};

// Parses "CLOSED delivered=D missed=M errors=E ...".
Outcome ParseClosed(const std::string& line) {
  Outcome o;
  for (absl::string_view part : absl::StrSplit(line, ' ')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (kv.first == "delivered") o.delivered = std::stoull(kv.second);
    if (kv.first == "missed") o.missed = std::stoull(kv.second);
    if (kv.first == "errors") o.errors = std::stoull(kv.second);
  }
  return o;
}

class BroadcastIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }

  // `shmlanectl channels create NAME --pattern broadcast EXTRA...`
  void Create(const std::string& name, std::vector<std::string> extra = {}) {
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

  Child Peer(std::vector<std::string> args, std::optional<uid_t> uid = std::nullopt) {
    args.insert(args.begin(), BROADCAST_TEST_PEER_PATH);
    args.push_back("--dir");
    args.push_back(daemon_->dir());
    auto child = Child::Spawn(args, uid);
    EXPECT_TRUE(child.ok()) << child.status();
    return std::move(*child);
  }

  static void ExpectLine(Child& c, const std::string& prefix, absl::Duration within,
                         std::string* line = nullptr) {
    absl::StatusOr<std::string> got = c.ExpectLine(prefix, absl::Now() + within);
    ASSERT_TRUE(got.ok()) << "waiting for " << prefix << ": " << got.status()
                          << "; output: " << c.RestOfOutput(absl::Now() + absl::Milliseconds(100));
    if (line != nullptr) *line = *got;
  }

  AttachOptions Options() const {
    AttachOptions o;
    o.runtime_dir = daemon_->dir();
    return o;
  }

  // N subscribers and a publisher of `frames`; every subscriber must see
  // every frame in order (BLOCK).
  void FanOut(const std::string& channel, int subscribers, uint64_t frames) {
    Create(channel);
    std::vector<Child> subs;
    for (int i = 0; i < subscribers; ++i) subs.push_back(Peer({"subscribe", "--channel", channel}));
    for (Child& s : subs) ExpectLine(s, "ATTACHED", absl::Seconds(10));
    Child pub = Peer({"publish", "--channel", channel, "--frames", absl::StrCat(frames),
                      "--wait-subs", absl::StrCat(subscribers)});
    std::string ready;
    ExpectLine(pub, "READY", absl::Seconds(15), &ready);
    EXPECT_EQ(ready, absl::StrCat("READY ", subscribers));
    ExpectLine(pub, "DONE", absl::Seconds(40));
    EXPECT_EQ(pub.Wait(absl::Now() + absl::Seconds(10)).value_or(-1), 0);
    for (Child& s : subs) {
      std::string line;
      ExpectLine(s, "CLOSED", absl::Seconds(20), &line);
      const Outcome o = ParseClosed(line);
      EXPECT_EQ(o.delivered, frames) << line;
      EXPECT_EQ(o.missed, 0u) << line;
      EXPECT_EQ(o.errors, 0u) << line;
    }
  }

  std::unique_ptr<Daemon> daemon_;
};

TEST_F(BroadcastIntegrationTest, OneSubscriberSeesEveryFrameInOrder) {
  FanOut("one", 1, testing::Scaled(50000));
}

TEST_F(BroadcastIntegrationTest, EightSubscribersSeeEveryFrameInOrder) {
  FanOut("eight", 8, testing::Scaled(20000));
}

TEST_F(BroadcastIntegrationTest, DropOldestSlowSubscriberCountsExactlyWhatItMissed) {
  Create("lossy", {"--slow-subscriber-policy", "drop-oldest", "--ring-bytes", "65536"});
  Child fast = Peer({"subscribe", "--channel", "lossy"});
  Child slow = Peer({"subscribe", "--channel", "lossy", "--slow-us", "300"});
  ExpectLine(fast, "ATTACHED", absl::Seconds(10));
  ExpectLine(slow, "ATTACHED", absl::Seconds(10));
  const uint64_t frames = 20000;
  Child pub =
      Peer({"publish", "--channel", "lossy", "--frames", absl::StrCat(frames), "--wait-subs", "2"});
  ExpectLine(pub, "DONE", absl::Seconds(30));
  ASSERT_EQ(pub.Wait(absl::Now() + absl::Seconds(10)).value_or(-1), 0);
  for (Child* c : {&fast, &slow}) {
    std::string line;
    ExpectLine(*c, "CLOSED", absl::Seconds(30), &line);
    const Outcome o = ParseClosed(line);
    std::fprintf(stderr, "%s subscriber: %s\n", c == &slow ? "slow" : "fast", line.c_str());
    EXPECT_EQ(o.errors, 0u) << line;
    EXPECT_EQ(o.delivered + o.missed, frames) << line;
    if (c == &slow) {
      EXPECT_GT(o.missed, 0u) << "the slow subscriber was never lapped: " << line;
    }
  }
}

TEST_F(BroadcastIntegrationTest, KilledSubscriberReleasesABlockedPublisher) {
  Create("stuck", {"--ring-bytes", "65536"});
  Child staller = Peer({"subscribe", "--channel", "stuck", "--stall"});
  ExpectLine(staller, "ATTACHED", absl::Seconds(10));
  // Far more than the ring holds: the publisher blocks on the staller.
  Child pub = Peer({"publish", "--channel", "stuck", "--frames", "5000", "--wait-subs", "1"});
  ExpectLine(pub, "READY 1", absl::Seconds(10));
  absl::StatusOr<std::string> early = pub.ExpectLine("DONE", absl::Now() + absl::Seconds(1));
  ASSERT_FALSE(early.ok()) << "the publisher was not held by a subscriber that never reads";
  staller.Signal(SIGKILL);
  const absl::Time killed = absl::Now();
  ExpectLine(pub, "DONE", absl::Seconds(10));
  EXPECT_LT(absl::Now() - killed, absl::Seconds(5));
  EXPECT_EQ(pub.Wait(absl::Now() + absl::Seconds(10)).value_or(-1), 0);
}

TEST_F(BroadcastIntegrationTest, KilledPublisherLetsSubscribersDrainThenClose) {
  Create("orphan");
  // They start reading only after the publisher is dead.
  Child a = Peer({"subscribe", "--channel", "orphan", "--delay-ms", "1500"});
  Child b = Peer({"subscribe", "--channel", "orphan", "--delay-ms", "1500"});
  ExpectLine(a, "ATTACHED", absl::Seconds(10));
  ExpectLine(b, "ATTACHED", absl::Seconds(10));
  const uint64_t frames = 1000;  // about 500 KB: fits the 1 MiB ring
  Child pub = Peer({"publish", "--channel", "orphan", "--frames", absl::StrCat(frames),
                    "--wait-subs", "2", "--hold"});
  ExpectLine(pub, "DONE", absl::Seconds(20));
  pub.Signal(SIGKILL);
  for (Child* c : {&a, &b}) {
    std::string line;
    ExpectLine(*c, "CLOSED", absl::Seconds(20), &line);
    const Outcome o = ParseClosed(line);
    EXPECT_EQ(o.delivered, frames) << line;
    EXPECT_EQ(o.errors, 0u) << line;
  }
  // The channel takes a new publisher (a fresh ring).
  auto again = Publisher::Attach("orphan", Options());
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(BroadcastIntegrationTest, GrantsDecideWhoPublishesAndSubscribes) {
  Create("guarded");
  constexpr uid_t kUid = 64031;
  Child sub = Peer({"subscribe", "--channel", "guarded"}, kUid);
  ExpectLine(sub, "STATUS 7", absl::Seconds(10));  // PERMISSION_DENIED
  Child pub = Peer({"publish", "--channel", "guarded", "--frames", "0"}, kUid);
  ExpectLine(pub, "STATUS 7", absl::Seconds(10));
  ASSERT_TRUE(daemon_->GrantUid("guarded", kUid, v1::GRANT_ROLE_CONSUME).ok());
  Child sub2 = Peer({"subscribe", "--channel", "guarded", "--stall"}, kUid);
  ExpectLine(sub2, "ATTACHED", absl::Seconds(10));
  // CONSUME does not let it publish.
  Child pub2 = Peer({"publish", "--channel", "guarded", "--frames", "0"}, kUid);
  ExpectLine(pub2, "STATUS 7", absl::Seconds(10));
}

TEST_F(BroadcastIntegrationTest, SecondPublisherIsRefusedAndSubscribersMayComeFirst) {
  Create("solo", {"--history-frames", "4"});
  auto early = Subscriber::Attach("solo", ReaderStart{}, Options());
  ASSERT_TRUE(early.ok()) << early.status();
  auto pub = Publisher::Attach("solo", Options());
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(pub->subscribers(), 1u);
  auto second = Publisher::Attach("solo", Options());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("already has a publisher"));
  // A STREAM role on a BROADCAST channel is refused.
  ASSERT_EQ(pub->Write("hello", absl::Now() + absl::Seconds(5)), WriteResult::kOk);
  std::vector<std::byte> buf(64);
  size_t n = 0;
  FrameInfo info;
  ASSERT_EQ(early->Read(buf, &n, absl::Now() + absl::Seconds(5), &info), BroadcastReadResult::kOk);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), n), "hello");
  // Zero-copy on both sides, and a late joiner with the channel's history.
  for (int i = 0; i < 6; ++i) {
    Reservation r = pub->Reserve(8);
    ASSERT_EQ(r.data.size(), 8u);
    std::memcpy(r.data.data(), "frame-00", 8);
    r.data[7] = static_cast<std::byte>('0' + i);
    pub->Commit(8);
  }
  auto late = Subscriber::Attach("solo", ReaderStart{}, Options());  // kChannel: 4 frames
  ASSERT_TRUE(late.ok()) << late.status();
  BroadcastPeek p = late->Peek();
  ASSERT_EQ(p.result, BroadcastReadResult::kOk);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(p.data.data()), p.data.size()), "frame-02");
  EXPECT_EQ(late->Release(), ReleaseResult::kOk);
  // The publisher links the late subscriber from its writes alone (the
  // ring's slot generation changed), long before kSocketCheckEvery writes.
  int writes = 0;
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (pub->subscribers() < 2 && absl::Now() < until) {
    ASSERT_EQ(pub->TryWrite("x"), WriteResult::kOk);
    ++writes;
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(pub->subscribers(), 2u);
  EXPECT_LT(writes, static_cast<int>(Publisher::kSocketCheckEvery));
  late->Close();
  early->Close();
  const absl::Time until2 = absl::Now() + absl::Seconds(5);
  while (pub->subscribers() > 0 && absl::Now() < until2) {
    ASSERT_TRUE(pub->Poll().ok());
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(pub->subscribers(), 0u);
  pub->Close();
}

}  // namespace
}  // namespace shmlane::client
