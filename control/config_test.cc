#include "control/config.h"

#include <stdlib.h>

#include <fstream>
#include <string>
#include <vector>

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
  const std::string path = ::testing::TempDir() + "/shmlaned.conf";
  {
    std::ofstream f(path);
    f << "# comment\nruntime-dir = /tmp/a\nhandshake-timeout = 2s\nper-lane-metrics = true\n";
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

TEST(ConfigTest, HelpMentionsEveryFlag) {
  const std::string help = HelpText();
  for (const char* flag : {"--runtime-dir", "--metrics-listen", "--listen", "--tls-cert",
                           "--tls-key", "--tls-client-ca", "--admin-group", "--attach-group",
                           "--handshake-timeout", "--per-lane-metrics", "--version", "--config"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace shmlane::control
