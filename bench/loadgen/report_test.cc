// The result JSON: numbers as the files store them, the writer (RunJson,
// GateJson) against the reader (ParseJson, dotted paths, EvaluateTargets,
// MarkdownTables), and a committed result file read back exactly as its
// Markdown and gate were written.
#include "bench/loadgen/report.h"

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/result_json.h"
#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ResultJsonTest, NumbersKeepTheFilesFormat) {
  EXPECT_EQ(DumpJson(JsonNumber(32)), "32");
  EXPECT_EQ(DumpJson(JsonNumber(-3)), "-3");
  EXPECT_EQ(DumpJson(JsonNumber(0.25)), "0.25");
  EXPECT_EQ(DumpJson(JsonNumber(1.974671234)), "1.97467");  // 6 significant digits
  EXPECT_EQ(DumpJson(JsonNumber(1.0 / 0.0)), "null");       // JSON has no infinity
  EXPECT_EQ(DumpJson(JsonNumber(0.0 / 0.0)), "null");
  EXPECT_TRUE(JsonNumber(17644).is_number_integer());
}

TEST(ResultJsonTest, KeepsKeyOrderAndFindsDottedPaths) {
  Json v = Json::object();
  v["transport"] = "shm";
  v["clients"] = 32;
  v["pin"] = false;
  v["latency_ns"] = {{"p99", 1234}, {"mean", JsonNumber(12.5)}};
  v["list"] = Json::array({"a\"b\n", nullptr});
  EXPECT_EQ(DumpJson(v),
            R"({"transport":"shm","clients":32,"pin":false,"latency_ns":{"p99":1234,"mean":12.5},)"
            R"("list":["a\"b\n",null]})");
  for (bool pretty : {false, true}) {
    absl::StatusOr<Json> parsed = ParseJson(DumpJson(v, pretty));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, v);
    EXPECT_EQ(NumberAt(*parsed, "latency_ns.p99"), 1234.0);
    EXPECT_EQ(StringAt(*parsed, "transport"), "shm");
    EXPECT_TRUE(std::isnan(NumberAt(*parsed, "latency_ns.p50")));
    EXPECT_TRUE(std::isnan(NumberAt(*parsed, "transport.p99")));  // not an object
    EXPECT_EQ(FindPath(*parsed, "list.0"), nullptr);
  }
}

TEST(ResultJsonTest, RejectsMalformedInput) {
  for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "tru", "1 2", "\"abc"}) {
    EXPECT_FALSE(ParseJson(bad).ok()) << bad;
  }
  absl::StatusOr<Json> bad = ParseJson("{\"a\": 1,}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 1, column 9"), std::string::npos) << bad.status();
}

RunResult MakeRun(TransportKind transport, double frames_per_s, uint64_t rtt_ns) {
  RunResult r;
  r.spec.transport = transport;
  r.spec.pattern = Pattern::kPingPong;
  r.window_s = 2.0000004;
  r.frames = 123456789;
  r.frames_per_s = frames_per_s;
  r.mb_per_s = frames_per_s * 64 / 1e6;
  r.latency = std::make_unique<Histogram>();
  for (uint64_t i = 1; i <= 1000; ++i) r.latency->Record(rtt_ns + i);
  r.resources.clients.user_ns = 1'974'671'234;
  r.resources.daemon_rss_kb = 17644;
  r.setup_s = 0.0321;
  return r;
}

TEST(ReportTest, RunJsonRoundTripsThroughTheFileAndTheGate) {
  const Json shm = RunJson(MakeRun(TransportKind::kShm, 25'380'690.4, 2000));
  const Json uds = RunJson(MakeRun(TransportKind::kUds, 578'852, 50000));
  EXPECT_EQ(StringAt(shm, "pattern"), "pingpong");
  EXPECT_EQ(StringAt(shm, "latency_kind"), "round_trip");
  EXPECT_EQ(NumberAt(shm, "frames_per_s"), 25380690);
  EXPECT_EQ(NumberAt(shm, "window_s"), 2);
  EXPECT_EQ(NumberAt(shm, "frames"), 123456789);
  EXPECT_EQ(NumberAt(shm, "resources.clients_user_s"), 1.97467);
  EXPECT_EQ(NumberAt(shm, "resources.daemon_rss_kb"), 17644);
  EXPECT_EQ(NumberAt(shm, "latency_ns.count"), 1000);
  EXPECT_EQ(NumberAt(shm, "setup_s"), 0.032);
  ASSERT_TRUE(FindPath(shm, "latency_cdf") != nullptr);
  EXPECT_EQ(FindPath(shm, "latency_cdf")->size(), 20u);
  EXPECT_EQ(FindPath(shm, "frames_sent_total"), nullptr);  // not for pingpong

  Json doc = Json::object();
  doc["runs"] = Json::array({shm, uds});
  absl::StatusOr<Json> read = ParseJson(DumpJson(doc, /*pretty=*/true));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, doc);
  const std::vector<Json> runs((*read)["runs"].begin(), (*read)["runs"].end());

  absl::StatusOr<Json> targets = ParseJson(R"({"targets": [
      {"name": "rtt", "metric": "latency_ns.p99", "pattern": "pingpong", "clients": 1,
       "frame_bytes": 64, "numerator": "uds", "denominator": "shm", "min_ratio": 10,
       "smoke": true},
      {"name": "tput", "metric": "frames_per_s", "pattern": "pingpong", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "denominator": "uds", "min_ratio": 50},
      {"name": "absent", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "denominator": "uds", "min_ratio": 1}]})");
  ASSERT_TRUE(targets.ok()) << targets.status();
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, runs, false);
  ASSERT_TRUE(checks.ok()) << checks.status();
  ASSERT_EQ(checks->size(), 3u);
  EXPECT_TRUE((*checks)[0].found && (*checks)[0].passed);
  EXPECT_NEAR((*checks)[0].ratio, 51000.0 / 3000.0, 0.5);
  EXPECT_TRUE((*checks)[1].found);
  EXPECT_FALSE((*checks)[1].passed);  // 43.8x < 50x
  EXPECT_FALSE((*checks)[2].found);
  EXPECT_EQ(DumpJson(GateJson(*checks)[2]),
            R"({"name":"absent","result":"missing","min_ratio":1})");
  absl::StatusOr<std::vector<GateCheck>> smoke = EvaluateTargets(*targets, runs, true);
  ASSERT_TRUE(smoke.ok());
  EXPECT_EQ(smoke->size(), 1u);

  absl::StatusOr<Json> no_list = ParseJson(R"({"targets": {}})");
  ASSERT_TRUE(no_list.ok());
  EXPECT_FALSE(EvaluateTargets(*no_list, runs, false).ok());
  absl::StatusOr<Json> incomplete = ParseJson(R"({"targets": [{"name": "x"}]})");
  ASSERT_TRUE(incomplete.ok());
  EXPECT_FALSE(EvaluateTargets(*incomplete, runs, false).ok());
}

// A result set written by the old serializer reads back into the same
// Markdown tables and the same gate (against today's bench/targets.json).
TEST(ReportTest, ReadsACommittedResultFile) {
  const std::string dir = SHMLANE_BENCH_SOURCE_DIR;
  absl::StatusOr<Json> doc = ParseJson(ReadFile(dir + "/results/vm-20261127-102055.json"));
  ASSERT_TRUE(doc.ok()) << doc.status();
  ASSERT_TRUE((*doc)["runs"].is_array());
  const std::vector<Json> runs((*doc)["runs"].begin(), (*doc)["runs"].end());
  ASSERT_EQ(runs.size(), 40u);
  EXPECT_EQ(StringAt(*doc, "method.machine.host"), "vm");
  EXPECT_EQ(NumberAt(*doc, "method.machine.cpus"), 2);

  const std::string md = ReadFile(dir + "/results/vm-20261127-102055.md");
  const std::string tables = MarkdownTables(runs);
  ASSERT_FALSE(tables.empty());
  EXPECT_NE(md.find(tables), std::string::npos) << tables;

  absl::StatusOr<Json> targets = ParseJson(ReadFile(dir + "/targets.json"));
  ASSERT_TRUE(targets.ok()) << targets.status();
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, runs, false);
  ASSERT_TRUE(checks.ok()) << checks.status();
  EXPECT_EQ(GateJson(*checks), (*doc)["gate"]);
}

}  // namespace
}  // namespace shmlane::bench
