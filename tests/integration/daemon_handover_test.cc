// The explicit lock hand-over between two daemons on one runtime directory
// (docs/operations.md, "Planned restart: --replace"):
// - `shmlaned --replace` stops the daemon that holds shmlaned.lock (SIGTERM)
//   and starts once it has exited; with --on-stop=keep on both, a 64 B
//   stream keeps flowing through the hand-over with no frame lost and both
//   ends' lanes are resumed by the new daemon, which also has the old one's
//   channels. Figures: the stream's longest stall and the time until every
//   lane is re-adopted.
// - The successor binds the old daemon's fixed metrics port (it waits for
//   the old process's exit, not only for its lock).
// - An old daemon that does not stop within --replace-timeout: the new one
//   exits 2 with a message saying so and starts nothing.
// - A lock held by a process that is not a shmlaned, or whose lock file
//   names a shmlaned that does not hold it: refused at once, nobody
//   signalled.
// - --lock-wait waits for a daemon that something else stops, signalling
//   nobody, and refuses when the wait ends first.
// (The plain start that refuses at once is daemon_lifecycle_test's
// SecondDaemonOnSameDirIsRefused.)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "gtest/gtest.h"
#include "tests/dataplane/watchdog.h"
#include "tests/integration/client_process.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

double Metric(const TestDaemon& d, const std::string& series) {
  absl::StatusOr<std::string> body = HttpGet(d.metrics_port(), "/metrics");
  if (!body.ok()) return -1;
  return MetricValue(*body, series).value_or(0);
}

const char kResumed[] = "shmlane_attach_total{result=\"resumed\"}";

// Waits until the daemon counted `n` resumed attachments; how long it took.
std::optional<absl::Duration> AwaitResumed(const TestDaemon& d, double n, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < timeout) {
    if (Metric(d, kResumed) >= n) return absl::Now() - start;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return std::nullopt;
}

struct Seq {
  uint64_t seq;
  uint64_t end;  // 1: the last frame
};

// One producer and one consumer, each on its own thread of this process,
// streaming 64 B frames with sequence numbers until Finish().
class Stream {
 public:
  explicit Stream(const TestDaemon& d) : d_(d) {}
  ~Stream() {
    stop_ = true;
    if (producer_.joinable()) producer_.join();
    if (consumer_.joinable()) consumer_.join();
  }

  absl::Status Start() {
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d_, "consumer");
    auto c = client::Consumer::Attach("lane", o);
    if (!c.ok()) return c.status();
    auto p = client::Producer::Attach("lane", ClientOptions(d_, "producer"));
    if (!p.ok()) return p.status();
    consumer_ =
        std::thread([this, c = std::make_shared<client::Consumer>(*std::move(c))] { Consume(*c); });
    producer_ =
        std::thread([this, p = std::make_shared<client::Producer>(*std::move(p))] { Produce(*p); });
    return absl::OkStatus();
  }
  // Stops the producer (an end frame) and waits for both threads, which end
  // by themselves within their own deadlines (10 s write, 20 s read).
  void Finish() {
    stop_ = true;
    producer_.join();
    consumer_.join();
  }

  // From now on the consumer's longest gap between frames counts as the
  // hand-over's (before: the baseline the machine gives without one).
  void MarkHandover() { handover_ = true; }

  uint64_t sent = 0, received = 0, producer_resumes = 0, consumer_resumes = 0;
  int64_t baseline_stall_ns = 0, stall_ns = 0;
  std::string producer_error, consumer_error;

 private:
  void Produce(client::Producer& p) {
    char frame[64] = {};
    for (uint64_t seq = 0;; ++seq) {
      const bool last = stop_.load();
      const Seq s{seq, last ? 1u : 0u};
      std::memcpy(frame, &s, sizeof(s));
      if (p.Write(std::as_bytes(std::span(frame)), absl::Now() + absl::Seconds(10)) !=
          client::WriteResult::kOk) {
        producer_error = absl::StrCat("frame ", seq, ": ", p.status().ToString());
        return;
      }
      sent = seq + 1;
      if (last) break;
    }
    producer_resumes = p.resumes();
  }
  void Consume(client::Consumer& c) {
    int64_t last_ns = 0;
    for (uint64_t want = 0;; ++want) {
      absl::StatusOr<client::Frame> f = c.Read(absl::Now() + absl::Seconds(20));
      if (!f.ok()) {
        consumer_error = absl::StrCat("after ", received, " frames: ", f.status().ToString());
        return;
      }
      Seq s{};
      std::memcpy(&s, f->data.data(), std::min(sizeof(s), f->data.size()));
      if (f->data.size() != 64 || s.seq != want) {
        consumer_error = absl::StrCat("expected frame ", want, " of 64 B, got ", s.seq, " of ",
                                      f->data.size(), " B");
        return;
      }
      const int64_t now = MonotonicNs();
      int64_t& stall = handover_.load(std::memory_order_relaxed) ? stall_ns : baseline_stall_ns;
      if (last_ns != 0) stall = std::max(stall, now - last_ns);
      last_ns = now;
      received = want + 1;
      if (s.end != 0) break;
    }
    consumer_resumes = c.resumes();
  }

  const TestDaemon& d_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> handover_{false};
  std::thread producer_, consumer_;
};

const std::vector<std::string> kKeep = {"--on-stop=keep", "--resume-grace=20s"};

std::vector<std::string> With(std::vector<std::string> flags,
                              const std::vector<std::string>& more) {
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

TEST(DaemonHandoverTest, StreamFlowsWhileReplaceTakesOver) {
  SetTestTimeLimit(absl::Seconds(90));
  TestDaemon d;
  ASSERT_TRUE(d.Start(kKeep).ok()) << d.stderr_text();
  ASSERT_EQ(
      d.Ctl({"channels", "create", "lane", "--ring-bytes", "65536", "--backpressure", "block"})
          .exit_code,
      0);
  ASSERT_EQ(d.Ctl({"channels", "create", "made-by-a"}).exit_code, 0);
  Stream stream(d);
  ASSERT_TRUE(stream.Start().ok());
  absl::SleepFor(absl::Milliseconds(300));
  const pid_t a_pid = d.pid();
  OwnedChild a(a_pid);
  stream.MarkHandover();
  const absl::Time replace = absl::Now();
  ASSERT_TRUE(d.Start(With(kKeep, {"--replace"})).ok()) << d.stderr_text();
  const absl::Duration until_ready = absl::Now() - replace;
  std::optional<absl::Duration> resumed = AwaitResumed(d, 2, absl::Seconds(15));
  const absl::Duration until_resumed = absl::Now() - replace;
  ASSERT_NE(d.pid(), a_pid);
  EXPECT_EQ(a.Wait(absl::Seconds(5)).value_or(-1), 0) << "the replaced daemon did not exit 0";
  EXPECT_TRUE(absl::StrContains(d.stderr_text(), absl::StrCat("replacing shmlaned pid ", a_pid)))
      << d.stderr_text();
  ASSERT_TRUE(resumed.has_value()) << "not both ends resumed: " << Metric(d, kResumed) << "\n"
                                   << d.stderr_text();
  // The state the old daemon wrote last is the new one's.
  CommandResult list = d.Ctl({"channels", "list"});
  EXPECT_TRUE(absl::StrContains(list.out, "made-by-a")) << list.out << list.err;
  absl::SleepFor(absl::Milliseconds(200));  // streaming under the new daemon
  stream.Finish();
  EXPECT_EQ(stream.producer_error, "");
  EXPECT_EQ(stream.consumer_error, "");
  EXPECT_GT(stream.sent, 0u);
  EXPECT_EQ(stream.received, stream.sent) << "frames lost across the hand-over";
  EXPECT_EQ(stream.producer_resumes, 1u);
  EXPECT_EQ(stream.consumer_resumes, 1u);
  EXPECT_EQ(Metric(d, kResumed), 2);
  std::printf(
      "FIGURE 64B stream across --replace: %llu frames sent, %llu received (lost %lld), longest "
      "stall %.3f ms from --replace on (%.3f ms in the 300 ms before); new daemon ready %s after "
      "--replace started, both lanes re-adopted %s after it started (%s after ready)\n",
      static_cast<unsigned long long>(stream.sent),
      static_cast<unsigned long long>(stream.received),
      static_cast<long long>(stream.sent) - static_cast<long long>(stream.received),
      stream.stall_ns / 1e6, stream.baseline_stall_ns / 1e6,
      absl::FormatDuration(until_ready).c_str(), absl::FormatDuration(until_resumed).c_str(),
      absl::FormatDuration(*resumed).c_str());
}

// A port nobody listens on now (bound to port 0 and closed again).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// The successor binds the very ports the old daemon served on: --replace
// waits for the old process's exit, by which its listeners are closed (the
// metrics server is never stopped gracefully: the process exits under it).
TEST(DaemonHandoverTest, ReplaceTakesOverTheOldDaemonsMetricsPort) {
  SetTestTimeLimit(absl::Seconds(60));
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::vector<std::string> flags = {"--metrics-listen", absl::StrCat("127.0.0.1:", port)};
  TestDaemon d;
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  ASSERT_EQ(d.metrics_port(), port);
  for (int i = 0; i < 3; ++i) {
    OwnedChild old(d.pid());
    ASSERT_TRUE(d.Start(With(flags, {"--replace"})).ok())
        << "replacement " << i << ": " << d.stderr_text();
    EXPECT_EQ(old.Wait(absl::Seconds(5)).value_or(-1), 0);
    EXPECT_EQ(d.metrics_port(), port);
    absl::StatusOr<std::string> body = HttpGet(port, "/metrics");
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_TRUE(absl::StrContains(*body, "shmlane_")) << "not the new daemon's metrics";
  }
}

TEST(DaemonHandoverTest, ReplaceGivesUpCleanlyWhenTheOldDaemonDoesNotStop) {
  SetTestTimeLimit(absl::Seconds(60));
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  // A stopped process cannot act on its SIGTERM: it stands for a daemon that
  // takes too long to stop.
  ASSERT_EQ(::kill(d.pid(), SIGSTOP), 0);
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> r =
      d.RunExpectingExit({"--runtime-dir", d.runtime_dir(), "--metrics-listen", "none", "--replace",
                          "--replace-timeout=500ms"});
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, absl::StrCat("shmlaned pid ", d.pid(), " still holds ",
                                                     d.runtime_dir(), "/shmlaned.lock")))
      << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "nothing was started")) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "--replace-timeout")) << r->err;
  EXPECT_GE(took, absl::Milliseconds(500));
  EXPECT_LT(took, absl::Seconds(5));
  // The SIGTERM stays sent: once it runs again the old daemon stops, cleanly.
  absl::StatusOr<int> code = d.Stop(SIGCONT, absl::Seconds(5));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << d.stderr_text();
}

// A child of this test (not a shmlaned) that holds DIR/shmlaned.lock; the
// parent writes into the file whichever pid the case needs.
pid_t HoldLock(const std::string& dir) {
  int ready[2];
  if (::pipe(ready) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    DieWithParent();
    const int fd = ::open((dir + "/shmlaned.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::flock(fd, LOCK_EX | LOCK_NB) != 0) std::_Exit(1);
    (void)!::write(ready[1], "r", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  const bool ok = ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  return ok ? pid : -1;
}

void WritePid(const std::string& dir, pid_t pid) {
  const std::string text = absl::StrCat(pid, "\n");
  const int fd = ::open((dir + "/shmlaned.lock").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
}

TEST(DaemonHandoverTest, ReplaceRefusesALockHeldByAnotherProgramWithoutSignallingIt) {
  SetTestTimeLimit(absl::Seconds(60));
  TestDaemon d;
  ASSERT_EQ(::mkdir(d.runtime_dir().c_str(), 0755), 0);
  OwnedChild holder(HoldLock(d.runtime_dir()));
  ASSERT_GT(holder.pid(), 0);
  WritePid(d.runtime_dir(), holder.pid());
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> r =
      d.RunExpectingExit({"--runtime-dir", d.runtime_dir(), "--metrics-listen", "none", "--replace",
                          "--replace-timeout=10s"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "not a shmlaned")) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "refuses to signal it")) << r->err;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "refused only after waiting";
  absl::SleepFor(absl::Milliseconds(100));  // a signal sent would have landed
  EXPECT_TRUE(holder.Alive()) << "the lock holder was signalled";

  // The file names a real shmlaned of this uid (serving another directory),
  // but the lock is held by someone else: that daemon is not signalled.
  TestDaemon other;
  ASSERT_TRUE(other.Start().ok()) << other.stderr_text();
  WritePid(d.runtime_dir(), other.pid());
  r = d.RunExpectingExit({"--runtime-dir", d.runtime_dir(), "--metrics-listen", "none", "--replace",
                          "--replace-timeout=10s"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "does not have")) << r->err;
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(other.Ctl({"channels", "list"}).exit_code, 0) << "the other daemon was stopped";
  EXPECT_TRUE(other.running());
  EXPECT_TRUE(holder.Alive());

  // Nobody named at all: refused, not guessed.
  WritePid(d.runtime_dir(), 0);
  r = d.RunExpectingExit(
      {"--runtime-dir", d.runtime_dir(), "--metrics-listen", "none", "--replace"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(r->err, "names no process")) << r->err;
}

TEST(DaemonHandoverTest, LockWaitWaitsWithoutSignallingAndRefusesAtItsEnd) {
  SetTestTimeLimit(absl::Seconds(60));
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  ASSERT_EQ(d.Ctl({"channels", "create", "kept"}).exit_code, 0);
  // The wait ends while the daemon runs: refused, and the daemon untouched.
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> r = d.RunExpectingExit(
      {"--runtime-dir", d.runtime_dir(), "--metrics-listen", "none", "--lock-wait=300ms"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << r->err;
  EXPECT_TRUE(absl::StrContains(
      r->err, absl::StrCat("another shmlaned (pid ", d.pid(), ") still holds ", d.runtime_dir(),
                           "/shmlaned.lock after --lock-wait 300ms")))
      << r->err;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(d.Ctl({"channels", "list"}).exit_code, 0) << "the running daemon was disturbed";
  // Stopped by someone else while the new one waits: the new one starts.
  OwnedChild a(d.pid());
  std::thread stopper([pid = a.pid()] {
    absl::SleepFor(absl::Milliseconds(300));
    ::kill(pid, SIGTERM);
  });
  const absl::Time waiting = absl::Now();
  const absl::Status started = d.Start({"--lock-wait=10s"});
  const absl::Duration took = absl::Now() - waiting;
  stopper.join();
  ASSERT_TRUE(started.ok()) << started << d.stderr_text();
  EXPECT_GE(took, absl::Milliseconds(300)) << "started before the old daemon stopped";
  EXPECT_EQ(a.Wait(absl::Seconds(5)).value_or(-1), 0);
  CommandResult list = d.Ctl({"channels", "list"});
  EXPECT_TRUE(absl::StrContains(list.out, "kept")) << list.out << list.err;
  std::printf(
      "--lock-wait: started %s after it began waiting (the old daemon got SIGTERM at "
      "300ms)\n",
      absl::FormatDuration(took).c_str());
}

}  // namespace
}  // namespace shmlane::testing
