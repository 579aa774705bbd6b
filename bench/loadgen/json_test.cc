#include "bench/loadgen/json.h"

#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

TEST(JsonTest, RoundTripsNestedDocument) {
  JsonValue v = JsonValue::Object();
  v.Set("transport", "shm").Set("clients", 32).SetBool("pin", false);
  JsonValue lat = JsonValue::Object();
  lat.Set("p99", 1234.0).Set("mean", 12.5);
  v.Set("latency_ns", lat);
  JsonValue list = JsonValue::Array();
  list.Append(JsonValue::String("a\"b\n")).Append(JsonValue());
  v.Set("list", list);
  for (bool pretty : {false, true}) {
    auto parsed = ParseJson(v.Serialize(pretty));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->Serialize(), v.Serialize());
    ASSERT_NE(parsed->FindPath("latency_ns.p99"), nullptr);
    EXPECT_EQ(parsed->FindPath("latency_ns.p99")->as_number(), 1234.0);
    EXPECT_EQ(parsed->Find("list")->items()[0].as_string(), "a\"b\n");
  }
}

TEST(JsonTest, RejectsMalformedInput) {
  for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "tru", "1 2", "\"abc"}) {
    EXPECT_FALSE(ParseJson(bad).ok()) << bad;
  }
}

TEST(JsonTest, NonFiniteNumbersBecomeNull) {
  EXPECT_EQ(JsonValue::Number(1.0 / 0.0).Serialize(), "null");
  EXPECT_EQ(JsonValue::Number(-3).Serialize(), "-3");
  EXPECT_EQ(JsonValue::Number(0.25).Serialize(), "0.25");
}

}  // namespace
}  // namespace shmlane::bench
