#include "control/access.h"

#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

constexpr uint32_t kDaemonUid = 1000;

ChannelRecord Channel(const std::string& name, uint32_t owner = 2000) {
  ChannelRecord r;
  r.spec = *NormalizeSpec([&] {
    v1::ChannelSpec s;
    s.set_name(name);
    return s;
  }());
  r.owner_uid = owner;
  return r;
}

v1::Grant ToUid(uint32_t uid, v1::GrantRole role) {
  v1::Grant g;
  g.mutable_principal()->set_uid(uid);
  g.set_role(role);
  return g;
}

v1::Grant ToGid(uint32_t gid, v1::GrantRole role) {
  v1::Grant g;
  g.mutable_principal()->set_gid(gid);
  g.set_role(role);
  return g;
}

v1::Grant ToAnyone(v1::GrantRole role) {
  v1::Grant g;
  g.mutable_principal()->set_anyone(true);
  g.set_role(role);
  return g;
}

PeerCredentials Peer(uint32_t uid, uint32_t gid, std::vector<uint32_t> groups = {}) {
  return {.uid = uid, .gid = gid, .pid = 1, .groups = std::move(groups)};
}

TEST(AccessTest, RootDaemonAndOwnerNeedNoGrant) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  const ChannelRecord c = Channel("c", 2000);
  for (uint32_t uid : {0u, kDaemonUid, 2000u}) {
    EXPECT_TRUE(access.Allowed(c, Peer(uid, 9), v1::GRANT_ROLE_CONSUME)) << uid;
  }
  EXPECT_FALSE(access.Allowed(c, Peer(3000, 9), v1::GRANT_ROLE_PRODUCE));
}

TEST(AccessTest, GrantsMatchUidPrimaryGidSupplementaryGidAndAnyone) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  const ChannelRecord c = Channel("c");
  ASSERT_TRUE(*access.AddGrant("c", ToUid(3001, v1::GRANT_ROLE_PRODUCE)));
  ASSERT_TRUE(*access.AddGrant("c", ToGid(500, v1::GRANT_ROLE_PRODUCE)));
  EXPECT_TRUE(access.Allowed(c, Peer(3001, 1), v1::GRANT_ROLE_PRODUCE));
  EXPECT_TRUE(access.Allowed(c, Peer(3002, 500), v1::GRANT_ROLE_PRODUCE));          // primary
  EXPECT_TRUE(access.Allowed(c, Peer(3003, 1, {7, 500}), v1::GRANT_ROLE_PRODUCE));  // supplementary
  EXPECT_FALSE(access.Allowed(c, Peer(3004, 1, {7}), v1::GRANT_ROLE_PRODUCE));
  // PRODUCE does not imply CONSUME.
  EXPECT_FALSE(access.Allowed(c, Peer(3001, 1), v1::GRANT_ROLE_CONSUME));
  ASSERT_TRUE(*access.AddGrant("c", ToAnyone(v1::GRANT_ROLE_CONSUME)));
  EXPECT_TRUE(access.Allowed(c, Peer(4000, 4000), v1::GRANT_ROLE_CONSUME));
  EXPECT_FALSE(access.Allowed(c, Peer(4000, 4000), v1::GRANT_ROLE_PRODUCE));
  // Grants of one channel say nothing about another.
  EXPECT_FALSE(access.Allowed(Channel("other"), Peer(3001, 1), v1::GRANT_ROLE_PRODUCE));
}

TEST(AccessTest, AdminImpliesTheOtherRoles) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  const ChannelRecord c = Channel("c");
  ASSERT_TRUE(*access.AddGrant("c", ToGid(600, v1::GRANT_ROLE_ADMIN)));
  for (v1::GrantRole role :
       {v1::GRANT_ROLE_PRODUCE, v1::GRANT_ROLE_CONSUME, v1::GRANT_ROLE_ADMIN}) {
    EXPECT_TRUE(access.Allowed(c, Peer(3005, 1, {600}), role)) << role;
  }
}

TEST(AccessTest, GrantsAreDeduplicatedBoundedRemovedAndDropped) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  EXPECT_TRUE(*access.AddGrant("c", ToUid(1, v1::GRANT_ROLE_PRODUCE)));
  EXPECT_FALSE(*access.AddGrant("c", ToUid(1, v1::GRANT_ROLE_PRODUCE)));
  EXPECT_TRUE(*access.AddGrant("c", ToUid(1, v1::GRANT_ROLE_CONSUME)));
  EXPECT_EQ(access.Grants("c").size(), 2u);
  EXPECT_TRUE(*access.RemoveGrant("c", ToUid(1, v1::GRANT_ROLE_PRODUCE)));
  EXPECT_FALSE(*access.RemoveGrant("c", ToUid(1, v1::GRANT_ROLE_PRODUCE)));
  for (uint32_t i = 2; access.Grants("c").size() < kMaxGrantsPerChannel; ++i) {
    ASSERT_TRUE(access.AddGrant("c", ToUid(i, v1::GRANT_ROLE_PRODUCE)).ok());
  }
  EXPECT_EQ(access.AddGrant("c", ToUid(99999, v1::GRANT_ROLE_PRODUCE)).status().code(),
            absl::StatusCode::kResourceExhausted);
  access.DropChannel("c");
  EXPECT_TRUE(access.Grants("c").empty());
  v1::Grant bad;
  bad.set_role(v1::GRANT_ROLE_PRODUCE);
  EXPECT_EQ(access.AddGrant("c", bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(access.AddGrant("c", ToUid(1, v1::GRANT_ROLE_UNSPECIFIED)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AccessTest, QuotaLimitsDefaultsOverridesAndReset) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  EXPECT_EQ(access.Limits(7).max_channels(), kDefaultQuotaMaxChannels);
  v1::SetQuotaRequest req;
  req.set_uid(7);
  req.mutable_limits()->set_max_attachments(2);
  absl::StatusOr<v1::Quota> q = access.SetQuota(req, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->is_default());
  EXPECT_EQ(q->limits().max_attachments(), 2u);
  EXPECT_EQ(q->limits().max_shm_bytes(), kDefaultQuotaMaxShmBytes);  // others keep defaults
  v1::SetQuotaRequest empty;
  empty.set_uid(7);
  EXPECT_EQ(access.SetQuota(empty, 0).status().code(), absl::StatusCode::kInvalidArgument);
  empty.set_reset_to_defaults(true);
  EXPECT_TRUE(access.SetQuota(empty, 0)->is_default());
}

TEST(AccessTest, QuotaEntriesAreBounded) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  v1::SetQuotaRequest req;
  req.mutable_limits()->set_max_channels(1);
  for (uint32_t uid = 0; uid < kMaxQuotaEntries; ++uid) {
    req.set_uid(uid);
    ASSERT_TRUE(access.SetQuota(req, 0).ok());
  }
  req.set_uid(kMaxQuotaEntries);
  EXPECT_EQ(access.SetQuota(req, 0).status().code(), absl::StatusCode::kResourceExhausted);
  req.set_uid(0);  // changing an existing entry is still fine
  EXPECT_TRUE(access.SetQuota(req, 0).ok());
}

TEST(AccessTest, CreateChecksChannelsAndFrameSize) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  v1::SetQuotaRequest req;
  req.set_uid(7);
  req.mutable_limits()->set_max_channels(2);
  req.mutable_limits()->set_max_frame_bytes(1024);
  ASSERT_TRUE(access.SetQuota(req, 0).ok());
  v1::ChannelSpec small = Channel("s").spec;
  small.set_max_frame_bytes(512);
  EXPECT_TRUE(access.CheckCreate(7, 1, small).ok());
  absl::Status full = access.CheckCreate(7, 2, small);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("--max-channels"), absl::string_view::npos) << full;
  small.set_max_frame_bytes(2048);
  EXPECT_EQ(access.CheckCreate(7, 0, small).code(), absl::StatusCode::kResourceExhausted);
}

TEST(AccessTest, AttachUsageIsChargedReleasedAndNeverNegative) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  v1::SetQuotaRequest req;
  req.set_uid(7);
  req.mutable_limits()->set_max_attachments(2);
  req.mutable_limits()->set_max_shm_bytes(1000);
  ASSERT_TRUE(access.SetQuota(req, 0).ok());
  EXPECT_EQ(access.CheckAttach(7, 1001).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(access.CheckAttach(7, 600).ok());
  access.Charge(7);
  std::shared_ptr<const ShmCharge> lane = ledger.Charge(7, 600);
  EXPECT_EQ(access.CheckAttach(7, 600).code(), absl::StatusCode::kResourceExhausted);  // shm
  ASSERT_TRUE(access.CheckAttach(7, 0).ok());
  access.Charge(7);
  absl::Status over = access.CheckAttach(7, 0);  // attachments
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("max_attachments"), absl::string_view::npos) << over;
  v1::Quota q = access.Quota(7, 3);
  EXPECT_EQ(q.usage().attachments(), 2u);
  EXPECT_EQ(q.usage().shm_bytes(), 600u);
  EXPECT_EQ(q.usage().channels(), 3u);
  access.Release(7);
  access.Release(7);
  access.Release(7);  // one more than was charged
  access.Release(8);  // never charged
  q = access.Quota(7, 0);
  EXPECT_EQ(q.usage().attachments(), 0u);
  // The memory stays charged while something holds it (a queued fd, say).
  EXPECT_EQ(q.usage().shm_bytes(), 600u);
  std::shared_ptr<const ShmCharge> queued = lane;
  lane.reset();
  EXPECT_EQ(access.Quota(7, 0).usage().shm_bytes(), 600u);
  queued.reset();
  EXPECT_EQ(access.Quota(7, 0).usage().shm_bytes(), 0u);
  EXPECT_EQ(access.Quota(8, 0).usage().attachments(), 0u);
  EXPECT_TRUE(access.CheckAttach(7, 1000).ok());
}

TEST(AccessTest, StateRoundTripsGrantsAndQuotas) {
  ShmLedger ledger;
  Access access(kDaemonUid, &ledger);
  ASSERT_TRUE(*access.AddGrant("c", ToGid(5, v1::GRANT_ROLE_CONSUME)));
  v1::SetQuotaRequest req;
  req.set_uid(7);
  req.mutable_limits()->set_max_channels(3);
  ASSERT_TRUE(access.SetQuota(req, 0).ok());
  v1::DaemonState state;
  state.add_channels()->mutable_spec()->set_name("c");
  access.Export(&state);
  ASSERT_EQ(state.channels(0).grants_size(), 1);
  // An invalid grant (as a newer daemon might write) is skipped.
  state.mutable_channels(0)->add_grants()->set_role(v1::GRANT_ROLE_ADMIN);
  Access other(kDaemonUid, &ledger);
  other.Restore(state);
  EXPECT_EQ(other.Grants("c").size(), 1u);
  EXPECT_EQ(other.Limits(7).max_channels(), 3u);
}

}  // namespace
}  // namespace shmlane::control
