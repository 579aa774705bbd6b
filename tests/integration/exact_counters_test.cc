// The README tour's shape, many times: one stream_consumer, two
// stream_producers of N frames each into it, all real processes of the
// shipped examples against a real shmlaned. Once the consumer has read
// everything, `shmlanectl stats` and /metrics must say exactly 2N sent and
// 2N received, also after the consumer has gone (a lane's counters are
// folded into the channel totals only once both sides are done with it).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

constexpr int kRuns = 20;
constexpr uint64_t kFramesPerProducer = 30000;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A child process with stdout and stderr in `log`; killed if still running
// when it goes out of scope.
class Child {
 public:
  Child(std::vector<std::string> argv, std::string log) : log_(std::move(log)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int out = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(out, 2);
      std::vector<char*> args;
      for (std::string& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      std::_Exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The exit code, or nullopt after `timeout` (the child is then killed).
  std::optional<int> Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (absl::Now() > deadline) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return std::nullopt;
  }
  std::string output() const { return ReadFile(log_); }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

// frames_sent / frames_received of `shmlanectl --json stats CHANNEL`.
struct Counts {
  uint64_t sent = 0;
  uint64_t received = 0;
};
std::optional<Counts> StatsOf(const TestDaemon& d, const std::string& channel) {
  CommandResult r = d.Ctl({"--json", "stats", channel});
  if (r.exit_code != 0) return std::nullopt;
  auto field = [&](const std::string& name) -> uint64_t {
    // proto3 JSON prints uint64 as a string: "frames_sent": "60000".
    const std::string key = absl::StrCat("\"", name, "\": \"");
    const size_t at = r.out.find(key);
    if (at == std::string::npos) return 0;
    const size_t start = at + key.size();
    uint64_t v = 0;
    (void)absl::SimpleAtoi(r.out.substr(start, r.out.find('"', start) - start), &v);
    return v;
  };
  return Counts{field("frames_sent"), field("frames_received")};
}

bool ConsumerAttached(const TestDaemon& d, const std::string& channel) {
  CommandResult r = d.Ctl({"--json", "channels", "get", channel});
  return r.exit_code == 0 && absl::StrContains(r.out, "\"consumer_attached\": true");
}

TEST(ExactCountersTest, TourTotalsAreExactOnceConsumed) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  const uint64_t expected = 2 * kFramesPerProducer;
  int short_while_draining = 0;
  for (int run = 0; run < kRuns; ++run) {
    SCOPED_TRACE(absl::StrCat("run ", run));
    const std::string channel = absl::StrCat("demo", run);
    ASSERT_EQ(d.Ctl({"channels", "create", channel}).exit_code, 0);
    Child consumer({STREAM_CONSUMER_PATH, "--channel", channel, "--runtime-dir", d.runtime_dir(),
                    "--idle-exit-s", "1"},
                   absl::StrCat(d.base_dir(), "/consumer.", run));
    const absl::Time attach_deadline = absl::Now() + absl::Seconds(10);
    while (!ConsumerAttached(d, channel) && absl::Now() < attach_deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_TRUE(ConsumerAttached(d, channel)) << consumer.output();
    std::vector<std::unique_ptr<Child>> producers;
    for (int p = 1; p <= 2; ++p) {
      producers.push_back(std::make_unique<Child>(
          std::vector<std::string>{STREAM_PRODUCER_PATH, "--channel", channel, "--runtime-dir",
                                   d.runtime_dir(), "--name", absl::StrCat("p", p), "--frames",
                                   absl::StrCat(kFramesPerProducer)},
          absl::StrCat(d.base_dir(), "/producer.", run, ".", p)));
    }
    for (auto& p : producers) {
      std::optional<int> code = p->Wait(absl::Seconds(30));
      ASSERT_EQ(code, 0) << p->output();
    }

    // The producers are gone; the consumer drains what they left in the
    // rings. Once it has read everything, the totals must say so at once.
    std::optional<Counts> draining;
    const absl::Time drain_deadline = absl::Now() + absl::Seconds(1);
    do {
      draining = StatsOf(d, channel);
      ASSERT_TRUE(draining.has_value());
      if (draining->received == expected) break;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < drain_deadline);
    EXPECT_EQ(draining->sent, expected);
    if (draining->received != expected) ++short_while_draining;
    EXPECT_EQ(draining->received, expected)
        << "while the consumer is still attached, after it read everything";

    std::optional<int> code = consumer.Wait(absl::Seconds(20));
    ASSERT_EQ(code, 0) << consumer.output();
    EXPECT_TRUE(absl::StrContains(consumer.output(),
                                  absl::StrCat("stream_consumer: ", expected, " frames")))
        << consumer.output();

    // Everyone has detached: the folded totals are still exact (and not
    // counted twice).
    std::optional<Counts> after = StatsOf(d, channel);
    ASSERT_TRUE(after.has_value());
    EXPECT_EQ(after->sent, expected);
    EXPECT_EQ(after->received, expected) << "after the consumer detached";
    absl::StatusOr<std::string> body = HttpGet(d.metrics_port(), "/metrics");
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_EQ(MetricValue(*body, absl::StrCat("shmlane_frames_total{channel=\"", channel,
                                              "\",direction=\"received\"}")),
              static_cast<double>(expected));
    EXPECT_EQ(MetricValue(*body, absl::StrCat("shmlane_frames_total{channel=\"", channel,
                                              "\",direction=\"sent\"}")),
              static_cast<double>(expected));
    ASSERT_EQ(d.Ctl({"channels", "delete", channel}).exit_code, 0);
  }
  EXPECT_EQ(short_while_draining, 0) << "of " << kRuns << " runs";
}

}  // namespace
}  // namespace shmlane::testing
