#include "shmlane/enum_names.h"

#include "gtest/gtest.h"
#include "shmlane/v1/attach.pb.h"
#include "shmlane/v1/control.pb.h"

namespace shmlane {
namespace {

TEST(EnumNamesTest, ShortNamesFromDescriptors) {
  EXPECT_EQ(ShortName(v1::CHANNEL_PATTERN_REQUEST_REPLY), "request-reply");
  EXPECT_EQ(ShortName(v1::CHANNEL_PATTERN_STREAM), "stream");
  EXPECT_EQ(ShortName(v1::BACKPRESSURE_POLICY_DROP), "drop");
  EXPECT_EQ(ShortName(v1::GRANT_ROLE_ADMIN), "admin");
  EXPECT_EQ(ShortName(v1::ROLE_CONSUMER), "consumer");
  EXPECT_EQ(ShortName(v1::GRANT_ROLE_UNSPECIFIED), "unspecified");
  EXPECT_EQ(ShortName(static_cast<v1::GrantRole>(99)), "99");
}

TEST(EnumNamesTest, ParseAcceptsShortAndFullNames) {
  EXPECT_EQ(*ParseShortName<v1::ChannelPattern>("request-reply"),
            v1::CHANNEL_PATTERN_REQUEST_REPLY);
  EXPECT_EQ(*ParseShortName<v1::ChannelPattern>("REQUEST_REPLY"),
            v1::CHANNEL_PATTERN_REQUEST_REPLY);
  EXPECT_EQ(*ParseShortName<v1::ChannelPattern>("CHANNEL_PATTERN_STREAM"),
            v1::CHANNEL_PATTERN_STREAM);
  EXPECT_EQ(*ParseShortName<v1::GrantRole>("Produce"), v1::GRANT_ROLE_PRODUCE);
}

TEST(EnumNamesTest, ParseRejectsUnknownAndUnspecified) {
  absl::StatusOr<v1::GrantRole> bad = ParseShortName<v1::GrantRole>("write");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("produce, consume, admin"), std::string::npos)
      << bad.status();
  EXPECT_FALSE(ParseShortName<v1::GrantRole>("unspecified").ok());
  EXPECT_EQ(ShortNames<v1::BackpressurePolicy>(), "block|fail|drop");
}

}  // namespace
}  // namespace shmlane
