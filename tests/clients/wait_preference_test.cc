// Wait preferences end to end against a real shmlaned: the preference set at
// channel creation reaches every endpoint at attach (a stream consumer, a
// request/reply client waiting for its reply), a client's override wins for
// its own endpoint, and what waiting cost shows in the daemon's stats (spin
// time, spins, parks); BROADCAST publishers and subscribers follow it too
// (their parks show in the channel's stats). Each wait here is long (the peer acts after 20 ms), so
// `latency` must spin its whole budget and then park, and `efficiency` must
// park without spinning.
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/broadcast.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/request_reply.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "tests/clients/test_util.h"

namespace shmlane::client {
namespace {

using ::google::protobuf::util::TimeUtil;
using ::shmlane::testing::Daemon;

class WaitPreferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }

  // Stream: a consumer waits for one frame a producer writes 20 ms later.
  // Returns the channel's total lane stats once the frame arrived.
  v1::LaneStats StreamOnce(const std::string& channel, v1::WaitPreference pref,
                           std::optional<dataplane::WaitPreference> consumer_override) {
    EXPECT_TRUE(daemon_
                    ->CreateChannel(channel, v1::CHANNEL_PATTERN_STREAM, 0, 0,
                                    v1::BACKPRESSURE_POLICY_BLOCK, pref)
                    .ok());
    Consumer::Options copts;
    copts.runtime_dir = daemon_->dir();
    copts.wait.spin = absl::Microseconds(200);
    copts.wait_preference = consumer_override;
    auto consumer = Consumer::Attach(channel, copts);
    EXPECT_TRUE(consumer.ok()) << consumer.status();
    AttachOptions popts;
    popts.runtime_dir = daemon_->dir();
    auto producer = Producer::Attach(channel, popts);
    EXPECT_TRUE(producer.ok()) << producer.status();
    if (!consumer.ok() || !producer.ok()) return {};
    // Let the consumer learn of the lane first (a Read with no frame yet).
    (void)consumer->Read(absl::Now() + absl::Milliseconds(50));
    std::thread writer([&] {
      absl::SleepFor(absl::Milliseconds(20));
      EXPECT_EQ(producer->Write(std::string("x")), WriteResult::kOk);
    });
    auto frame = consumer->Read(absl::Now() + absl::Seconds(10));
    writer.join();
    EXPECT_TRUE(frame.ok()) << frame.status();
    auto stats = daemon_->Stats(channel);
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? stats->total() : v1::LaneStats();
  }

  std::unique_ptr<Daemon> daemon_;
};

TEST_F(WaitPreferenceTest, EfficiencyChannelParksWithoutSpinning) {
  const v1::LaneStats t = StreamOnce("eff", v1::WAIT_PREFERENCE_EFFICIENCY, std::nullopt);
  EXPECT_EQ(t.frames_received(), 1u);
  EXPECT_EQ(t.spin_waits(), 0u);
  EXPECT_EQ(TimeUtil::DurationToNanoseconds(t.spin_time()), 0);
  EXPECT_GE(t.parks(), 1u);
  EXPECT_GE(t.wakeups_received(), 1u);
}

TEST_F(WaitPreferenceTest, LatencyChannelSpinsItsBudgetThenParks) {
  const v1::LaneStats t = StreamOnce("lat", v1::WAIT_PREFERENCE_LATENCY, std::nullopt);
  EXPECT_EQ(t.frames_received(), 1u);
  EXPECT_GE(t.spin_waits(), 1u);
  EXPECT_GE(TimeUtil::DurationToNanoseconds(t.spin_time()), 200'000);
  EXPECT_GE(t.parks(), 1u);
}

TEST_F(WaitPreferenceTest, ClientOverrideWinsOverTheChannel) {
  const v1::LaneStats t =
      StreamOnce("over", v1::WAIT_PREFERENCE_LATENCY, dataplane::WaitPreference::kEfficiency);
  EXPECT_EQ(t.frames_received(), 1u);
  EXPECT_EQ(t.spin_waits(), 0u) << "the consumer asked for efficiency";
  EXPECT_GE(t.parks(), 1u);
}

// A request/reply client waiting for its reply follows the channel too.
TEST_F(WaitPreferenceTest, RequestReplyClientWaitsAsTheChannelSays) {
  for (auto pref : {v1::WAIT_PREFERENCE_EFFICIENCY, v1::WAIT_PREFERENCE_LATENCY}) {
    const std::string name = absl::StrCat("rpc-", pref);
    SCOPED_TRACE(name);
    ASSERT_TRUE(daemon_
                    ->CreateChannel(name, v1::CHANNEL_PATTERN_REQUEST_REPLY, 0, 0,
                                    v1::BACKPRESSURE_POLICY_BLOCK, pref)
                    .ok());
    Server::Options sopts;
    sopts.runtime_dir = daemon_->dir();
    sopts.wait_preference = dataplane::WaitPreference::kEfficiency;  // only the client spins
    auto server = Server::Attach(name, sopts);
    ASSERT_TRUE(server.ok()) << server.status();
    Client::Options copts;
    copts.runtime_dir = daemon_->dir();
    copts.wait.spin = absl::Microseconds(200);
    auto client = Client::Attach(name, copts);
    ASSERT_TRUE(client.ok()) << client.status();
    std::thread serving([&] {
      (void)server->Serve(
          [](const Server::Request& r, std::string* reply) {
            absl::SleepFor(absl::Milliseconds(20));  // the client waits ~20 ms
            *reply = std::string(r.data_as_string_view());
            return absl::OkStatus();
          },
          absl::Now() + absl::Seconds(20));
    });
    auto reply = client->Call("ping", absl::Now() + absl::Seconds(10));
    server->Stop();
    serving.join();
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "ping");
    auto stats = daemon_->Stats(name);
    ASSERT_TRUE(stats.ok()) << stats.status();
    if (pref == v1::WAIT_PREFERENCE_EFFICIENCY) {
      EXPECT_EQ(stats->total().spin_waits(), 0u);
    } else {
      EXPECT_GE(TimeUtil::DurationToNanoseconds(stats->total().spin_time()), 200'000);
    }
    EXPECT_GE(stats->total().parks(), 1u);
  }
}

// BROADCAST: a subscriber waits for one frame the publisher writes 20 ms
// later. With a 1 s spin budget, `latency` catches it while spinning (no
// park); `efficiency` parks at once. The subscriber's parks are read back
// from the daemon's stats (its cursor page).
class BroadcastWaitTest : public WaitPreferenceTest {
 protected:
  v1::SubscriberStats SubscriberWaitsOnce(const std::string& channel, v1::WaitPreference pref,
                                          std::optional<dataplane::WaitPreference> override_pref,
                                          dataplane::WaitPreference expected) {
    const absl::Status created = daemon_->CreateChannel(
        channel, v1::CHANNEL_PATTERN_BROADCAST, 65536, 0, v1::BACKPRESSURE_POLICY_BLOCK, pref);
    EXPECT_TRUE(created.ok()) << created;
    AttachOptions sopts;
    sopts.runtime_dir = daemon_->dir();
    sopts.wait.spin = absl::Seconds(1);
    sopts.wait_preference = override_pref;
    auto sub = Subscriber::Attach(channel, {}, sopts);
    EXPECT_TRUE(sub.ok()) << sub.status();
    AttachOptions popts;
    popts.runtime_dir = daemon_->dir();
    auto pub = Publisher::Attach(channel, popts);
    EXPECT_TRUE(pub.ok()) << pub.status();
    if (!sub.ok() || !pub.ok()) return {};
    EXPECT_EQ(sub->wait_options().preference, expected);
    std::thread writer([&] {
      absl::SleepFor(absl::Milliseconds(20));
      EXPECT_EQ(pub->Write(std::string("x")), WriteResult::kOk);
    });
    std::byte buf[64];
    size_t n = 0;
    EXPECT_EQ(sub->Read(buf, &n, absl::Now() + absl::Seconds(10)), BroadcastReadResult::kOk);
    writer.join();
    auto stats = daemon_->Stats(channel, /*include_lanes=*/true);
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (!stats.ok() || stats->broadcast().subscribers_size() != 1) {
      ADD_FAILURE() << "no subscriber in the stats";
      return {};
    }
    return stats->broadcast().subscribers(0);
  }
};

TEST_F(BroadcastWaitTest, EfficiencyChannelSubscriberParks) {
  const v1::SubscriberStats s =
      SubscriberWaitsOnce("b-eff", v1::WAIT_PREFERENCE_EFFICIENCY, std::nullopt,
                          dataplane::WaitPreference::kEfficiency);
  EXPECT_EQ(s.frames_received(), 1u);
  EXPECT_GE(s.parks(), 1u);
  EXPECT_GE(s.wakeups_received(), 1u);
}

TEST_F(BroadcastWaitTest, LatencyChannelSubscriberCatchesTheFrameSpinning) {
  const v1::SubscriberStats s = SubscriberWaitsOnce(
      "b-lat", v1::WAIT_PREFERENCE_LATENCY, std::nullopt, dataplane::WaitPreference::kLatency);
  EXPECT_EQ(s.frames_received(), 1u);
  EXPECT_EQ(s.parks(), 0u) << "a 1 s spin covers a 20 ms wait";
}

TEST_F(BroadcastWaitTest, SubscriberOverrideWinsOverTheChannel) {
  const v1::SubscriberStats s = SubscriberWaitsOnce("b-over", v1::WAIT_PREFERENCE_LATENCY,
                                                    dataplane::WaitPreference::kEfficiency,
                                                    dataplane::WaitPreference::kEfficiency);
  EXPECT_EQ(s.frames_received(), 1u);
  EXPECT_GE(s.parks(), 1u) << "the subscriber asked for efficiency";
}

// A BLOCK publisher on a full ring: the subscriber frees room 20 ms later.
// `latency` (1 s budget) waits spinning, `efficiency` parks.
TEST_F(BroadcastWaitTest, PublisherOnAFullRingWaitsAsTheChannelSays) {
  for (auto pref : {v1::WAIT_PREFERENCE_EFFICIENCY, v1::WAIT_PREFERENCE_LATENCY}) {
    const std::string name = absl::StrCat("b-pub-", pref);
    SCOPED_TRACE(name);
    ASSERT_TRUE(daemon_
                    ->CreateChannel(name, v1::CHANNEL_PATTERN_BROADCAST, 65536, 1024,
                                    v1::BACKPRESSURE_POLICY_BLOCK, pref)
                    .ok());
    AttachOptions sopts;
    sopts.runtime_dir = daemon_->dir();
    sopts.wait_preference = dataplane::WaitPreference::kEfficiency;
    auto sub = Subscriber::Attach(name, {}, sopts);
    ASSERT_TRUE(sub.ok()) << sub.status();
    AttachOptions popts;
    popts.runtime_dir = daemon_->dir();
    popts.wait.spin = absl::Seconds(1);
    auto pub = Publisher::Attach(name, popts);
    ASSERT_TRUE(pub.ok()) << pub.status();
    EXPECT_EQ(pub->wait_options().preference, pref == v1::WAIT_PREFERENCE_LATENCY
                                                  ? dataplane::WaitPreference::kLatency
                                                  : dataplane::WaitPreference::kEfficiency);
    const std::string frame(1000, 'f');
    uint64_t written = 0;
    while (pub->TryWrite(frame) == WriteResult::kOk) ++written;
    ASSERT_GT(written, 0u);
    std::thread reader([&] {
      absl::SleepFor(absl::Milliseconds(20));
      std::byte buf[1024];
      size_t n = 0;
      for (uint64_t i = 0; i < written + 1; ++i) {
        ASSERT_EQ(sub->Read(buf, &n, absl::Now() + absl::Seconds(10)), BroadcastReadResult::kOk);
      }
    });
    EXPECT_EQ(pub->Write(frame, absl::Now() + absl::Seconds(10)), WriteResult::kOk);
    reader.join();
    auto stats = daemon_->Stats(name, /*include_lanes=*/true);
    ASSERT_TRUE(stats.ok()) << stats.status();
    ASSERT_EQ(stats->broadcast().subscribers_size(), 1);
    // The channel's parks are the publisher's plus the subscriber's.
    const uint64_t publisher_parks =
        stats->total().parks() - stats->broadcast().subscribers(0).parks();
    if (pref == v1::WAIT_PREFERENCE_EFFICIENCY) {
      EXPECT_GE(publisher_parks, 1u);
    } else {
      EXPECT_EQ(publisher_parks, 0u) << "a 1 s spin covers a 20 ms wait";
    }
  }
}

}  // namespace
}  // namespace shmlane::client
