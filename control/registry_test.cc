#include "control/registry.h"

#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

class RegistryTest : public ::testing::Test {
 protected:
  RegistryTest() : registry_({.daemon_uid = 1000, .metrics = &metrics_, .events = &events_}) {}

  absl::StatusOr<v1::Channel> Create(const std::string& name, uint64_t ring = 0,
                                     uint32_t frame = 0) {
    v1::CreateChannelRequest req;
    req.mutable_spec()->set_name(name);
    req.mutable_spec()->set_ring_bytes(ring);
    req.mutable_spec()->set_max_frame_bytes(frame);
    return registry_.CreateChannel(req);
  }

  DaemonMetrics metrics_;
  EventBus events_;
  Registry registry_;
};

TEST(ChannelNameTest, Rules) {
  EXPECT_TRUE(ValidateChannelName("a").ok());
  EXPECT_TRUE(ValidateChannelName("sensor.imu-0_raw").ok());
  EXPECT_FALSE(ValidateChannelName("").ok());
  EXPECT_FALSE(ValidateChannelName("-a").ok());
  EXPECT_FALSE(ValidateChannelName("A").ok());
  EXPECT_FALSE(ValidateChannelName(std::string(64, 'a')).ok());
  EXPECT_TRUE(ValidateChannelName(std::string(63, 'a')).ok());
}

TEST_F(RegistryTest, CreateFillsDefaultsAndRejectsDuplicates) {
  auto c = Create("telemetry");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->spec().ring_bytes(), 1u << 20);
  EXPECT_EQ(c->spec().max_frame_bytes(), 64u << 10);
  EXPECT_EQ(c->spec().pattern(), v1::CHANNEL_PATTERN_STREAM);
  EXPECT_EQ(c->owner_uid(), 1000u);
  EXPECT_EQ(Create("telemetry").status().code(), absl::StatusCode::kAlreadyExists);
}

// A creation refused by quota is an event, as a refused attach is; and
// the default 64-channel quota counts channels the daemon's uid owns.
TEST_F(RegistryTest, CreateRefusedByQuotaIsAnEvent) {
  std::vector<v1::Event> seen;
  events_.Subscribe("", [&](const v1::Event& e) { seen.push_back(e); });
  int created = 0;
  absl::Status last;
  for (int i = 0; i < 100; ++i) {
    auto c = Create("c" + std::to_string(i));
    if (!c.ok()) {
      last = c.status();
      break;
    }
    ++created;
  }
  EXPECT_EQ(created, 64);
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().type(), v1::EVENT_TYPE_QUOTA_REJECTED);
  EXPECT_EQ(seen.back().channel(), "c64");
  EXPECT_EQ(seen.back().uid(), 1000u);
  EXPECT_NE(seen.back().detail().find("max_channels"), std::string::npos) << seen.back().detail();
}

TEST_F(RegistryTest, RingAndFrameBounds) {
  EXPECT_EQ(Create("a", 3000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Create("b", 1 << 12, 4096).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Create("c", 1 << 12, 2048 - 16).ok());
  EXPECT_EQ(Create("d", uint64_t{1} << 31).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, ListPagesInNameOrder) {
  for (const char* n : {"c", "a", "b", "d", "e"}) ASSERT_TRUE(Create(n).ok());
  v1::ListChannelsRequest req;
  req.set_page_size(2);
  std::vector<std::string> names;
  while (true) {
    auto page = registry_.ListChannels(req);
    ASSERT_TRUE(page.ok());
    for (const auto& c : page->channels()) names.push_back(c.spec().name());
    if (page->next_page_token().empty()) break;
    req.set_page_token(page->next_page_token());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
}

TEST_F(RegistryTest, QuotaDefaultsAndOverrides) {
  auto q = registry_.GetQuota(42);
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->is_default());
  EXPECT_EQ(q->limits().max_channels(), kDefaultQuotaMaxChannels);
  v1::SetQuotaRequest set;
  set.set_uid(42);
  set.mutable_limits()->set_max_channels(1);
  ASSERT_TRUE(registry_.SetQuota(set).ok());
  v1::CreateChannelRequest req;
  req.mutable_spec()->set_name("x");
  req.set_owner_uid(42);
  ASSERT_TRUE(registry_.CreateChannel(req).ok());
  req.mutable_spec()->set_name("y");
  EXPECT_EQ(registry_.CreateChannel(req).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(RegistryTest, StateRoundTrips) {
  ASSERT_TRUE(Create("keep").ok());
  v1::AddGrantRequest grant;
  grant.set_channel("keep");
  grant.mutable_grant()->mutable_principal()->set_uid(7);
  grant.mutable_grant()->set_role(v1::GRANT_ROLE_PRODUCE);
  ASSERT_TRUE(*registry_.AddGrant(grant));
  EXPECT_FALSE(*registry_.AddGrant(grant));
  const v1::DaemonState state = registry_.ExportState();
  DaemonMetrics m2;
  EventBus e2;
  Registry other({.daemon_uid = 1000, .metrics = &m2, .events = &e2});
  ASSERT_TRUE(other.RestoreState(state).ok());
  auto grants = other.ListGrants("keep");
  ASSERT_TRUE(grants.ok());
  ASSERT_EQ(grants->grants_size(), 1);
  EXPECT_EQ(grants->grants(0).principal().uid(), 7u);
}

TEST(LatencyQuantileTest, UsesBucketUpperBounds) {
  uint64_t buckets[dataplane::kLatencyBuckets] = {};
  EXPECT_EQ(LatencyQuantileNs(buckets, 0.5), 0u);
  buckets[3] = 90;  // [1024, 2048) ns
  buckets[10] = 10;
  EXPECT_EQ(LatencyQuantileNs(buckets, 0.5), 2048u);
  EXPECT_EQ(LatencyQuantileNs(buckets, 0.99), dataplane::LatencyBucketUpperNs(10));
}

}  // namespace
}  // namespace shmlane::control
