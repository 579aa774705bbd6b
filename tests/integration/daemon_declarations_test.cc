// shmlaned --declare FILE against a real daemon: applied at start, after a
// ConfigMap-style symlink swap, after an edit in place, on SIGHUP; changes
// that must wait for a detach wait and then happen; dropped objects are
// removed across a restart; API-made objects are left alone; a bad file is
// refused at start and ignored later.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

void WriteFile(const std::string& path, const std::string& text, mode_t mode = 0644) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
  }
  ASSERT_EQ(::chmod(tmp.c_str(), mode), 0);
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0);
}

// Waits up to `timeout` for `done`; false if it never held.
bool Eventually(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(8)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return done();
}

std::string Channel(const std::string& name, uint64_t ring_bytes = 65536) {
  return absl::StrCat("channels { spec { name: \"", name, "\" ring_bytes: ", ring_bytes, " } }\n");
}
std::string Grant(const std::string& channel, int uid, const std::string& role) {
  return absl::StrCat("grants { channel: \"", channel, "\" grant { principal { uid: ", uid,
                      " } role: GRANT_ROLE_", role, " } }\n");
}

bool HasChannel(const TestDaemon& d, const std::string& name) {
  return d.Ctl({"channels", "get", name}).exit_code == 0;
}
std::string ChannelJson(const TestDaemon& d, const std::string& name) {
  return d.Ctl({"--json", "channels", "get", name}).out;
}
std::string GrantsJson(const TestDaemon& d, const std::string& name) {
  return d.Ctl({"--json", "grants", "list", name}).out;
}

// A kubelet ConfigMap volume: DIR/declare.textproto -> ..data/declare.textproto,
// ..data -> ..<version>; an update writes a new version directory and
// renames a new ..data symlink over the old one.
class ConfigMapDir {
 public:
  explicit ConfigMapDir(std::string dir) : dir_(std::move(dir)) {
    ::mkdir(dir_.c_str(), 0755);
    EXPECT_EQ(::symlink("..data/declare.textproto", path().c_str()), 0);
  }
  std::string path() const { return dir_ + "/declare.textproto"; }
  void Publish(const std::string& text) {
    const std::string version = absl::StrCat("..v", ++versions_);
    ASSERT_EQ(::mkdir((dir_ + "/" + version).c_str(), 0755), 0);
    WriteFile(dir_ + "/" + version + "/declare.textproto", text);
    const std::string tmp = dir_ + "/..data_tmp";
    ASSERT_EQ(::symlink(version.c_str(), tmp.c_str()), 0);
    ASSERT_EQ(::rename(tmp.c_str(), (dir_ + "/..data").c_str()), 0);
  }

 private:
  std::string dir_;
  int versions_ = 0;
};

TEST(DaemonDeclarationsTest, BadFilesAreRefusedAtStartNamingTheLine) {
  TestDaemon d;
  const std::string file = d.base_dir() + "/declare.textproto";
  WriteFile(file, Channel("ok") + "channels { spec { name: \"Bad Name\" } }\n");
  absl::StatusOr<CommandResult> r = d.RunExpectingExit({"--declare", file});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, file + ":2: channels[1]")) << r->err;

  WriteFile(file, "channels { spec { nme: \"x\" } }\n");
  r = d.RunExpectingExit({"--declare", file});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, file + ":1:")) << r->err;

  WriteFile(file, Channel("a") + Channel("a"));
  r = d.RunExpectingExit({"--declare", file});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(absl::StrContains(r->err, "declared twice")) << r->err;

  // Declarations grant access: a file others may write is refused.
  WriteFile(file, Channel("a"), 0666);
  r = d.RunExpectingExit({"--declare", file});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "chmod go-w")) << r->err;

  r = d.RunExpectingExit({"--declare", d.base_dir() + "/missing.textproto"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "missing.textproto")) << r->err;
}

TEST(DaemonDeclarationsTest, ConfigMapSwapEditAndSighupReconcile) {
  TestDaemon d;
  ConfigMapDir cm(d.base_dir() + "/config");
  cm.Publish(Channel("telemetry") + Channel("old") + Grant("telemetry", 10001, "PRODUCE") +
             "quotas { uid: 10001 limits { max_attachments: 7 } }\n");
  ASSERT_TRUE(d.Start({"--declare", cm.path()}).ok()) << d.stderr_text();
  EXPECT_TRUE(absl::StrContains(d.stdout_text(), "1 quotas")) << d.stdout_text();
  EXPECT_TRUE(HasChannel(d, "telemetry"));
  EXPECT_TRUE(HasChannel(d, "old"));
  EXPECT_TRUE(absl::StrContains(GrantsJson(d, "telemetry"), "\"uid\": 10001"));
  EXPECT_TRUE(absl::StrContains(d.Ctl({"--json", "quota", "get", "--uid", "10001"}).out,
                                "\"max_attachments\": 7"));
  // Made through the API, never declared: the declarations leave it alone.
  ASSERT_EQ(d.Ctl({"channels", "create", "manual"}).exit_code, 0);

  // The kubelet's update: a new version directory and a ..data swap.
  cm.Publish(Channel("telemetry", 131072) + Channel("fresh") +
             Grant("telemetry", 10002, "CONSUME"));
  ASSERT_TRUE(Eventually([&] { return HasChannel(d, "fresh") && !HasChannel(d, "old"); }))
      << d.stderr_text();
  EXPECT_TRUE(Eventually([&] {
    return absl::StrContains(ChannelJson(d, "telemetry"), "\"ring_bytes\": \"131072\"");
  })) << d.stderr_text();
  const std::string grants = GrantsJson(d, "telemetry");
  EXPECT_TRUE(absl::StrContains(grants, "\"uid\": 10002")) << grants;
  EXPECT_FALSE(absl::StrContains(grants, "\"uid\": 10001")) << grants;
  EXPECT_TRUE(absl::StrContains(d.Ctl({"--json", "quota", "get", "--uid", "10001"}).out,
                                "\"is_default\": true"));
  EXPECT_TRUE(HasChannel(d, "manual"));
  const std::string log = d.stderr_text();
  EXPECT_TRUE(absl::StrContains(log, "created channel \"fresh\"")) << log;
  EXPECT_TRUE(absl::StrContains(log, "deleted channel \"old\" (dropped from the declarations)"))
      << log;
  EXPECT_TRUE(absl::StrContains(log, "updated channel \"telemetry\": ring_bytes 65536 -> 131072"))
      << log;

  // A broken update is reported and ignored; the last good state stays.
  cm.Publish("channels { spec { name: \"x\" ring_bytes: oops } }\n");
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(d.stderr_text(), "ignoring"); }))
      << d.stderr_text();
  EXPECT_TRUE(HasChannel(d, "fresh"));
  EXPECT_TRUE(HasChannel(d, "telemetry"));

  // Fixed: applied again.
  cm.Publish(Channel("telemetry", 131072) + Channel("fresh") +
             Grant("telemetry", 10002, "CONSUME"));
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(d.stderr_text(), "is valid again"); }))
      << d.stderr_text();
  // A declared grant removed through the API comes back on SIGHUP.
  ASSERT_EQ(
      d.Ctl({"grants", "remove", "telemetry", "--uid", "10002", "--role", "consume"}).exit_code, 0);
  ASSERT_EQ(::kill(d.pid(), SIGHUP), 0);
  EXPECT_TRUE(Eventually([&] {
    return absl::StrContains(GrantsJson(d, "telemetry"), "\"uid\": 10002");
  })) << d.stderr_text();
  EXPECT_TRUE(absl::StrContains(d.stderr_text(), "SIGHUP: re-reading")) << d.stderr_text();
  // Every change is audited with the daemon as the caller.
  std::ifstream audit(d.runtime_dir() + "/audit.log");
  const std::string audited((std::istreambuf_iterator<char>(audit)), {});
  EXPECT_TRUE(absl::StrContains(audited, "\"method\":\"DeclareChannel\",\"channel\":\"fresh\""))
      << audited;
  EXPECT_TRUE(absl::StrContains(audited, "DeclareDeleteChannel")) << audited;
  absl::StatusOr<int> stopped = d.Stop();
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, 0) << d.stderr_text();
}

TEST(DaemonDeclarationsTest, SighupAppliesAnEditTheWatchCannotSee) {
  TestDaemon d;
  // The declared path is a symlink into a directory the daemon does not
  // watch, so an edit there is seen only on SIGHUP (or the 10 s resync).
  const std::string real_dir = d.base_dir() + "/real";
  const std::string link_dir = d.base_dir() + "/link";
  ASSERT_EQ(::mkdir(real_dir.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(link_dir.c_str(), 0755), 0);
  WriteFile(real_dir + "/d.textproto", Channel("one"));
  ASSERT_EQ(::symlink((real_dir + "/d.textproto").c_str(), (link_dir + "/d.textproto").c_str()), 0);
  ASSERT_TRUE(d.Start({"--declare", link_dir + "/d.textproto"}).ok()) << d.stderr_text();
  ASSERT_TRUE(HasChannel(d, "one"));
  WriteFile(real_dir + "/d.textproto", Channel("one") + Channel("two"));
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(HasChannel(d, "two")) << "the watch was not expected to see this edit";
  ASSERT_EQ(::kill(d.pid(), SIGHUP), 0);
  EXPECT_TRUE(Eventually([&] { return HasChannel(d, "two"); }, absl::Seconds(3)))
      << d.stderr_text();
  // SIGHUP does not stop the daemon.
  EXPECT_EQ(d.Ctl({"health"}).exit_code, 0);
}

TEST(DaemonDeclarationsTest, ChangesWaitForAttachedProcessesThenApply) {
  TestDaemon d;
  const std::string file = d.base_dir() + "/declare.textproto";
  WriteFile(file, Channel("busy") + Channel("going") + Grant("busy", 0, "PRODUCE") +
                      Grant("going", 0, "PRODUCE"));
  ASSERT_TRUE(d.Start({"--declare", file}).ok()) << d.stderr_text();
  absl::StatusOr<Attached> producer =
      AttachTo(d.attach_socket(), "busy", shmlane::v1::ROLE_PRODUCER, "p1");
  ASSERT_TRUE(producer.ok()) << producer.status();
  ASSERT_EQ(producer->reply.message.attach_reply().code(), 0)
      << producer->reply.message.attach_reply().message();
  absl::StatusOr<Attached> other =
      AttachTo(d.attach_socket(), "going", shmlane::v1::ROLE_PRODUCER, "p2");
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_EQ(other->reply.message.attach_reply().code(), 0);

  // Edited in place (same inode): inotify's IN_CLOSE_WRITE.
  {
    std::ofstream out(file, std::ios::trunc);
    out << Channel("busy", 262144) << Grant("busy", 0, "PRODUCE");
  }
  ASSERT_TRUE(Eventually([&] {
    return absl::StrContains(d.stderr_text(), "channel \"busy\": cannot change ring_bytes") &&
           absl::StrContains(d.stderr_text(), "\"going\" was dropped from the declarations");
  })) << d.stderr_text();
  // Nothing was closed under the attached producers.
  EXPECT_TRUE(absl::StrContains(ChannelJson(d, "busy"), "\"ring_bytes\": \"65536\""));
  EXPECT_TRUE(HasChannel(d, "going"));
  auto still_open = producer->conn.Receive(absl::Milliseconds(200));
  EXPECT_TRUE(absl::IsDeadlineExceeded(still_open.status())) << still_open.status();
  // Reported once, not on every retry.
  absl::SleepFor(absl::Milliseconds(2500));
  const std::string log = d.stderr_text();
  size_t count = 0;
  for (size_t at = log.find("cannot change ring_bytes"); at != std::string::npos;
       at = log.find("cannot change ring_bytes", at + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 1u) << log;

  // Once they detach, the waiting changes happen (retried every second).
  producer->conn.Close();
  other->conn.Close();
  EXPECT_TRUE(Eventually([&] {
    return absl::StrContains(ChannelJson(d, "busy"), "\"ring_bytes\": \"262144\"") &&
           !HasChannel(d, "going");
  })) << d.stderr_text();
  EXPECT_TRUE(absl::StrContains(GrantsJson(d, "busy"), "GRANT_ROLE_PRODUCE"))
      << "the grants of a re-specified channel are kept";
}

TEST(DaemonDeclarationsTest, WhatWasDroppedWhileStoppedIsRemovedAtStart) {
  TestDaemon d;
  const std::string file = d.base_dir() + "/declare.textproto";
  WriteFile(file, Channel("keep") + Channel("drop") + Grant("keep", 4242, "CONSUME"));
  ASSERT_TRUE(d.Start({"--declare", file}).ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "manual"}).exit_code, 0);
  absl::StatusOr<int> stopped = d.Stop();
  ASSERT_TRUE(stopped.ok()) << stopped.status();

  WriteFile(file, Channel("keep"));
  ASSERT_TRUE(d.Start({"--declare", file}).ok()) << d.stderr_text();
  EXPECT_TRUE(HasChannel(d, "keep"));
  EXPECT_FALSE(HasChannel(d, "drop")) << d.stderr_text();
  EXPECT_FALSE(absl::StrContains(GrantsJson(d, "keep"), "4242")) << d.stderr_text();
  EXPECT_TRUE(HasChannel(d, "manual")) << "an API-made channel must survive";
  stopped = d.Stop();
  ASSERT_TRUE(stopped.ok()) << stopped.status();

  // Without --declare the daemon keeps what it has (nothing is undeclared).
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  EXPECT_TRUE(HasChannel(d, "keep"));
}

}  // namespace
}  // namespace shmlane::testing
