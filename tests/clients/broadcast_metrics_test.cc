// BROADCAST channels in the daemon's Prometheus metrics, end to end: a real
// shmlaned (--per-lane-metrics, /metrics on a Unix socket), publisher and
// subscribers in separate processes (broadcast_test_peer). Checks the
// subscriber count, the slowest subscriber's lag, laps and missed frames,
// per-subscriber series, that channel totals never go backwards when a
// subscriber or the publisher leaves, and that a hostile subscriber that
// scribbles over its own cursor page is clamped, not believed.
#include <signal.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/clients/test_util.h"

namespace shmlane::client {
namespace {

using ::shmlane::testing::Child;
using ::shmlane::testing::Daemon;
using Samples = std::map<std::string, double>;

class BroadcastMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start({.metrics = true, .per_lane_metrics = true});
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

  Child Peer(std::vector<std::string> args) {
    args.insert(args.begin(), BROADCAST_TEST_PEER_PATH);
    args.push_back("--dir");
    args.push_back(daemon_->dir());
    auto child = Child::Spawn(args);
    EXPECT_TRUE(child.ok()) << child.status();
    return std::move(*child);
  }

  static void ExpectLine(Child& c, const std::string& prefix, absl::Duration within) {
    absl::StatusOr<std::string> got = c.ExpectLine(prefix, absl::Now() + within);
    ASSERT_TRUE(got.ok()) << "waiting for " << prefix << ": " << got.status()
                          << "; output: " << c.RestOfOutput(absl::Now() + absl::Milliseconds(100));
  }

  Samples Scrape() {
    absl::StatusOr<std::string> text = daemon_->Metrics();
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? testing::ParseMetrics(*text) : Samples();
  }

  // Scrapes until `done` holds (the counters are read at scrape time, so a
  // change a peer made shows at the next scrape); fails after 20 s.
  template <typename F>
  Samples ScrapeUntil(const std::string& what, F done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    Samples s;
    for (;;) {
      s = Scrape();
      if (done(s)) return s;
      if (absl::Now() >= deadline) {
        ADD_FAILURE() << "metrics never showed " << what;
        return s;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // The per-subscriber series of `family` on `channel`: subscriber -> value.
  static std::map<std::string, double> PerSubscriber(const Samples& s, const std::string& family,
                                                     const std::string& channel) {
    std::map<std::string, double> out;
    const std::string prefix = absl::StrCat(family, "{channel=\"", channel, "\",subscriber=\"");
    for (const auto& [key, value] : s) {
      if (absl::StartsWith(key, prefix)) out[key.substr(prefix.size())] = value;
    }
    return out;
  }

  static double Get(const Samples& s, const std::string& key) {
    auto it = s.find(key);
    return it == s.end() ? -1 : it->second;
  }

  std::unique_ptr<Daemon> daemon_;
};

TEST_F(BroadcastMetricsTest, SubscribersLagAndLapsAndTotalsNeverGoBackwards) {
  Create("bm", {"--slow-subscriber-policy", "drop-oldest", "--ring-bytes", "65536"});
  const std::string sent = "shmlane_frames_total{channel=\"bm\",direction=\"sent\"}";
  const std::string received = "shmlane_frames_total{channel=\"bm\",direction=\"received\"}";
  const std::string subscribers = "shmlane_broadcast_subscribers{channel=\"bm\"}";
  const std::string lag = "shmlane_broadcast_lag_bytes{channel=\"bm\"}";
  const std::string lapped = "shmlane_broadcast_lapped_frames_total{channel=\"bm\"}";
  const std::string laps = "shmlane_broadcast_laps_total{channel=\"bm\"}";

  Child stalled = Peer({"subscribe", "--channel", "bm", "--stall"});
  Child slow = Peer({"subscribe", "--channel", "bm", "--slow-us", "300"});
  ExpectLine(stalled, "ATTACHED", absl::Seconds(10));
  ExpectLine(slow, "ATTACHED", absl::Seconds(10));
  Samples s =
      ScrapeUntil("2 subscribers", [&](const Samples& m) { return Get(m, subscribers) == 2; });
  EXPECT_EQ(Get(s, lag), 0) << "nothing published yet";

  const uint64_t frames = 20000;
  Child pub = Peer({"publish", "--channel", "bm", "--frames", absl::StrCat(frames), "--wait-subs",
                    "2", "--hold"});
  ExpectLine(pub, "DONE", absl::Seconds(30));
  // The slow subscriber is lapped (it counts that as it reads on).
  s = ScrapeUntil("the slow subscriber lapped",
                  [&](const Samples& m) { return Get(m, lapped) > 0 && Get(m, laps) > 0; });
  EXPECT_EQ(Get(s, sent), frames);
  EXPECT_EQ(Get(s, subscribers), 2);
  // The stalled subscriber never released anything: a whole ring behind
  // (lag is clamped to the ring's size).
  EXPECT_EQ(Get(s, lag), 65536);
  const auto lags = PerSubscriber(s, "shmlane_broadcast_lag_bytes", "bm");
  ASSERT_EQ(lags.size(), 2u) << "one lag series per subscriber with --per-lane-metrics";
  EXPECT_EQ(PerSubscriber(s, "shmlane_broadcast_subscriber_frames_total", "bm").size(), 2u);
  EXPECT_LE(Get(s, lapped), frames);
  EXPECT_LE(Get(s, laps), Get(s, lapped));
  EXPECT_LE(Get(s, received), frames);

  // The slow subscriber dies: its counts stay in the channel's totals.
  slow.Signal(SIGKILL);
  (void)slow.Wait(absl::Now() + absl::Seconds(10));
  Samples after =
      ScrapeUntil("1 subscriber", [&](const Samples& m) { return Get(m, subscribers) == 1; });
  EXPECT_GE(Get(after, lapped), Get(s, lapped));
  EXPECT_GE(Get(after, laps), Get(s, laps));
  EXPECT_GE(Get(after, received), Get(s, received));
  EXPECT_EQ(Get(after, sent), frames);
  EXPECT_EQ(PerSubscriber(after, "shmlane_broadcast_lag_bytes", "bm").size(), 1u);

  // The publisher goes: the ring is closed, the last subscriber ended and
  // the ring dropped; the channel still reports, with the same totals.
  pub.Signal(SIGKILL);
  (void)pub.Wait(absl::Now() + absl::Seconds(10));
  Samples gone =
      ScrapeUntil("0 subscribers", [&](const Samples& m) { return Get(m, subscribers) == 0; });
  EXPECT_EQ(Get(gone, sent), frames);
  EXPECT_GE(Get(gone, lapped), Get(after, lapped));
  EXPECT_GE(Get(gone, received), Get(after, received));
  EXPECT_EQ(Get(gone, lag), 0);
  EXPECT_TRUE(PerSubscriber(gone, "shmlane_broadcast_lag_bytes", "bm").empty());
}

TEST_F(BroadcastMetricsTest, HostileSubscriberPageIsClampedAndNeverGoesBackwards) {
  Create("evil", {"--slow-subscriber-policy", "drop-oldest", "--ring-bytes", "65536"});
  const std::string received = "shmlane_frames_total{channel=\"evil\",direction=\"received\"}";
  const std::string lapped = "shmlane_broadcast_lapped_frames_total{channel=\"evil\"}";
  const std::string laps = "shmlane_broadcast_laps_total{channel=\"evil\"}";
  const std::string samples = "shmlane_latency_seconds_count{channel=\"evil\"}";
  const std::string broken = "shmlane_broken_lanes_total{channel=\"evil\"}";

  Child evil = Peer({"subscribe", "--channel", "evil", "--scribble"});
  ExpectLine(evil, "SCRIBBLED", absl::Seconds(10));
  const uint64_t frames = 1000;
  Child pub = Peer({"publish", "--channel", "evil", "--frames", absl::StrCat(frames), "--wait-subs",
                    "1", "--hold"});
  ExpectLine(pub, "DONE", absl::Seconds(30));
  // All-ones counters are cut down to what the publisher published.
  Samples s = ScrapeUntil("the clamped counters",
                          [&](const Samples& m) { return Get(m, received) == frames; });
  EXPECT_EQ(Get(s, lapped), frames);
  EXPECT_EQ(Get(s, laps), frames);
  EXPECT_LE(Get(s, samples), frames);
  EXPECT_EQ(Get(s, broken), 1) << "the page reports a broken code (all ones)";

  // Zeroing the page (magic included) must not pull anything down.
  evil.Signal(SIGUSR1);
  ExpectLine(evil, "ZEROED", absl::Seconds(10));
  Samples zeroed = Scrape();
  EXPECT_EQ(Get(zeroed, received), frames);
  EXPECT_EQ(Get(zeroed, lapped), frames);
  EXPECT_EQ(Get(zeroed, laps), frames);
  EXPECT_EQ(Get(zeroed, broken), 1);

  evil.Signal(SIGKILL);
  (void)evil.Wait(absl::Now() + absl::Seconds(10));
  Samples left = ScrapeUntil("0 subscribers", [&](const Samples& m) {
    return Get(m, "shmlane_broadcast_subscribers{channel=\"evil\"}") == 0;
  });
  EXPECT_EQ(Get(left, received), frames);
  EXPECT_EQ(Get(left, lapped), frames);
  // The daemon is unharmed: a stats call works.
  EXPECT_TRUE(daemon_->Stats("evil").ok());
}

// GetChannelStats and `shmlanectl stats` show a broadcast channel's
// subscribers and their lag.
TEST_F(BroadcastMetricsTest, StatsAndShmlanectlShowSubscribersAndTheirLag) {
  Create("show", {"--ring-bytes", "65536", "--slow-subscriber-policy", "drop-oldest"});
  Child stalled = Peer({"subscribe", "--channel", "show", "--stall"});
  Child reader = Peer({"subscribe", "--channel", "show"});
  ExpectLine(stalled, "ATTACHED", absl::Seconds(10));
  ExpectLine(reader, "ATTACHED", absl::Seconds(10));
  const uint64_t frames = 5000;
  Child pub = Peer({"publish", "--channel", "show", "--frames", absl::StrCat(frames), "--wait-subs",
                    "2", "--hold"});
  ExpectLine(pub, "DONE", absl::Seconds(30));
  // The reader catches up with the publisher (it reads in real time).
  absl::StatusOr<v1::ChannelStats> stats;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  uint64_t caught_up = 0;
  for (;;) {
    stats = daemon_->Stats("show", /*include_lanes=*/true);
    ASSERT_TRUE(stats.ok()) << stats.status();
    ASSERT_TRUE(stats->has_broadcast()) << stats->DebugString();
    caught_up = 0;
    for (const v1::SubscriberStats& s : stats->broadcast().subscribers()) {
      if (s.lag_bytes() == 0) ++caught_up;
    }
    if (caught_up == 1 || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(caught_up, 1u) << stats->DebugString();
  const v1::BroadcastStats& b = stats->broadcast();
  EXPECT_TRUE(b.publisher_attached());
  EXPECT_EQ(b.subscriber_count(), 2u);
  EXPECT_EQ(b.ring_bytes(), 65536u);
  EXPECT_EQ(b.max_lag_bytes(), 65536u) << "the stalled one is a whole ring behind";
  ASSERT_EQ(b.subscribers_size(), 2);
  EXPECT_EQ(stats->total().frames_sent(), frames);
  for (const v1::SubscriberStats& s : b.subscribers()) {
    EXPECT_EQ(s.subscriber_name(), "subscriber");
    EXPECT_LE(s.frames_received() + s.lapped_frames(), frames);
  }
  // Without include_lanes: the summary only.
  absl::StatusOr<v1::ChannelStats> brief = daemon_->Stats("show");
  ASSERT_TRUE(brief.ok()) << brief.status();
  EXPECT_EQ(brief->broadcast().subscriber_count(), 2u);
  EXPECT_EQ(brief->broadcast().subscribers_size(), 0);

  auto ctl =
      Child::Spawn({SHMLANECTL_PATH, "--runtime-dir", daemon_->dir(), "stats", "show", "--lanes"});
  ASSERT_TRUE(ctl.ok()) << ctl.status();
  const std::string out = ctl->RestOfOutput(absl::Now() + absl::Seconds(20));
  EXPECT_EQ(ctl->Wait(absl::Now() + absl::Seconds(10)).value_or(-1), 0) << out;
  EXPECT_NE(out.find("channel show (broadcast): publisher attached, 2 subscribers, ring 65536 "
                     "bytes; slowest lag 65536 bytes"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find(absl::StrCat("published ", frames, " frames")), std::string::npos) << out;
  EXPECT_NE(out.find("LAG_BYTES"), std::string::npos) << out;
  size_t rows = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::StrContains(line, " subscriber ")) ++rows;
  }
  EXPECT_EQ(rows, 2u) << "one row per subscriber: " << out;
}

}  // namespace
}  // namespace shmlane::client
