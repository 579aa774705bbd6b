// The command lines of shmlanectl and the four examples, run as real
// processes (posix_spawn, bounded in time): --help exits 0 with a usage that
// names the flags and attaches nothing; an unknown flag is one line on
// stderr naming it; `--runtime-dir DIR` and `--runtime-dir=DIR` are both
// honoured (the error names DIR, never the directory the environment says);
// typed values are checked. No daemon runs: every runtime directory here
// does not exist, so "honoured" shows in the error message.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

struct Result {
  int exit_code = -1;  // the exit status, or 128 + signal
  std::string out;
  std::string err;
};

std::string Describe(const std::vector<std::string>& argv, const Result& r) {
  return absl::StrCat("$ ", absl::StrJoin(argv, " "), "\nexit ", r.exit_code, "\nstdout:\n", r.out,
                      "\nstderr:\n", r.err);
}

// Runs argv with the environment plus `env` ("NAME=value", replacing a
// variable of that name), collects stdout and stderr, and kills it when it
// runs past `timeout` (DeadlineExceeded, with what it printed so far).
absl::StatusOr<Result> RunProcess(const std::vector<std::string>& argv,
                                  const std::vector<std::string>& env = {},
                                  absl::Duration timeout = absl::Seconds(20)) {
  std::vector<std::string> environment = env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view var = *e;
    const absl::string_view name = var.substr(0, var.find('='));
    bool replaced = false;
    for (const std::string& mine : env) replaced |= absl::StartsWith(mine, absl::StrCat(name, "="));
    if (!replaced) environment.emplace_back(var);
  }
  std::vector<char*> c_argv, c_env;
  for (const std::string& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  for (const std::string& e : environment) c_env.push_back(const_cast<char*>(e.c_str()));
  c_argv.push_back(nullptr);
  c_env.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return absl::InternalError(std::strerror(errno));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return absl::InternalError(std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return absl::InternalError(absl::StrCat("posix_spawn ", argv[0], ": ", std::strerror(rc)));
  }

  Result result;
  const absl::Time deadline = absl::Now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    const int wait_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (wait_ms <= 0) {
      timed_out = true;
      break;
    }
    if (::poll(fds, 2, wait_ms) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (const pollfd& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  // Output closed: the process is exiting (or was killed); bound the wait anyway.
  while (true) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return absl::InternalError(std::strerror(errno));
    if (absl::Now() > deadline + absl::Seconds(5)) {
      ::kill(pid, SIGKILL);
      timed_out = true;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("still running after ",
                                                    absl::FormatDuration(timeout), "; killed\n",
                                                    Describe(argv, result)));
  }
  return result;
}

// A binary under test and flags its --help must name.
struct Tool {
  const char* name;
  const char* path;
  std::vector<std::string> flags;
};

const std::vector<Tool>& Tools() {
  static const std::vector<Tool> tools = {
      {"shmlanectl",
       SHMLANECTL_PATH,
       {"--runtime-dir", "--server", "--tls-ca", "--tls-cert", "--tls-key", "--timeout", "--json",
        "channels", "grants", "quota", "stats", "watch", "health", "SHMLANE_RUNTIME_DIR"}},
      {"stream_producer",
       STREAM_PRODUCER_PATH,
       {"--channel", "--frames", "--size", "--name", "--runtime-dir"}},
      {"stream_consumer", STREAM_CONSUMER_PATH, {"--channel", "--idle-exit-s", "--runtime-dir"}},
      {"echo_server", ECHO_SERVER_PATH, {"--channel", "--runtime-dir"}},
      {"echo_client", ECHO_CLIENT_PATH, {"--channel", "--calls", "--size", "--runtime-dir"}},
  };
  return tools;
}

// The arguments that make `tool` talk to the daemon (or attach).
std::vector<std::string> DaemonCommand(const Tool& tool) {
  if (std::string(tool.name) == "shmlanectl") return {"--timeout", "5s", "channels", "list"};
  return {};
}

// A fresh directory with two names under it that do not exist.
class CliFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shmlane-cli-flags-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr) << std::strerror(errno);
    base_ = pattern;
    flag_dir_ = base_ + "/from-the-flag";
    env_dir_ = base_ + "/from-the-env";
  }
  void TearDown() override {
    if (!base_.empty()) ::rmdir(base_.c_str());
  }

  // Every run sees SHMLANE_RUNTIME_DIR pointing nowhere: a tool that attaches
  // or connects when it should not fails visibly, and never finds a real daemon.
  std::vector<std::string> Env() const { return {"SHMLANE_RUNTIME_DIR=" + env_dir_}; }

  static std::vector<std::string> Argv(const Tool& tool, std::vector<std::string> args) {
    args.insert(args.begin(), tool.path);
    return args;
  }

  std::string base_, flag_dir_, env_dir_;
};

void ExpectOneLineNaming(const std::vector<std::string>& argv, const Result& r,
                         const std::string& what) {
  EXPECT_EQ(r.exit_code, 2) << Describe(argv, r);
  EXPECT_EQ(r.out, "") << Describe(argv, r);
  EXPECT_TRUE(absl::EndsWith(r.err, "\n")) << Describe(argv, r);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "want exactly one line\n"
                                                             << Describe(argv, r);
  EXPECT_TRUE(absl::StrContains(r.err, what)) << "want it to name " << what << "\n"
                                              << Describe(argv, r);
}

TEST_F(CliFlagsTest, HelpExitsZeroWithUsageNamingTheFlagsAndAttachesNothing) {
  for (const Tool& tool : Tools()) {
    for (const char* help : {"--help", "-h"}) {
      const std::vector<std::string> argv = Argv(tool, {help});
      absl::StatusOr<Result> r = RunProcess(argv, Env());
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->exit_code, 0) << Describe(argv, *r);
      EXPECT_EQ(r->err, "") << "--help must not attach or connect\n" << Describe(argv, *r);
      EXPECT_TRUE(absl::StrContains(r->out, "Usage:")) << Describe(argv, *r);
      EXPECT_TRUE(absl::StrContains(r->out, tool.name)) << Describe(argv, *r);
      for (const std::string& flag : tool.flags) {
        EXPECT_TRUE(absl::StrContains(r->out, flag))
            << tool.name << " --help does not mention " << flag << "\n"
            << Describe(argv, *r);
      }
    }
  }
}

TEST_F(CliFlagsTest, HelpShowsDefaults) {
  const struct {
    const Tool& tool;
    std::vector<std::string> defaults;
  } cases[] = {{Tools()[0], {"10s"}},
               {Tools()[1], {"demo", "1000000", "64"}},
               {Tools()[2], {"demo"}},
               {Tools()[3], {"echo"}},
               {Tools()[4], {"echo", "10000", "32"}}};
  for (const auto& c : cases) {
    const std::vector<std::string> argv = Argv(c.tool, {"--help"});
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    for (const std::string& d : c.defaults) {
      EXPECT_TRUE(absl::StrContains(r->out, "=" + d)) << "default " << d << " not shown\n"
                                                      << Describe(argv, *r);
    }
  }
}

TEST_F(CliFlagsTest, ShmlanectlSubcommandHelpListsFlagsAndEnumNames) {
  const Tool& ctl = Tools()[0];
  const struct {
    std::vector<std::string> args;
    std::vector<std::string> mentions;
  } cases[] = {
      {{"channels", "--help"}, {"create", "get", "list", "delete"}},
      {{"channels", "create", "--help"},
       {"NAME", "--pattern", "stream|request-reply", "=stream", "--ring-bytes", "SIZE",
        "--max-frame-bytes", "--max-producers", "--backpressure", "block|fail|drop", "=block",
        "--latency-sample-every", "--no-latency-sampling", "--label", "--owner-uid"}},
      {{"channels", "list", "--help"}, {"--page-size"}},
      {{"channels", "delete", "--help"}, {"--force"}},
      {{"grants", "add", "--help"},
       {"CHANNEL", "--uid", "--gid", "--anyone", "--role", "produce|consume|admin"}},
      {{"grants", "remove", "--help"}, {"--uid", "--gid", "--anyone", "--role"}},
      {{"quota", "set", "--help"},
       {"--uid", "--max-channels", "--max-shm-bytes", "--max-attachments", "--max-frame-bytes",
        "--reset"}},
      {{"quota", "get", "--help"}, {"--uid"}},
      {{"stats", "--help"}, {"CHANNEL", "--lanes"}},
      {{"watch", "--help"}, {"--channel", "--count"}},
      {{"health", "--help"}, {"SERVICE"}},
  };
  for (const auto& c : cases) {
    const std::vector<std::string> argv = Argv(ctl, c.args);
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 0) << Describe(argv, *r);
    EXPECT_EQ(r->err, "") << Describe(argv, *r);
    for (const std::string& m : c.mentions) {
      EXPECT_TRUE(absl::StrContains(r->out, m)) << "help does not mention " << m << "\n"
                                                << Describe(argv, *r);
    }
  }
}

TEST_F(CliFlagsTest, UnknownFlagIsOneLineNamingIt) {
  for (const Tool& tool : Tools()) {
    const std::vector<std::string> argv = Argv(tool, {"--bogus-flag"});
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectOneLineNaming(argv, *r, "--bogus-flag");
    // Also after valid flags, in both spellings.
    const std::vector<std::string> later =
        Argv(tool, {"--runtime-dir", flag_dir_, "--bogus-flag=1"});
    r = RunProcess(later, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectOneLineNaming(later, *r, "--bogus-flag");
  }
  const Tool& ctl = Tools()[0];
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"channels", "create", "x", "--bogus-flag"},
        std::vector<std::string>{"stats", "x", "--bogus-flag"}}) {
    const std::vector<std::string> argv = Argv(ctl, args);
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectOneLineNaming(argv, *r, "--bogus-flag");
  }
}

TEST_F(CliFlagsTest, ShmlanectlUnknownOrMissingCommandIsAUsageError) {
  const Tool& ctl = Tools()[0];
  for (const auto& [args, named] :
       {std::pair{std::vector<std::string>{"frobnicate"}, std::string("frobnicate")},
        std::pair{std::vector<std::string>{"channels", "frobnicate"}, std::string("frobnicate")},
        std::pair{std::vector<std::string>{"channels"}, std::string("create, get, list, delete")},
        std::pair{std::vector<std::string>{"grants", "add", "c", "--role", "produce"},
                  std::string("--uid")},
        std::pair{std::vector<std::string>{"grants", "add", "c", "--uid", "1"},
                  std::string("--role")},
        std::pair{std::vector<std::string>{"quota", "get"}, std::string("--uid")},
        std::pair{std::vector<std::string>{"--tls-ca", "/x", "channels", "list"},
                  std::string("--server")}}) {
    const std::vector<std::string> argv = Argv(ctl, args);
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectOneLineNaming(argv, *r, named);
  }
  // No command at all: the usage, on stderr, exit 2.
  const std::vector<std::string> argv = Argv(ctl, {});
  absl::StatusOr<Result> r = RunProcess(argv, Env());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << Describe(argv, *r);
  EXPECT_TRUE(absl::StrContains(r->err, "Usage:")) << Describe(argv, *r);
}

TEST_F(CliFlagsTest, RuntimeDirIsHonouredInBothSpellings) {
  for (const Tool& tool : Tools()) {
    const bool ctl = std::string(tool.name) == "shmlanectl";
    // The daemon's socket under flag_dir_, as the error message names it.
    const std::string socket = flag_dir_ + (ctl ? "/control.sock" : "/attach.sock");
    for (const std::vector<std::string>& spelling :
         {std::vector<std::string>{"--runtime-dir", flag_dir_},
          std::vector<std::string>{"--runtime-dir=" + flag_dir_}}) {
      std::vector<std::string> args = spelling;
      // The reported defect: a space-form --runtime-dir before a --flag=value.
      if (!ctl) args.push_back("--channel=demo");
      for (const std::string& a : DaemonCommand(tool)) args.push_back(a);
      const std::vector<std::string> argv = Argv(tool, args);
      absl::StatusOr<Result> r = RunProcess(argv, Env());
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->exit_code, ctl ? 3 : 1) << Describe(argv, *r);
      EXPECT_TRUE(absl::StrContains(r->err, socket)) << "the error should name " << socket << "\n"
                                                     << Describe(argv, *r);
      EXPECT_FALSE(absl::StrContains(r->err, env_dir_))
          << "--runtime-dir should win over SHMLANE_RUNTIME_DIR\n"
          << Describe(argv, *r);
    }
    // Without the flag, the environment names the directory.
    const std::vector<std::string> argv = Argv(tool, DaemonCommand(tool));
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->exit_code, 0) << Describe(argv, *r);
    EXPECT_TRUE(absl::StrContains(r->err, env_dir_)) << Describe(argv, *r);
  }
}

TEST_F(CliFlagsTest, ValuesAreTypedAndBothSpellingsWork) {
  const Tool& ctl = Tools()[0];
  for (const auto& [args, named] : {
           std::pair{std::vector<std::string>{"channels", "create", "x", "--ring-bytes", "lots"},
                     std::string("--ring-bytes")},
           std::pair{std::vector<std::string>{"channels", "create", "x", "--ring-bytes=12Q"},
                     std::string("12Q")},
           std::pair{std::vector<std::string>{"channels", "create", "x", "--max-producers", "-1"},
                     std::string("--max-producers")},
           std::pair{std::vector<std::string>{"channels", "create", "x", "--max-frame-bytes=8GiB"},
                     std::string("--max-frame-bytes")},
           std::pair{std::vector<std::string>{"channels", "create", "x", "--pattern", "pubsub"},
                     std::string("stream, request-reply")},
           std::pair{std::vector<std::string>{"channels", "create", "x", "--backpressure=spill"},
                     std::string("block, fail, drop")},
           std::pair{std::vector<std::string>{"channels", "create", "x", "--label", "novalue"},
                     std::string("KEY=VALUE")},
           std::pair{std::vector<std::string>{"grants", "add", "c", "--uid", "1", "--role", "own"},
                     std::string("produce, consume, admin")},
           std::pair{std::vector<std::string>{"--timeout", "5", "health"},
                     std::string("--timeout")},
           std::pair{std::vector<std::string>{"watch", "--count=many"}, std::string("--count")},
           std::pair{std::vector<std::string>{"watch", "--count", "-1"}, std::string("--count")},
       }) {
    const std::vector<std::string> argv = Argv(ctl, args);
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectOneLineNaming(argv, *r, named);
  }
  // Well-typed values in either spelling get as far as the (missing) daemon:
  // exit 3, not a usage error. The enum names take '_' for '-' too.
  for (const std::vector<std::string>& args : {
           std::vector<std::string>{"--timeout=2s", "channels", "create", "x", "--pattern",
                                    "request-reply", "--ring-bytes", "64KiB", "--label", "a=b",
                                    "--label=c=d", "--backpressure", "drop"},
           std::vector<std::string>{"channels", "create", "x", "--timeout", "2s",
                                    "--pattern=request_reply", "--ring-bytes=1MiB",
                                    "--max-frame-bytes", "4096", "--owner-uid=7"},
           std::vector<std::string>{"grants", "add", "c", "--gid=5", "--role=consume"},
           std::vector<std::string>{"quota", "set", "--uid=5", "--max-shm-bytes", "1GiB"},
       }) {
    std::vector<std::string> full = {"--runtime-dir", flag_dir_};
    full.insert(full.end(), args.begin(), args.end());
    const std::vector<std::string> argv = Argv(ctl, full);
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 3) << Describe(argv, *r);
    EXPECT_TRUE(absl::StrContains(r->err, "UNAVAILABLE")) << Describe(argv, *r);
  }
  // The examples' numbers, too.
  // Unsigned counts refuse negative numbers (no wrap to 2^64 - 1).
  for (const auto& [tool, flag] : {std::pair{&Tools()[1], std::string("--frames")},
                                   std::pair{&Tools()[1], std::string("--size")},
                                   std::pair{&Tools()[4], std::string("--size")}}) {
    const std::vector<std::string> argv = Argv(*tool, {flag, "-1"});
    absl::StatusOr<Result> r = RunProcess(argv, Env());
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectOneLineNaming(argv, *r, flag);
  }
  for (const auto& [tool, flag] : {std::pair{&Tools()[1], std::string("--frames")},
                                   std::pair{&Tools()[2], std::string("--idle-exit-s")},
                                   std::pair{&Tools()[4], std::string("--calls")}}) {
    for (const std::vector<std::string>& spelling :
         {std::vector<std::string>{flag, "abc"}, std::vector<std::string>{flag + "=abc"}}) {
      const std::vector<std::string> argv = Argv(*tool, spelling);
      absl::StatusOr<Result> r = RunProcess(argv, Env());
      ASSERT_TRUE(r.ok()) << r.status();
      ExpectOneLineNaming(argv, *r, flag);
    }
  }
}

TEST_F(CliFlagsTest, ShmlanectlVersion) {
  const std::vector<std::string> argv = Argv(Tools()[0], {"--version"});
  absl::StatusOr<Result> r = RunProcess(argv, Env());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << Describe(argv, *r);
  EXPECT_TRUE(absl::StartsWith(r->out, "shmlanectl ")) << Describe(argv, *r);
}

}  // namespace
