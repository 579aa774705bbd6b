#include "control/config.h"

#include <stdlib.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

TEST(ConfigTest, DefaultsComeFromEnvironment) {
  ::setenv("SHMLANE_RUNTIME_DIR", "/tmp/shmlane-x", 1);
  auto parsed = ParseCommandLine({"shmlaned"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.runtime_dir, "/tmp/shmlane-x");
  EXPECT_EQ(parsed->config.state_file, "/tmp/shmlane-x/shmlaned.state");
  EXPECT_EQ(parsed->config.metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(parsed->config.handshake_timeout, absl::Seconds(5));
  ::unsetenv("SHMLANE_RUNTIME_DIR");
}

TEST(ConfigTest, FlagsOverrideConfigFile) {
  const std::string path = ::testing::TempDir() + "/shmlaned.textproto";
  {
    std::ofstream f(path);
    f << "# comment\nruntime_dir: \"/tmp/a\"\nhandshake_timeout { seconds: 2 }\n"
         "per_lane_metrics: true\n";
  }
  auto parsed = ParseCommandLine({"shmlaned", "--runtime-dir=/tmp/b", "--config", path});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.runtime_dir, "/tmp/b");
  EXPECT_EQ(parsed->config.handshake_timeout, absl::Seconds(2));
  EXPECT_TRUE(parsed->config.per_lane_metrics);
}

TEST(ConfigTest, RejectsUnknownFlagsAndBadValues) {
  EXPECT_FALSE(ParseCommandLine({"shmlaned", "--bogus"}).ok());
  EXPECT_FALSE(ParseCommandLine({"shmlaned", "--handshake-timeout", "soon"}).ok());
  EXPECT_FALSE(ParseCommandLine({"shmlaned", "--tls-cert", "x"}).ok());
}

TEST(ConfigTest, MetricsUnixSocketAndControlConnectionCap) {
  auto parsed =
      ParseCommandLine({"shmlaned", "--metrics-listen", "unix:/run/m.sock", "--metrics-group",
                        "adm", "--max-control-connections-per-uid", "8"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.metrics_listen, "unix:/run/m.sock");
  EXPECT_EQ(parsed->config.metrics_group, "adm");
  EXPECT_EQ(parsed->config.max_control_connections_per_uid, 8u);
  EXPECT_EQ(ParseCommandLine({"shmlaned"})->config.max_control_connections_per_uid, 64u);
  auto relative = ParseCommandLine({"shmlaned", "--metrics-listen", "unix:m.sock"});
  ASSERT_FALSE(relative.ok());
  EXPECT_TRUE(absl::StrContains(relative.status().message(), "unix:/absolute/path"));
  EXPECT_FALSE(ParseCommandLine({"shmlaned", "--metrics-group", "adm"}).ok());
  EXPECT_FALSE(ParseCommandLine({"shmlaned", "--max-control-connections-per-uid", "0"}).ok());
}

TEST(ConfigTest, HelpMentionsEveryFlag) {
  const std::string help = HelpText();
  for (const char* flag : {"--runtime-dir", "--metrics-listen", "--listen", "--tls-cert",
                           "--tls-key", "--tls-client-ca", "--admin-group", "--attach-group",
                           "--handshake-timeout", "--per-lane-metrics", "--version", "--config"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigTest, JsonConfigUsesTheSameSchema) {
  const std::string path = WriteFile("c.json",
                                     "{\n  \"runtimeDir\": \"/tmp/j\",\n"
                                     "  \"handshake_timeout\": \"1.5s\",\n"
                                     "  \"maxConnections\": 7\n}\n");
  auto parsed = ParseCommandLine({"shmlaned", "--config=" + path});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.runtime_dir, "/tmp/j");
  EXPECT_EQ(parsed->config.handshake_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(parsed->config.max_connections, 7u);
  EXPECT_EQ(parsed->config.config_file, path);
}

TEST(ConfigTest, FlagReplacesAFileDurationAsAWhole) {
  const std::string path = WriteFile("d.textproto", "handshake_timeout { seconds: 2 }\n");
  auto parsed = ParseCommandLine({"shmlaned", "--config", path, "--handshake-timeout", "250ms"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.handshake_timeout, absl::Milliseconds(250));
}

TEST(ConfigTest, BothFlagFormsAndSwitchValues) {
  auto parsed = ParseCommandLine({"shmlaned", "--runtime-dir", "/tmp/s", "--max-connections=9",
                                  "--per-lane-metrics", "--metrics-listen=none"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.runtime_dir, "/tmp/s");
  EXPECT_EQ(parsed->config.max_connections, 9u);
  EXPECT_TRUE(parsed->config.per_lane_metrics);
  EXPECT_EQ(parsed->config.metrics_listen, "none");
  parsed = ParseCommandLine({"shmlaned", "--per-lane-metrics=false"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->config.per_lane_metrics);
}

TEST(ConfigTest, BadFilesNameFileLineAndField) {
  std::string path = WriteFile("bad1.textproto", "runtime_dir: \"/tmp/x\"\nbogus_field: 3\n");
  auto parsed = ParseCommandLine({"shmlaned", "--config", path});
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find(path + ":2:"), std::string::npos) << parsed.status();
  EXPECT_NE(parsed.status().message().find("bogus_field"), std::string::npos) << parsed.status();

  path = WriteFile("bad2.textproto", "# limits\n\nmax_connections: 0\n");
  parsed = ParseCommandLine({"shmlaned", "--config", path});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find(path + ":3: max_connections"), std::string::npos)
      << parsed.status();

  path = WriteFile("bad3.json", "{\n  \"runtimeDir\": \"/tmp/x\",\n  \"bogus\": 1\n}\n");
  parsed = ParseCommandLine({"shmlaned", "--config", path});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find(path + ":3"), std::string::npos) << parsed.status();
  EXPECT_NE(parsed.status().message().find("bogus"), std::string::npos) << parsed.status();

  path = WriteFile("bad4.json", "{ \"handshakeTimeout\": \"soon\" }\n");
  parsed = ParseCommandLine({"shmlaned", "--config", path});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find(path), std::string::npos) << parsed.status();

  path = WriteFile("old.conf", "runtime-dir = /tmp/x # c\n");
  parsed = ParseCommandLine({"shmlaned", "--config", path});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("textproto"), std::string::npos) << parsed.status();

  parsed = ParseCommandLine({"shmlaned", "--config", "/nonexistent/x.textproto"});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("/nonexistent/x.textproto"), std::string::npos);
}

TEST(ConfigTest, PrintConfigShowsTheEffectiveValues) {
  const std::string path = WriteFile("p.textproto", "health_listen: \"127.0.0.1:0\"\n");
  auto parsed =
      ParseCommandLine({"shmlaned", "--config", path, "--runtime-dir=/tmp/p", "--print-config"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->print_config);
  const std::string text = FormatConfig(parsed->effective);
  for (const char* want : {"runtime_dir: \"/tmp/p\"", "health_listen: \"127.0.0.1:0\"",
                           "state_file: \"/tmp/p/shmlaned.state\"", "max_connections: 4096",
                           "metrics_listen: \"127.0.0.1:9464\""}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
  // The printed text is itself a valid config.
  const std::string again = WriteFile("again.textproto", text);
  auto reparsed = ParseCommandLine({"shmlaned", "--config", again});
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->config.runtime_dir, "/tmp/p");
}

TEST(ConfigTest, TheShippedExampleParses) {
  auto parsed = ParseCommandLine(
      {"shmlaned", "--config", SHMLANE_SOURCE_DIR "/deploy/config/shmlaned.textproto"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.state_file, "/var/lib/shmlane/shmlaned.state");
  EXPECT_EQ(parsed->config.handshake_timeout, absl::Seconds(5));
}

TEST(ConfigTest, OnStopIsCloseOrKeep) {
  auto parsed = ParseCommandLine({"shmlaned"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->config.close_lanes_on_stop);  // the default
  EXPECT_NE(FormatConfig(parsed->effective).find("on_stop: \"close\""), std::string::npos);
  parsed = ParseCommandLine({"shmlaned", "--on-stop=keep"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->config.close_lanes_on_stop);
  parsed = ParseCommandLine({"shmlaned", "--on-stop", "close"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->config.close_lanes_on_stop);
  const std::string file = WriteFile("keep.textproto", "on_stop: \"keep\"\n");
  parsed = ParseCommandLine({"shmlaned", "--config", file});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->config.close_lanes_on_stop);
  parsed = ParseCommandLine({"shmlaned", "--on-stop=drain"});
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("expected close or keep"), std::string::npos)
      << parsed.status();
  EXPECT_NE(parsed.status().message().find("--on-stop"), std::string::npos) << parsed.status();
}

TEST(ConfigTest, EveryConfigFieldHasAFlag) {
  const std::string help = HelpText();
  const auto* d = shmlane::v1::DaemonConfig::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    std::string flag = "--" + d->field(i)->name();
    for (char& c : flag) c = c == '_' ? '-' : c;
    EXPECT_NE(help.find(flag), std::string::npos) << flag << " is missing from --help";
  }
  EXPECT_NE(help.find("--print-config"), std::string::npos);
}

}  // namespace
}  // namespace shmlane::control

namespace shmlane::control {
namespace {

TEST(ConfigTest, ResumeGrace) {
  auto defaults = ParseCommandLine({"shmlaned"});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->config.resume_grace, absl::Seconds(10));
  auto two = ParseCommandLine({"shmlaned", "--resume-grace=2s"});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->config.resume_grace, absl::Seconds(2));
  auto short_grace = ParseCommandLine({"shmlaned", "--resume-grace=50ms"});
  ASSERT_FALSE(short_grace.ok());
  EXPECT_NE(short_grace.status().message().find("--resume-grace"), std::string::npos)
      << short_grace.status();
}

}  // namespace
}  // namespace shmlane::control

namespace shmlane::control {
namespace {

TEST(ConfigTest, ReplaceAndLockWait) {
  auto defaults = ParseCommandLine({"shmlaned"});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_FALSE(defaults->config.replace);
  EXPECT_EQ(defaults->config.replace_timeout, absl::Seconds(30));
  EXPECT_EQ(defaults->config.lock_wait, absl::ZeroDuration());
  auto replace = ParseCommandLine({"shmlaned", "--replace", "--replace-timeout=5s"});
  ASSERT_TRUE(replace.ok()) << replace.status();
  EXPECT_TRUE(replace->config.replace);
  EXPECT_EQ(replace->config.replace_timeout, absl::Seconds(5));
  auto wait = ParseCommandLine({"shmlaned", "--lock-wait", "2s"});
  ASSERT_TRUE(wait.ok()) << wait.status();
  EXPECT_FALSE(wait->config.replace);
  EXPECT_EQ(wait->config.lock_wait, absl::Seconds(2));
  // One wait per start: --lock-wait with --replace would be ambiguous.
  auto both = ParseCommandLine({"shmlaned", "--replace", "--lock-wait=2s"});
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("--replace-timeout"), std::string::npos) << both.status();
  auto tiny = ParseCommandLine({"shmlaned", "--replace", "--replace-timeout=1ms"});
  ASSERT_FALSE(tiny.ok());
  EXPECT_NE(tiny.status().message().find("--replace-timeout"), std::string::npos) << tiny.status();
  auto long_wait = ParseCommandLine({"shmlaned", "--lock-wait=2h"});
  ASSERT_FALSE(long_wait.ok());
  EXPECT_NE(long_wait.status().message().find("--lock-wait"), std::string::npos)
      << long_wait.status();
  const std::string help = HelpText();
  for (const char* flag : {"--replace", "--replace-timeout", "--lock-wait"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace shmlane::control
