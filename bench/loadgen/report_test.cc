// The result JSON: numbers as the files store them, the writer (RunJson,
// GateJson) against the reader (ParseJson, dotted paths, EvaluateTargets,
// MarkdownTables), and a committed result file read back exactly as its
// Markdown and gate were written.
#include "bench/loadgen/report.h"

#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/result_json.h"
#include "gtest/gtest.h"

namespace shmlane::bench {
namespace {

// The quick-suite result set committed under bench/results/.
constexpr char kCommittedResult[] = "vm-20261201-205539";

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
  EXPECT_EQ(NumberAt(shm, "batch"), 1);
  EXPECT_EQ(StringAt(shm, "touch"), "read");
  // 1.97 CPU-s of clients over 123.46 M round trips.
  EXPECT_NEAR(NumberAt(shm, "cpu_s_per_mframe.clients"), 1.974671234 / 123.456789, 1e-6);

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

RunResult StreamRun(TransportKind transport, int batch, double frames_per_s,
                    Touch touch = Touch::kRead) {
  RunResult r;
  r.spec.transport = transport;
  r.spec.pattern = Pattern::kStream;
  r.spec.batch = batch;
  r.spec.touch = touch;
  r.window_s = 2;
  r.frames = static_cast<uint64_t>(frames_per_s * 2);
  r.frames_per_s = frames_per_s;
  r.total_sent = r.total_received = r.frames;
  r.client_flushes = r.frames / static_cast<uint64_t>(batch);
  r.resources.clients.user_ns = 1'000'000'000;
  r.resources.server.sys_ns = 500'000'000;
  return r;
}

// The gate and the tables compare shm with the best kernel transport over
// every batch setting, name both sides' batching, and keep counting-only
// runs apart.
TEST(ReportTest, BestKernelBaselineIsTheBestBatchOfUdsPipeTcp) {
  std::vector<Json> runs;
  runs.push_back(RunJson(StreamRun(TransportKind::kShm, 1, 30e6)));
  runs.push_back(RunJson(StreamRun(TransportKind::kShm, 64, 40e6)));
  runs.push_back(RunJson(StreamRun(TransportKind::kUds, 1, 0.5e6)));
  runs.push_back(RunJson(StreamRun(TransportKind::kUds, 64, 10e6)));
  runs.push_back(RunJson(StreamRun(TransportKind::kPipe, 64, 12e6)));
  runs.push_back(RunJson(StreamRun(TransportKind::kGrpc, 64, 50e6)));  // not a kernel transport
  runs.push_back(RunJson(StreamRun(TransportKind::kShm, 64, 90e6, Touch::kNone)));
  EXPECT_EQ(NumberAt(runs[1], "frames_per_flush"), 64);
  EXPECT_EQ(NumberAt(runs[1], "cpu_s_per_mframe.server"), 0.5 / 80);

  absl::StatusOr<Json> targets = ParseJson(R"({"targets": [
      {"name": "best", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "denominator": "best-kernel", "min_ratio": 3},
      {"name": "b1", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "numerator_batch": 1,
       "denominator": "best-kernel", "min_ratio": 3},
      {"name": "naive", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "denominator": "uds", "denominator_batch": 1,
       "min_ratio": 50},
      {"name": "ceiling", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "touch": "none", "numerator": "shm", "denominator": "uds",
       "min_ratio": 1}]})");
  ASSERT_TRUE(targets.ok()) << targets.status();
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, runs, false);
  ASSERT_TRUE(checks.ok()) << checks.status();
  ASSERT_EQ(checks->size(), 4u);
  EXPECT_DOUBLE_EQ((*checks)[0].ratio, 40.0 / 12.0);
  EXPECT_EQ((*checks)[0].numerator_run, "shm b64");
  EXPECT_EQ((*checks)[0].denominator_run, "pipe b64");
  EXPECT_TRUE((*checks)[0].passed);
  EXPECT_DOUBLE_EQ((*checks)[1].ratio, 30.0 / 12.0);
  EXPECT_FALSE((*checks)[1].passed);
  EXPECT_DOUBLE_EQ((*checks)[2].ratio, 80.0);  // shm b64 / uds b1: the old headline
  EXPECT_FALSE((*checks)[3].found);            // no counting-only uds run
  EXPECT_EQ(DumpJson(GateJson(*checks)[0]),
            R"({"name":"best","result":"pass","ratio":3.333,"runs":"shm b64 / pipe b64",)"
            R"("min_ratio":3})");

  const std::string md = MarkdownTables(runs);
  // The batch-64 row: shm 40M against the best kernel run (pipe b64, 12M)
  // and the naive one (uds b1, 500k), with both sides' CPU per 10^6 frames.
  EXPECT_NE(md.find("| 64 | 1 | 64 | 40.00M | 10.00M | 12.00M | 50.00M | pipe b64: 12.00M | 3.33x "
                    "| uds b1: 500.0k | 80.00x | 0.01 / 0.01 | 0.04 / 0.02 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("counting-only server"), std::string::npos) << md;
  EXPECT_NE(md.find("0.01 / 0.01 x64.0"), std::string::npos) << md;
}

RunResult FanoutRun(TransportKind transport, uint32_t frame, int subscribers,
                    double deliveries_per_s, uint64_t copied_per_frame) {
  RunResult r;
  r.spec.transport = transport;
  r.spec.pattern = Pattern::kFanout;
  r.spec.clients = subscribers;
  r.spec.frame_bytes = frame;
  r.spec.batch = 64;
  r.spec.wait = DefaultWait(transport);
  r.window_s = 1;
  r.frames = static_cast<uint64_t>(deliveries_per_s);
  r.frames_per_s = deliveries_per_s;
  r.latency = std::make_unique<Histogram>();
  r.latency->Record(1000);
  FanoutResult& f = r.fanout;
  f.subscribers = subscribers;
  f.total_published = 1000;
  f.published_frames = 800;
  f.published_per_s = deliveries_per_s / subscribers;
  f.per_subscriber_frames_per_s = deliveries_per_s / subscribers;
  f.min_subscriber_frames_per_s = deliveries_per_s / subscribers;
  f.publisher_copied_bytes = 1000 * copied_per_frame;
  f.publisher_io_written = transport == TransportKind::kShm ? 0 : 1000 * copied_per_frame;
  f.subscribers_io_read = transport == TransportKind::kShm ? 0 : 1000 * copied_per_frame;
  r.resources.server.user_ns = 400'000'000;
  r.resources.clients.user_ns = 2'000'000'000;
  return r;
}

// Fanout runs carry their own object, fold repeats into medians, and get a
// table with shm over the best kernel transport and over uds, and the bytes
// the publisher copied per frame.
TEST(ReportTest, FanoutReportsMediansRatiosAndCopies) {
  std::vector<Json> runs;
  for (double v : {20e6, 10e6, 30e6}) {
    runs.push_back(RunJson(FanoutRun(TransportKind::kShm, 64, 8, v, 64)));
  }
  for (double v : {1e6, 2e6, 0.5e6}) {
    runs.push_back(RunJson(FanoutRun(TransportKind::kUds, 64, 8, v, 8 * 68)));
  }
  runs.push_back(RunJson(FanoutRun(TransportKind::kPipe, 64, 8, 0.8e6, 8 * 68)));
  const Json& shm = runs[0];
  EXPECT_EQ(StringAt(shm, "latency_kind"), "one_way_from_send_sampled");
  EXPECT_EQ(NumberAt(shm, "fanout.subscribers"), 8);
  EXPECT_EQ(NumberAt(shm, "fanout.publisher_copied_bytes_per_frame"), 64);
  EXPECT_EQ(NumberAt(shm, "fanout.publisher_copies_per_frame"), 1);
  EXPECT_EQ(NumberAt(runs[3], "fanout.publisher_copies_per_frame"), 8.5);
  EXPECT_EQ(NumberAt(shm, "fanout.delivered_bytes_per_frame"), 512);
  EXPECT_EQ(NumberAt(shm, "fanout.per_subscriber_frames_per_s"), 2.5e6);
  EXPECT_EQ(NumberAt(shm, "fanout.publisher_cpu_s_per_mframe"), 0.4 / 800e-6);
  EXPECT_EQ(NumberAt(shm, "fanout.subscribers_cpu_s_per_mdelivery"), 2 / 20.0);

  const std::vector<Json> medians = FanoutMedians(runs);
  ASSERT_EQ(medians.size(), 3u);
  EXPECT_EQ(NumberAt(medians[0], "frames_per_s"), 20e6);
  EXPECT_EQ(NumberAt(medians[0], "repeats"), 3);
  EXPECT_EQ(NumberAt(medians[1], "frames_per_s"), 1e6);

  const std::string md = FanoutTables(runs);
  // shm median 20M [10M, 30M] over uds median 1M: 20x; the best kernel is uds.
  EXPECT_NE(md.find("| 64 | 8 | 20.00M [10.00M, 30.00M] b64 | 1.00M [500.0k, 2.00M] b64 | "
                    "800.0k b64 | uds: 1.00M | 20.00x | 20.00x |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| 64 / 544 |"), std::string::npos) << md;
  EXPECT_NE(MarkdownTables(runs).find(md), std::string::npos);
  EXPECT_EQ(FanoutTables({RunJson(StreamRun(TransportKind::kShm, 1, 1e6))}), "");

  // A fanout target is checked in the fanout suite only.
  absl::StatusOr<Json> targets = ParseJson(R"({"targets": [
      {"name": "f", "suite": "fanout", "metric": "frames_per_s", "pattern": "fanout",
       "clients": 8, "frame_bytes": 64, "numerator": "shm", "denominator": "uds",
       "min_ratio": 20}]})");
  ASSERT_TRUE(targets.ok());
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, medians, "fanout");
  ASSERT_TRUE(checks.ok()) << checks.status();
  ASSERT_EQ(checks->size(), 1u);
  EXPECT_DOUBLE_EQ((*checks)[0].ratio, 20.0);
  EXPECT_TRUE((*checks)[0].passed);
  checks = EvaluateTargets(*targets, medians, "quick");
  ASSERT_TRUE(checks.ok());
  EXPECT_TRUE(checks->empty());
}

// Runs from files written before batching and touch existed read as what
// they were: one write per frame, a counting-only server (a ceiling).
TEST(ReportTest, RunsWithoutBatchOrTouchAreUnbatchedCeilings) {
  absl::StatusOr<Json> doc = ParseJson(R"({"runs": [
      {"transport": "shm", "pattern": "stream", "clients": 1, "frame_bytes": 64,
       "frames": 50000000, "frames_per_s": 25000000},
      {"transport": "uds", "pattern": "stream", "clients": 1, "frame_bytes": 64,
       "frames": 1000000, "frames_per_s": 500000}]})");
  ASSERT_TRUE(doc.ok()) << doc.status();
  const std::vector<Json> runs((*doc)["runs"].begin(), (*doc)["runs"].end());
  const std::string md = MarkdownTables(runs);
  EXPECT_NE(md.find("counting-only server"), std::string::npos) << md;
  EXPECT_NE(md.find("| 64 | 1 | 1 | 25.00M | 500.0k | uds b1: 500.0k | 50.00x |"),
            std::string::npos)
      << md;
  // A target on the reading server does not match them.
  absl::StatusOr<Json> targets = ParseJson(R"({"targets": [
      {"name": "t", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "denominator": "best-kernel", "min_ratio": 3}]})");
  ASSERT_TRUE(targets.ok());
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, runs, false);
  ASSERT_TRUE(checks.ok());
  EXPECT_FALSE((*checks)[0].found);
}

// The committed quick-suite result reads back into exactly its Markdown
// tables and its gate (against today's bench/targets.json).
TEST(ReportTest, ReadsTheCommittedResultFile) {
  const std::string dir = SHMLANE_BENCH_SOURCE_DIR;
  const std::string base = dir + "/results/" + kCommittedResult;
  absl::StatusOr<Json> doc = ParseJson(ReadFile(base + ".json"));
  ASSERT_TRUE(doc.ok()) << doc.status();
  ASSERT_TRUE((*doc)["runs"].is_array());
  const std::vector<Json> runs((*doc)["runs"].begin(), (*doc)["runs"].end());
  ASSERT_GE(runs.size(), 70u);
  EXPECT_EQ(NumberAt(*doc, "method.machine.cpus"), 2);
  for (const Json& run : runs) {
    EXPECT_EQ(StringAt(run, "touch"), "read");
    EXPECT_FALSE(std::isnan(NumberAt(run, "cpu_s_per_mframe.clients")));
  }

  const std::string md = ReadFile(base + ".md");
  const std::string tables = MarkdownTables(runs);
  ASSERT_FALSE(tables.empty());
  EXPECT_NE(md.find(tables), std::string::npos) << tables;

  absl::StatusOr<Json> targets = ParseJson(ReadFile(dir + "/targets.json"));
  ASSERT_TRUE(targets.ok()) << targets.status();
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, runs, false);
  ASSERT_TRUE(checks.ok()) << checks.status();
  // Today's targets reproduce the committed run's ratios and verdicts (the
  // thresholds themselves may have moved since; min_ratio is not compared).
  Json now = GateJson(*checks);
  Json then = (*doc)["gate"];
  ASSERT_EQ(now.size(), then.size());
  for (size_t i = 0; i < now.size(); ++i) {
    now[i].erase("min_ratio");
    then[i].erase("min_ratio");
  }
  EXPECT_EQ(now, then);
}

}  // namespace
}  // namespace shmlane::bench

namespace shmlane::bench {
namespace {

// The waiting suite's gate: targets marked "suite": "waiting" are checked
// only there (and only they are), runs are selected by wait, rate and CPU
// limit, CPU and latency metrics are lower-is-better, and MedianRuns folds
// repeats into their medians.
TEST(WaitingGateTest, SelectsByWaitRateAndLimitOnMedians) {
  auto run = [](const char* transport, const char* wait, const char* pref, double rate,
                double limit, double p99, double cpu) {
    Json v = Json::object();
    v["transport"] = transport;
    v["pattern"] = "openloop";
    v["clients"] = 1;
    v["frame_bytes"] = 64;
    v["batch"] = 1;
    v["touch"] = "read";
    v["wait"] = wait;
    if (pref[0] != '\0') v["wait_preference"] = pref;
    v["rate"] = rate;
    v["cpu_limit"] = limit;
    v["latency_ns"] = Json::object();
    v["latency_ns"]["p99"] = p99;
    v["latency_ns"]["p50"] = p99 / 2;
    v["server_cpu_s_per_mframe"] = cpu;
    v["frames_per_s"] = rate;
    return v;
  };
  std::vector<Json> runs;
  for (double p99 : {100.0, 300.0, 200.0}) {  // median 200
    runs.push_back(run("shm", "balanced", "balanced", 20000, 1, p99, 3));
  }
  runs.push_back(run("shm", "adaptive", "latency", 20000, 1, 50, 30));  // other wait: ignored
  runs.push_back(run("shm", "balanced", "balanced", 20000, 0, 10, 1));  // other limit: ignored
  runs.push_back(run("uds", "park", "", 20000, 1, 400, 2));
  runs.push_back(run("uds", "park", "", 1000, 1, 1, 2));  // other rate: ignored
  const std::vector<Json> medians = MedianRuns(runs);
  ASSERT_EQ(medians.size(), 5u);
  EXPECT_EQ(NumberAt(medians[0], "latency_ns.p99"), 200);
  EXPECT_EQ(NumberAt(medians[0], "repeats"), 3);
  EXPECT_EQ(VariantOf(medians[0]), "shm balanced");
  EXPECT_EQ(VariantOf(medians[3]), "uds park");

  absl::StatusOr<Json> targets = ParseJson(R"({"targets": [
      {"name": "p99", "suite": "waiting", "metric": "latency_ns.p99", "pattern": "openloop",
       "clients": 1, "frame_bytes": 64, "rate": 20000, "cpu_limit": 1,
       "numerator": "uds", "numerator_wait": "park",
       "denominator": "shm", "denominator_wait": "balanced", "min_ratio": 1.5},
      {"name": "cpu", "suite": "waiting", "metric": "server_cpu_s_per_mframe",
       "pattern": "openloop", "clients": 1, "frame_bytes": 64, "rate": 20000, "cpu_limit": 1,
       "numerator": "uds", "numerator_wait": "park",
       "denominator": "shm", "denominator_wait": "balanced", "min_ratio": 0.5},
      {"name": "quick-only", "metric": "frames_per_s", "pattern": "stream", "clients": 1,
       "frame_bytes": 64, "numerator": "shm", "denominator": "uds", "min_ratio": 1}]})");
  ASSERT_TRUE(targets.ok()) << targets.status();
  absl::StatusOr<std::vector<GateCheck>> checks = EvaluateTargets(*targets, medians, "waiting");
  ASSERT_TRUE(checks.ok()) << checks.status();
  ASSERT_EQ(checks->size(), 2u) << "only the waiting targets";
  EXPECT_TRUE((*checks)[0].found);
  EXPECT_DOUBLE_EQ((*checks)[0].ratio, 2.0);  // 400 / median 200
  EXPECT_TRUE((*checks)[0].passed);
  EXPECT_EQ((*checks)[0].numerator_run, "uds park");
  EXPECT_EQ((*checks)[0].denominator_run, "shm balanced");
  EXPECT_NEAR((*checks)[1].ratio, 2.0 / 3.0, 1e-9);
  EXPECT_TRUE((*checks)[1].passed);
  // The quick gate never sees the waiting targets.
  absl::StatusOr<std::vector<GateCheck>> quick = EvaluateTargets(*targets, medians, "quick");
  ASSERT_TRUE(quick.ok());
  ASSERT_EQ(quick->size(), 1u);
  EXPECT_EQ((*quick)[0].name, "quick-only");
}

}  // namespace
}  // namespace shmlane::bench
