// shmlaned as an operator sees it: flags, runtime-directory safety, the lock,
// persistence across a crash, shutdown, the CLI, and /metrics.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataplane/doorbell.h"
#include "dataplane/lane.h"
#include "dataplane/segment.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

namespace v1 = ::shmlane::v1;

TEST(DaemonLifecycleTest, HelpDocumentsEveryFlagAndVersionPrints) {
  TestDaemon d;
  auto help = d.RunExpectingExit({"--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_EQ(help->exit_code, 0);
  for (const char* flag : {"--runtime-dir", "--metrics-listen", "--listen", "--tls-cert",
                           "--tls-key", "--tls-client-ca", "--admin-group", "--attach-group",
                           "--handshake-timeout", "--per-lane-metrics", "--version", "--config"}) {
    EXPECT_TRUE(absl::StrContains(help->out, flag)) << flag;
  }
  auto version = d.RunExpectingExit({"--version"});
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(version->exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(version->out, "shmlaned ")) << version->out;
  auto bad = d.RunExpectingExit({"--no-such-flag"});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad->err, "unknown flag --no-such-flag")) << bad->err;
}

TEST(DaemonLifecycleTest, ConfigFileInTextFormatOrJson) {
  for (const char* ext : {"textproto", "json"}) {
    TestDaemon d;
    const std::string state = d.base_dir() + "/custom.state";
    const std::string path = absl::StrCat(d.base_dir(), "/shmlaned.", ext);
    {
      std::ofstream f(path);
      if (std::string(ext) == "json") {
        f << "{\n  \"stateFile\": \"" << state << "\",\n  \"perLaneMetrics\": true\n}\n";
      } else {
        f << "# test\nstate_file: \"" << state << "\"\nper_lane_metrics: true\n";
      }
    }
    ASSERT_TRUE(d.Start({"--config", path}).ok()) << ext << ": " << d.stderr_text();
    EXPECT_TRUE(absl::StrContains(d.stdout_text(), "state:    " + state)) << d.stdout_text();
    ASSERT_EQ(d.Ctl({"channels", "create", "c1"}).exit_code, 0);
    ASSERT_TRUE(d.Stop().ok());
    struct stat st {};
    EXPECT_EQ(::stat(state.c_str(), &st), 0)
        << ext << ": the configured state file was not written";
  }
}

TEST(DaemonLifecycleTest, BadConfigFileExitsTwoNamingFileLineAndField) {
  TestDaemon d;
  const std::string path = d.base_dir() + "/bad.textproto";
  std::ofstream(path) << "metrics_listen: \"none\"\n\nmax_connections: 0\n";
  auto bad = d.RunExpectingExit({"--config", path});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad->err, path + ":3: max_connections")) << bad->err;
  const std::string json = d.base_dir() + "/bad.json";
  std::ofstream(json) << "{\n  \"metricsListen\": \"none\",\n  \"maxConections\": 3\n}\n";
  bad = d.RunExpectingExit({"--config", json});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad->err, json + ":3")) << bad->err;
  EXPECT_TRUE(absl::StrContains(bad->err, "maxConections")) << bad->err;
  auto printed = d.RunExpectingExit({"--config", path, "--max-connections", "5", "--print-config"});
  ASSERT_TRUE(printed.ok());
  EXPECT_EQ(printed->exit_code, 0) << printed->err;
  EXPECT_TRUE(absl::StrContains(printed->out, "max_connections: 5")) << printed->out;
}

TEST(DaemonLifecycleTest, CliCreatesChannelAndGrantsAndFilesHaveSafeModes) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult r = d.Ctl(
      {"channels", "create", "telemetry", "--ring-bytes", "64KiB", "--label", "team=robotics"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = d.Ctl({"grants", "add", "telemetry", "--uid", "1234", "--role", "produce"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = d.Ctl({"grants", "add", "telemetry", "--gid", "50", "--role", "consume"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = d.Ctl({"--json", "grants", "list", "telemetry"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\"uid\": 1234")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "GRANT_ROLE_CONSUME")) << r.out;
  r = d.Ctl({"--json", "channels", "get", "telemetry"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\"ring_bytes\": \"65536\"")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "robotics")) << r.out;
  r = d.Ctl({"channels", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "telemetry")) << r.out;
  // Errors: precise code, non-zero exit.
  r = d.Ctl({"channels", "create", "telemetry"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "ALREADY_EXISTS")) << r.err;
  r = d.Ctl({"channels", "create", "x", "--ring-bytes", "1000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "INVALID_ARGUMENT")) << r.err;
  r = d.Ctl({"channels", "get", "missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "NOT_FOUND")) << r.err;
  r = d.Ctl({"channels"});
  EXPECT_EQ(r.exit_code, 2);
  r = d.Ctl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = d.Ctl({"health", "shmlane.v1.AccessService"});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  struct stat st {};
  ASSERT_EQ(::stat(d.runtime_dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((d.runtime_dir() + "/control.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((d.runtime_dir() + "/attach.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  ASSERT_EQ(::stat((d.runtime_dir() + "/shmlaned.lock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((d.runtime_dir() + "/shmlaned.state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(DaemonLifecycleTest, StateSurvivesSigkillAndRestart) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "keep", "--pattern", "request-reply"}).exit_code, 0);
  ASSERT_EQ(d.Ctl({"grants", "add", "keep", "--anyone", "--role", "produce"}).exit_code, 0);
  ASSERT_EQ(d.Ctl({"quota", "set", "--uid", "4242", "--max-channels", "3"}).exit_code, 0);
  auto killed = d.Stop(SIGKILL);
  ASSERT_TRUE(killed.ok());
  // The dead daemon's sockets are still there; the restart must clean them up.
  ASSERT_EQ(::access((d.runtime_dir() + "/attach.sock").c_str(), F_OK), 0);
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult r = d.Ctl({"--json", "channels", "get", "keep"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "CHANNEL_PATTERN_REQUEST_REPLY")) << r.out;
  r = d.Ctl({"--json", "grants", "list", "keep"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\"anyone\": true")) << r.out;
  r = d.Ctl({"--json", "quota", "get", "--uid", "4242"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\"max_channels\": 3")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\"is_default\": false")) << r.out;
  // A fresh attach works on the restarted daemon.
  auto a = AttachTo(d.attach_socket(), "keep", v1::ROLE_CLIENT);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->reply.message.attach_reply().code(), 0);
}

TEST(DaemonLifecycleTest, RefusesWorldWritableRuntimeDir) {
  TestDaemon d;
  const std::string dir = d.base_dir() + "/lax";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  auto r = d.RunExpectingExit({"--runtime-dir", dir, "--metrics-listen", "none"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, "group- or world-writable")) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "chmod 0755")) << r->err;
}

TEST(DaemonLifecycleTest, RefusesSymlinkRuntimeDir) {
  TestDaemon d;
  const std::string real = d.base_dir() + "/real";
  const std::string link = d.base_dir() + "/link";
  ASSERT_EQ(::mkdir(real.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(real.c_str(), link.c_str()), 0);
  auto r = d.RunExpectingExit({"--runtime-dir", link, "--metrics-listen", "none"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, "is a symlink")) << r->err;
}

TEST(DaemonLifecycleTest, RefusesRuntimeDirOwnedByAnotherUser) {
  TestDaemon d;
  const std::string dir = d.base_dir() + "/theirs";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  auto r = d.RunExpectingExit({"--runtime-dir", dir, "--metrics-listen", "none"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, "owned by uid 65534")) << r->err;
}

TEST(DaemonLifecycleTest, SecondDaemonOnSameDirIsRefused) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  // Without --replace or --lock-wait: refused at once, the running daemon
  // not signalled (the hand-over is daemon_handover_test's).
  const absl::Time start = absl::Now();
  auto r = d.RunExpectingExit({"--runtime-dir", d.runtime_dir(), "--metrics-listen", "none"});
  ASSERT_TRUE(r.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "refused only after waiting";
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, absl::StrCat("another shmlaned (pid ", d.pid(), ") holds ",
                                                     d.runtime_dir(), "/shmlaned.lock")))
      << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "--replace")) << r->err;
  EXPECT_TRUE(d.running());
  // The first daemon is unaffected.
  EXPECT_EQ(d.Ctl({"channels", "list"}).exit_code, 0);
}

TEST(DaemonLifecycleTest, SigtermSaysGoodbyeAndExitsZeroWithinOneSecond) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "s"}).exit_code, 0);
  auto producer = AttachTo(d.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(producer.ok()) << producer.status();
  ASSERT_EQ(producer->reply.message.attach_reply().code(), 0);
  const absl::Time start = absl::Now();
  auto code = d.Stop(SIGTERM, absl::Seconds(1));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(code.ok()) << "shmlaned did not exit within 1 s";
  EXPECT_EQ(*code, 0);
  EXPECT_LT(took, absl::Seconds(1));
  bool goodbye = false;
  for (int i = 0; i < 4; ++i) {
    auto p = producer->conn.Receive(absl::Milliseconds(500));
    if (!p.ok()) break;
    goodbye |= p->message.has_goodbye();
  }
  EXPECT_TRUE(goodbye);
  EXPECT_NE(::access((d.runtime_dir() + "/attach.sock").c_str(), F_OK), 0);
}

// An open `shmlanectl watch` (one filtered by channel too) gets a last
// DAEMON_STOPPING event at shutdown and ends with exit 0 instead of an
// UNAVAILABLE error, and it does not hold the shutdown up.
TEST(DaemonLifecycleTest, WatchEndsCleanlyAtShutdown) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult all, one;
  std::thread watch_all([&] { all = d.Ctl({"watch"}); });
  std::thread watch_one([&] { one = d.Ctl({"watch", "--channel", "x"}); });
  absl::SleepFor(absl::Milliseconds(500));  // both streams open
  auto code = d.Stop(SIGTERM, absl::Seconds(2));
  watch_all.join();
  watch_one.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  for (const CommandResult* r : {&all, &one}) {
    EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
    EXPECT_TRUE(absl::StrContains(r->out, "daemon-stopping")) << r->out;
  }
  std::printf("%s", d.stderr_text().c_str());
}

TEST(DaemonLifecycleTest, MetricsPassPromtoolAndCountFrames) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "metered", "--ring-bytes", "64KiB"}).exit_code, 0);
  auto producer = AttachTo(d.attach_socket(), "metered", v1::ROLE_PRODUCER, "meter");
  ASSERT_TRUE(producer.ok()) << producer.status();
  const v1::AttachReply& reply = producer->reply.message.attach_reply();
  ASSERT_EQ(reply.code(), 0) << reply.message();
  ASSERT_EQ(reply.lanes_size(), 1);
  auto segment = dataplane::Segment::Map(DupFd(producer->reply, reply.lanes(0).segment_fd_index()),
                                         dataplane::Access::kReadWrite);
  ASSERT_TRUE(segment.ok()) << segment.status();
  auto own = dataplane::Doorbell::Adopt(DupFd(producer->reply, reply.doorbell_fd_index()));
  auto peer =
      dataplane::Doorbell::Adopt(DupFd(producer->reply, reply.lanes(0).peer_doorbell_fd_index()));
  ASSERT_TRUE(own.ok() && peer.ok());
  dataplane::LaneBells bells{std::make_shared<const dataplane::Doorbell>(*std::move(own)),
                             std::make_shared<const dataplane::Doorbell>(*std::move(peer))};
  auto writer = dataplane::Producer::Attach(*std::move(segment), bells);
  ASSERT_TRUE(writer.ok()) << writer.status();
  constexpr int kFrames = 123;
  std::string payload(100, 'x');
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_EQ(writer->TryWrite(std::as_bytes(std::span(payload))), dataplane::WriteResult::kOk);
  }
  auto body = HttpGet(d.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(MetricValue(*body, "shmlane_frames_total{channel=\"metered\",direction=\"sent\"}"),
            kFrames);
  EXPECT_EQ(MetricValue(*body, "shmlane_bytes_total{channel=\"metered\",direction=\"sent\"}"),
            kFrames * 100);
  EXPECT_EQ(MetricValue(*body, "shmlane_ring_capacity_bytes{channel=\"metered\"}"), 65536);
  EXPECT_EQ(MetricValue(*body, "shmlane_attached_clients{channel=\"metered\"}"), 1);
  EXPECT_EQ(MetricValue(*body, "shmlane_attach_total{result=\"ok\"}"), 1);
  EXPECT_TRUE(absl::StrContains(*body, "shmlane_latency_seconds_bucket{channel=\"metered\""));

  const std::string path = d.base_dir() + "/metrics.txt";
  { std::ofstream(path) << *body; }
  CommandResult check = RunCommand({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + path});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // The producer dies: its lane retires, but the counters must not go back.
  writer->Close();
  producer->conn.Close();
  absl::SleepFor(absl::Milliseconds(100));
  body = HttpGet(d.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(MetricValue(*body, "shmlane_frames_total{channel=\"metered\",direction=\"sent\"}"),
            kFrames);
  EXPECT_EQ(MetricValue(*body, "shmlane_attached_clients{channel=\"metered\"}"), 0);
  EXPECT_EQ(MetricValue(*body, "shmlane_peer_deaths_total"), 1);
  CommandResult stats = d.Ctl({"--json", "stats", "metered"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_TRUE(absl::StrContains(stats.out, "\"frames_sent\": \"123\"")) << stats.out;
}

TEST(DaemonLifecycleTest, PerLaneMetricsAreOptIn) {
  TestDaemon d;
  ASSERT_TRUE(d.Start({"--per-lane-metrics"}).ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "c", "--pattern", "request-reply"}).exit_code, 0);
  auto client = AttachTo(d.attach_socket(), "c", v1::ROLE_CLIENT);
  ASSERT_TRUE(client.ok());
  ASSERT_EQ(client->reply.message.attach_reply().code(), 0);
  const uint64_t lane = client->reply.message.attach_reply().lanes(0).lane_id();
  auto body = HttpGet(d.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(MetricValue(*body, absl::StrCat("shmlane_frames_total{channel=\"c\",lane=\"", lane,
                                            "\",direction=\"sent\"}")),
            0);
  EXPECT_EQ(MetricValue(*body, "shmlane_ring_capacity_bytes{channel=\"c\"}"), 2 << 20);
  const std::string path = d.base_dir() + "/metrics.txt";
  { std::ofstream(path) << *body; }
  CommandResult check = RunCommand({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + path});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

}  // namespace
}  // namespace shmlane::testing
