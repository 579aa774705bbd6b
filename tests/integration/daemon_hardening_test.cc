// Daemon hardening beyond the tenant wall (issue 9, remaining items), with a
// real daemon and, where it matters, real other uids:
//  - after the runtime directory's checks, every file the daemon touches goes
//    through the checked directory fd, so renaming the directory or putting
//    a symlink in its place cannot redirect state, sockets or clean-up;
//  - /metrics on a Unix socket (mode 0600, or 0660 with --metrics-group);
//  - consumers receive the producer's pidfd (SO_PEERPIDFD);
//  - a per-uid cap on control.sock connections in multi-user mode.
//
// The other-uid tests need root (CI runs as root) and skip, saying so,
// without it. Ids 64020-64029 are fixed throw-away ids with no passwd entry.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

namespace v1 = ::shmlane::v1;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Binds a Unix stream socket at `path` (a decoy that must survive).
dataplane::UniqueFd BindAt(const std::string& path) {
  dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return dataplane::UniqueFd();
  }
  return fd;
}

TEST(RuntimeDirTest, FilesStayInTheCheckedDirectoryWhenItsPathIsSwapped) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  const std::string rt = d.runtime_dir();
  const std::string moved = d.base_dir() + "/moved";
  const std::string other = d.base_dir() + "/other";
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  // Something that lives in the other directory under the daemon's names.
  dataplane::UniqueFd decoy = BindAt(other + "/control.sock");
  ASSERT_TRUE(decoy.valid()) << std::strerror(errno);
  // The directory the daemon checked moves away; its old path now leads to
  // the other directory.
  ASSERT_EQ(::rename(rt.c_str(), moved.c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink(other.c_str(), rt.c_str()), 0) << std::strerror(errno);

  // A change makes the daemon save its state: it must land beside its
  // sockets, in the directory it checked.
  CommandResult r =
      RunCommand({SHMLANECTL_PATH, "--runtime-dir", moved, "channels", "create", "after-swap"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(Slurp(moved + "/shmlaned.state"), "after-swap"))
      << "the state was not saved in the checked directory";
  EXPECT_FALSE(Exists(other + "/shmlaned.state")) << "the state went through the swapped path";

  // Clean shutdown removes its own sockets, not what the path now names.
  absl::StatusOr<int> code = d.Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << d.stderr_text();
  EXPECT_FALSE(Exists(moved + "/control.sock")) << "control.sock left behind";
  EXPECT_FALSE(Exists(moved + "/attach.sock")) << "attach.sock left behind";
  EXPECT_TRUE(Exists(other + "/control.sock")) << "the daemon removed another directory's file";
  EXPECT_TRUE(absl::StrContains(Slurp(moved + "/shmlaned.state"), "after-swap"));
  EXPECT_FALSE(Exists(other + "/shmlaned.state"));
}

// The pid a pidfd names, from /proc/self/fdinfo ("Pid:\t1234"); -1 if none.
int PidOfPidfd(int fd) {
  const std::string info = Slurp(absl::StrCat("/proc/self/fdinfo/", fd));
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    if (absl::ConsumePrefix(&line, "Pid:")) {
      int pid = -1;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &pid)) return pid;
    }
  }
  return -1;
}

bool PollsReadable(int fd, absl::Duration timeout) {
  pollfd pfd{fd, POLLIN, 0};
  return ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1 &&
         (pfd.revents & POLLIN) != 0;
}

// A producer in a child process: attaches, reports on `report` what it
// learnt of its consumer ('c': the consumer's pidfd names our parent, 'n':
// no pidfd, 'x': a wrong one, 'e': attach failed), then waits to be killed.
[[noreturn]] void ProduceUntilKilled(const std::string& socket, int report) {
  auto a = AttachTo(socket, "pidfds", v1::ROLE_PRODUCER, "pidfd-producer");
  char verdict = 'e';
  if (a.ok() && a->reply.message.has_attach_reply() &&
      a->reply.message.attach_reply().code() == 0 &&
      a->reply.message.attach_reply().lanes_size() == 1) {
    const v1::LaneDescription& lane = a->reply.message.attach_reply().lanes(0);
    verdict = 'n';
    if (lane.has_peer_pidfd()) {
      dataplane::UniqueFd pidfd = DupFd(a->reply, lane.peer_pidfd_fd_index());
      verdict = pidfd.valid() && PidOfPidfd(pidfd.get()) == ::getppid() ? 'c' : 'x';
    }
  }
  (void)::write(report, &verdict, 1);
  while (true) ::pause();
}

bool KernelHasPeerPidfd() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  const bool ok = ::getsockopt(sv[0], SOL_SOCKET, 77 /* SO_PEERPIDFD */, &pidfd, &len) == 0;
  if (ok) ::close(pidfd);
  ::close(sv[0]);
  ::close(sv[1]);
  return ok;
}

TEST(PeerPidfdTest, AConsumerGetsEachProducersPidfdAndSeesItsDeath) {
  if (!KernelHasPeerPidfd()) GTEST_SKIP() << "this kernel has no SO_PEERPIDFD (Linux 6.5+)";
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "pidfds", "--max-producers", "4"}).exit_code, 0);
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  auto spawn = [&]() -> pid_t {
    const pid_t pid = ::fork();
    if (pid == 0) ProduceUntilKilled(d.attach_socket(), report[1]);
    return pid;
  };
  auto verdict = [&]() {
    char c = '?';
    return PollsReadable(report[0], absl::Seconds(5)) && ::read(report[0], &c, 1) == 1 ? c : '?';
  };
  struct Reaper {
    std::vector<pid_t> pids;
    ~Reaper() {
      for (pid_t p : pids) {
        ::kill(p, SIGKILL);
        ::waitpid(p, nullptr, 0);
      }
    }
  } reaper;

  // The first producer attaches before there is a consumer: the consumer's
  // AttachReply describes it. The second comes after: a LaneAdded does.
  const pid_t first = spawn();
  reaper.pids.push_back(first);
  EXPECT_EQ(verdict(), 'n') << "no consumer yet, so no consumer pidfd";
  std::vector<client::Peer> attached;
  client::Consumer::Options options;
  options.runtime_dir = d.runtime_dir();
  options.on_peer_event = [&](const client::PeerEvent& e) {
    if (e.kind == client::PeerEvent::Kind::kAttached) attached.push_back(e.peer);
  };
  absl::StatusOr<client::Consumer> consumer = client::Consumer::Attach("pidfds", options);
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  const pid_t second = spawn();
  reaper.pids.push_back(second);
  EXPECT_EQ(verdict(), 'c') << "the producer did not get its consumer's pidfd";
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (attached.size() < 2 && absl::Now() < deadline) {
    (void)consumer->Wait([](const client::Peer&, std::span<const std::byte>) {},
                         absl::Now() + absl::Milliseconds(50));
  }
  ASSERT_EQ(attached.size(), 2u) << "peer events seen";
  for (const client::Peer& peer : attached) {
    ASSERT_GE(peer.pidfd_fd(), 0) << "peer pid " << peer.pid << " came without a pidfd";
    EXPECT_EQ(PidOfPidfd(peer.pidfd_fd()), peer.pid) << "the pidfd names another process";
  }
  const client::Peer& p1 = attached[0].pid == first ? attached[0] : attached[1];
  const client::Peer& p2 = attached[0].pid == first ? attached[1] : attached[0];
  ASSERT_EQ(p1.pid, first);
  ASSERT_EQ(p2.pid, second);
  EXPECT_FALSE(PollsReadable(p1.pidfd_fd(), absl::ZeroDuration())) << "alive, yet readable";

  // SIGKILL: the pidfd says so, whatever the daemon does.
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  EXPECT_TRUE(PollsReadable(p1.pidfd_fd(), absl::Seconds(2))) << "no POLLIN after SIGKILL";
  EXPECT_FALSE(PollsReadable(p2.pidfd_fd(), absl::ZeroDuration())) << "the other producer lives";
  ::close(report[0]);
  ::close(report[1]);
}

#define SKIP_UNLESS_ROOT()                                                            \
  if (::geteuid() != 0) {                                                             \
    std::fprintf(stderr, "\n*** SKIPPED: %s needs root to act as other uids ***\n\n", \
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());    \
    GTEST_SKIP() << "needs root to run children as uids 64020+ (CI runs as root)";    \
  }

const Identity kHog{64020, 64020, {}};
const Identity kNeighbour{64021, 64021, {}};

// What became of a fresh control.sock connection: kAccepted once the gRPC
// server's HTTP/2 preface (SETTINGS) arrives, kRefused on EOF or reset.
enum class Fate { kAccepted, kRefused, kTimedOut, kError };

Fate ConnectControl(const std::string& path, dataplane::UniqueFd* out) {
  dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Fate::kError;
  }
  pollfd pfd{fd.get(), POLLIN, 0};
  if (::poll(&pfd, 1, 5000) != 1) return Fate::kTimedOut;
  char buf[256];
  const ssize_t n = ::recv(fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
  if (n <= 0) return Fate::kRefused;
  if (out != nullptr) *out = std::move(fd);
  return Fate::kAccepted;
}

constexpr int kControlCap = 4;
int g_ready_pipe = -1;  // child -> parent: "holding the cap"
int g_go_pipe = -1;     // parent -> child: "let go"

// As the hog: holds the cap, is refused one more, waits for the parent, lets
// go and connects again. 0 on success, else which step failed.
int HoldControlConnections(const std::string& path) {
  std::vector<dataplane::UniqueFd> held(kControlCap);
  for (int i = 0; i < kControlCap; ++i) {
    if (ConnectControl(path, &held[i]) != Fate::kAccepted) return 10 + i;
  }
  if (ConnectControl(path, nullptr) != Fate::kRefused) return 30;
  if (::write(g_ready_pipe, "r", 1) != 1) return 31;
  pollfd pfd{g_go_pipe, POLLIN, 0};
  char c;
  if (::poll(&pfd, 1, 20000) != 1 || ::read(g_go_pipe, &c, 1) != 1) return 32;
  held.clear();
  // The daemon learns of the hang-ups at once (EPOLLRDHUP); allow a moment.
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  while (absl::Now() < deadline) {
    dataplane::UniqueFd again;
    if (ConnectControl(path, &again) == Fate::kAccepted) return 0;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return 33;
}

int ConnectControlOnce(const std::string& path) {
  return ConnectControl(path, nullptr) == Fate::kAccepted ? 0 : 40;
}

TEST(ControlConnectionCapTest, OneUidCannotHoldMoreThanItsShareOfControlConnections) {
  SKIP_UNLESS_ROOT();
  TestDaemon d;
  ASSERT_TRUE(d.Start({"--control-mode", "0666", "--max-control-connections-per-uid",
                       absl::StrCat(kControlCap)})
                  .ok())
      << d.stderr_text();
  const std::string path = d.runtime_dir() + "/control.sock";
  int ready[2];
  int go[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  g_ready_pipe = ready[1];
  g_go_pipe = go[0];
  const pid_t hog = ::fork();
  if (hog == 0) std::_Exit(RunAsIdentity(kHog, HoldControlConnections, path));
  ::close(ready[1]);
  ::close(go[0]);
  pollfd pfd{ready[0], POLLIN, 0};
  char c = 0;
  const bool holding = ::poll(&pfd, 1, 20000) == 1 && ::read(ready[0], &c, 1) == 1;
  EXPECT_TRUE(holding) << "the hog did not get to hold its cap";
  if (holding) {
    // Another uid, and root, are not affected.
    EXPECT_EQ(RunAsIdentity(kNeighbour, ConnectControlOnce, path), 0);
    CommandResult r = d.Ctl({"channels", "list"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    // The refusal is counted and logged.
    absl::StatusOr<std::string> metrics = HttpGet(d.metrics_port(), "/metrics");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    std::optional<double> refused =
        MetricValue(*metrics, "shmlane_control_connections_refused_total");
    ASSERT_TRUE(refused.has_value()) << *metrics;
    EXPECT_GE(*refused, 1);
    EXPECT_TRUE(
        absl::StrContains(d.stderr_text(), "refused a control.sock connection from uid 64020"))
        << d.stderr_text();
  }
  // The hog may be gone already (it failed): no SIGPIPE for the test.
  ::signal(SIGPIPE, SIG_IGN);
  (void)::write(go[1], "g", 1);
  int status = 0;
  ASSERT_EQ(::waitpid(hog, &status, 0), hog);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the hog failed at step " << WEXITSTATUS(status)
                                    << " (10+i: connect i, 30: extra not refused, 33: not "
                                       "admitted again after letting go)";
  ::close(ready[0]);
  ::close(go[1]);
  // With its connections closed, the uid makes real calls again.
  CommandResult r = d.CtlAs(kHog, {"channels", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// As some identity: connect(2) to the Unix stream socket `path`; 0 or errno.
int ConnectStream(const std::string& path) {
  dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 ? 0
                                                                                          : errno;
}

// Everything the peer sends until EOF (or `timeout`), and whether EOF came.
std::pair<std::string, bool> ReadToEof(int fd, absl::Duration timeout) {
  std::string out;
  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (absl::Now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now())) + 1) !=
        1) {
      break;
    }
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return {out, true};
    out.append(buf, static_cast<size_t>(n));
  }
  return {out, false};
}

TEST(MetricsUnixSocketTest, ServesMetricsOnlyToWhoMayOpenTheSocket) {
  SKIP_UNLESS_ROOT();
  TestDaemon d;
  const std::string path = d.runtime_dir() + "/metrics.sock";
  ASSERT_TRUE(d.Start({"--metrics-listen", "unix:" + path}).ok()) << d.stderr_text();
  EXPECT_TRUE(absl::StrContains(d.stdout_text(), "metrics:  unix:" + path + " (mode 0600)"))
      << d.stdout_text();
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  // A real scrape with curl.
  ASSERT_EQ(d.Ctl({"channels", "create", "secret-name"}).exit_code, 0);
  CommandResult r = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", "--unix-socket", path,
                                "http://localhost/metrics"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "shmlane_build_info{version=")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "channel=\"secret-name\"")) << r.out;
  r = RunCommand({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                  "--unix-socket", path, "http://localhost/other"});
  EXPECT_EQ(r.out, "404");
  r = RunCommand({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                  "--max-time", "5", "--unix-socket", path, "http://localhost/metrics"});
  EXPECT_EQ(r.out, "405");
  // Another uid cannot open it, so it cannot read channel names.
  EXPECT_EQ(RunAsIdentity(kNeighbour, ConnectStream, path), EACCES);

  // A request that never ends is cut off at the size bound ...
  {
    dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string junk = "GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a');
    (void)::send(fd.get(), junk.data(), junk.size(), MSG_NOSIGNAL);
    auto [reply, eof] = ReadToEof(fd.get(), absl::Seconds(3));
    EXPECT_TRUE(eof);
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 431")) << reply;
  }
  // ... and a silent client at the time bound, after which scrapes go on.
  {
    dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    const absl::Time start = absl::Now();
    auto [reply, eof] = ReadToEof(fd.get(), absl::Seconds(8));
    EXPECT_TRUE(eof) << "a silent client was not cut off";
    EXPECT_LE(absl::Now() - start, absl::Seconds(7));
    r = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", "--unix-socket", path,
                    "http://localhost/metrics"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  absl::StatusOr<int> code = d.Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  EXPECT_FALSE(Exists(path)) << "metrics.sock left behind";

  // --metrics-group: 0660 for that group (Debian's nogroup, gid 65534).
  ASSERT_TRUE(d.Start({"--metrics-listen", "unix:" + path, "--metrics-group", "nogroup"}).ok())
      << d.stderr_text();
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, 65534u);
  const Identity member{64022, 64022, {65534}};
  EXPECT_EQ(RunAsIdentity(member, ConnectStream, path), 0);
  EXPECT_EQ(RunAsIdentity(kNeighbour, ConnectStream, path), EACCES);
}

}  // namespace
}  // namespace shmlane::testing
