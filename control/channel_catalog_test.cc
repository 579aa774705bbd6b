#include "control/channel_catalog.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

v1::ChannelSpec Spec(const std::string& name) {
  v1::ChannelSpec spec;
  spec.set_name(name);
  return spec;
}

ChannelRecord Record(const std::string& name, uint32_t owner = 0) {
  ChannelRecord r;
  r.spec = *NormalizeSpec(Spec(name));
  r.owner_uid = owner;
  return r;
}

TEST(NormalizeSpecTest, FillsEveryDefault) {
  absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(Spec("x"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pattern(), v1::CHANNEL_PATTERN_STREAM);
  EXPECT_EQ(spec->ring_bytes(), kDefaultRingBytes);
  EXPECT_EQ(spec->max_frame_bytes(), kDefaultMaxFrameBytes);
  EXPECT_EQ(spec->max_producers(), kDefaultMaxProducers);
  EXPECT_EQ(spec->backpressure(), v1::BACKPRESSURE_POLICY_BLOCK);
  EXPECT_EQ(spec->latency_sample_every(), kDefaultSampleEvery);
  EXPECT_EQ(spec->wait_preference(), v1::WAIT_PREFERENCE_BALANCED);
}

TEST(NormalizeSpecTest, KeepsAnExplicitWaitPreference) {
  v1::ChannelSpec in = Spec("x");
  in.set_wait_preference(v1::WAIT_PREFERENCE_EFFICIENCY);
  EXPECT_EQ(NormalizeSpec(in)->wait_preference(), v1::WAIT_PREFERENCE_EFFICIENCY);
}

TEST(NormalizeSpecTest, SmallRingCapsTheDefaultFrameSize) {
  v1::ChannelSpec in = Spec("x");
  in.set_ring_bytes(4096);
  absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(in);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->max_frame_bytes(), dataplane::MaxFrameBytesFor(4096));
}

TEST(NormalizeSpecTest, DisablingSamplingWins) {
  v1::ChannelSpec in = Spec("x");
  in.set_disable_latency_sampling(true);
  in.set_latency_sample_every(8);
  EXPECT_EQ(NormalizeSpec(in)->latency_sample_every(), 0u);
}

TEST(NormalizeSpecTest, RejectsEachBadField) {
  auto code = [](const v1::ChannelSpec& s) { return NormalizeSpec(s).status().code(); };
  v1::ChannelSpec s = Spec("x");
  s.set_pattern(static_cast<v1::ChannelPattern>(9));
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = Spec("x");
  s.set_max_producers(kMaxMaxProducers + 1);
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = Spec("x");
  s.set_backpressure(static_cast<v1::BackpressurePolicy>(7));
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = Spec("x");
  s.set_wait_preference(static_cast<v1::WaitPreference>(42));
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(NormalizeSpec(s).status().message().find("LATENCY"), absl::string_view::npos);
  s = Spec("x");
  (*s.mutable_labels())["Bad Key"] = "v";
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = Spec("x");
  (*s.mutable_labels())["team"] = std::string(256, 'v');
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = Spec("x");
  for (size_t i = 0; i <= kMaxLabels; ++i) (*s.mutable_labels())["k" + std::to_string(i)] = "v";
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
  s = Spec("Upper");
  EXPECT_EQ(code(s), absl::StatusCode::kInvalidArgument);
}

TEST(NormalizeSpecTest, BroadcastDefaultsAndBounds) {
  v1::ChannelSpec in = Spec("b");
  in.set_pattern(v1::CHANNEL_PATTERN_BROADCAST);
  absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(in);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->slow_subscriber_policy(), v1::SLOW_SUBSCRIBER_POLICY_BLOCK);
  EXPECT_EQ(spec->max_subscribers(), kDefaultMaxSubscribers);
  EXPECT_EQ(spec->max_producers(), 1u);  // one publisher
  EXPECT_EQ(spec->history_frames(), 0u);
  const dataplane::BroadcastOptions o = BroadcastOptionsFor(*spec);
  EXPECT_EQ(o.max_readers, kDefaultMaxSubscribers);
  EXPECT_EQ(o.policy, dataplane::SlowReaderPolicy::kBlock);

  in.set_slow_subscriber_policy(v1::SLOW_SUBSCRIBER_POLICY_DROP_OLDEST);
  in.set_history_frames(10);
  in.set_max_subscribers(kMaxMaxSubscribers);
  spec = NormalizeSpec(in);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(BroadcastOptionsFor(*spec).policy, dataplane::SlowReaderPolicy::kDropOldest);
  EXPECT_EQ(BroadcastOptionsFor(*spec).history_frames, 10u);

  v1::ChannelSpec bad = in;
  bad.set_max_subscribers(kMaxMaxSubscribers + 1);
  EXPECT_EQ(NormalizeSpec(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = in;
  bad.set_max_producers(2);
  EXPECT_EQ(NormalizeSpec(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = in;
  bad.set_ring_bytes(4096);
  bad.set_max_frame_bytes(4096 / 2 - 16);  // fits a lane, not a broadcast ring
  EXPECT_EQ(NormalizeSpec(bad).status().code(), absl::StatusCode::kInvalidArgument);
  // The broadcast options belong to BROADCAST channels only.
  v1::ChannelSpec stream = Spec("s");
  stream.set_history_frames(1);
  EXPECT_EQ(NormalizeSpec(stream).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChannelCatalogTest, AddFindRemove) {
  ChannelCatalog catalog;
  EXPECT_TRUE(catalog.CheckCanAdd("a").ok());
  catalog.Add(Record("a", 7));
  EXPECT_EQ(catalog.CheckCanAdd("a").code(), absl::StatusCode::kAlreadyExists);
  ASSERT_NE(catalog.Find("a"), nullptr);
  EXPECT_EQ(catalog.Find("a")->owner_uid, 7u);
  EXPECT_EQ(catalog.Get("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(catalog.Get("b").status().message().find("\"b\""), absl::string_view::npos);
  catalog.Remove("a");
  EXPECT_EQ(catalog.Find("a"), nullptr);
  EXPECT_EQ(catalog.size(), 0u);
}

TEST(ChannelCatalogTest, BoundsTheNumberOfChannels) {
  ChannelCatalog catalog;
  for (size_t i = 0; i < kMaxChannels; ++i) catalog.Add(Record("c" + std::to_string(i)));
  EXPECT_EQ(catalog.CheckCanAdd("one-more").code(), absl::StatusCode::kResourceExhausted);
}

TEST(ChannelCatalogTest, PagesAndCountsOwners) {
  ChannelCatalog catalog;
  for (const char* n : {"d", "b", "a", "c"}) catalog.Add(Record(n, n[0] == 'a' ? 5 : 6));
  std::vector<const ChannelRecord*> all = catalog.All();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0]->spec.name(), "a");
  EXPECT_EQ(all[3]->spec.name(), "d");
  EXPECT_EQ(catalog.OwnedBy(5), 1u);
  EXPECT_EQ(catalog.OwnedBy(6), 3u);
  EXPECT_EQ(catalog.OwnedBy(9), 0u);
}

TEST(ChannelCatalogTest, StateRoundTripsAndRejectsInvalidChannels) {
  ChannelCatalog catalog;
  ChannelRecord r = Record("keep", 42);
  r.create_unix_ns = 1'700'000'000'123'000'000;
  catalog.Add(r);
  v1::DaemonState state;
  catalog.Export(&state);
  ASSERT_EQ(state.channels_size(), 1);
  absl::StatusOr<ChannelCatalog> back = ChannelCatalog::Restore(state);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_NE(back->Find("keep"), nullptr);
  EXPECT_EQ(back->Find("keep")->owner_uid, 42u);
  EXPECT_EQ(back->Find("keep")->create_unix_ns, r.create_unix_ns);
  state.mutable_channels(0)->mutable_spec()->set_ring_bytes(3000);
  EXPECT_EQ(ChannelCatalog::Restore(state).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace shmlane::control
