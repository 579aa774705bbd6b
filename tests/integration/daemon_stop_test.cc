// A stopping daemon and the clients blocked on it (issue 12), with a real
// shmlaned and every client in a real process of its own:
//
// - --on-stop=close (the default): SIGTERM wakes every blocked side within a
//   bound: a producer on a full BLOCK ring with and without a consumer, a
//   consumer parked on an empty ring, a request/reply client waiting for its
//   reply, a server waiting for requests. (Before the fix, a producer that
//   attached before its consumer, or without one, stayed blocked until its
//   deadline: its lane was marked "producer gone", a bit the producer does
//   not read.)
// - --on-stop=keep: SIGTERM leaves the lanes open; a producer and a consumer
//   keep streaming over shared memory after the daemon has exited, with no
//   frame lost.
//
// Every wait is bounded: a child that is still blocked when it should have
// woken is reported and killed, never waited for.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/request_reply.h"
#include "gtest/gtest.h"
#include "tests/integration/client_process.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

namespace v1 = ::shmlane::v1;

constexpr int kWoke = 0;           // the blocked call returned "closed"/"unavailable"
constexpr int kSetupFailed = 10;   // attach or fill failed
constexpr int kStillBlocked = 11;  // the call ran into its own (long) deadline
constexpr int kWrongResult = 12;   // it returned something else

// How long a blocked call waits on its own: far beyond the bound below, so
// a call that was not woken is told apart from one that was.
constexpr absl::Duration kBlockedCallDeadline = absl::Seconds(15);
// How long after SIGTERM every blocked side must have returned (the daemon
// wakes them before its gRPC grace period; a loaded 2-vCPU machine adds
// scheduling noise, a missed wake-up adds kBlockedCallDeadline).
constexpr absl::Duration kWakeBound = absl::Seconds(2);

// Reports "ready", then "woke <ns>" (CLOCK_MONOTONIC when the call returned)
// and `what`, and returns its exit code.
int Report(const ClientProcess::Io& io, int code, const std::string& what) {
  io.Say(absl::StrCat("woke ", MonotonicNs(), " ", what));
  return code;
}

// Child: attaches as a producer, fills the ring, then blocks in Write.
int BlockedProducer(const TestDaemon& d, const ClientProcess::Io& io) {
  auto p = client::Producer::Attach("lane", ClientOptions(d, "blocked-producer"));
  if (!p.ok()) return Report(io, kSetupFailed, p.status().ToString());
  const std::string frame(64, 'x');
  int written = 0;
  while (written < 10000 &&
         p->TryWrite(std::as_bytes(std::span(frame))) == client::WriteResult::kOk) {
    ++written;
  }
  if (written == 0 || written == 10000) {
    return Report(io, kSetupFailed, absl::StrCat("could not fill the ring: ", written, " frames"));
  }
  io.Say(absl::StrCat("ready ", written, " frames in the ring"));
  const client::WriteResult r =
      p->Write(std::as_bytes(std::span(frame)), absl::Now() + kBlockedCallDeadline);
  if (r == client::WriteResult::kClosed) return Report(io, kWoke, p->status().ToString());
  if (r == client::WriteResult::kTimeout) return Report(io, kStillBlocked, "Write timed out");
  return Report(io, kWrongResult, absl::StrCat("Write returned ", static_cast<int>(r)));
}

// Child: attaches in `role`, says "ready" and idles until told to go.
int Idle(const TestDaemon& d, const ClientProcess::Io& io, v1::Role role) {
  absl::Status s;
  std::optional<client::Producer> producer;
  std::optional<client::Consumer> consumer;
  std::optional<client::Client> rr_client;
  std::optional<client::Server> server;
  switch (role) {
    case v1::ROLE_PRODUCER: {
      auto p = client::Producer::Attach("lane", ClientOptions(d, "idle"));
      s = p.status();
      if (p.ok()) producer.emplace(*std::move(p));
      break;
    }
    case v1::ROLE_CONSUMER: {
      client::Consumer::Options o;
      static_cast<client::AttachOptions&>(o) = ClientOptions(d, "idle");
      auto c = client::Consumer::Attach("lane", o);
      s = c.status();
      if (c.ok()) consumer.emplace(*std::move(c));
      break;
    }
    case v1::ROLE_CLIENT: {
      auto c = client::Client::Attach("rr", ClientOptions(d, "idle"));
      s = c.status();
      if (c.ok()) rr_client.emplace(*std::move(c));
      break;
    }
    case v1::ROLE_SERVER: {
      client::Server::Options o;
      static_cast<client::AttachOptions&>(o) = ClientOptions(d, "idle");
      auto c = client::Server::Attach("rr", o);
      s = c.status();
      if (c.ok()) server.emplace(*std::move(c));
      break;
    }
    default:
      return kSetupFailed;
  }
  if (!s.ok()) return Report(io, kSetupFailed, s.ToString());
  io.Say("ready");
  io.AwaitGo();
  return kWoke;
}

// Waits for the child's "ready" (unless it came already), lets it park,
// stops the daemon with SIGTERM and checks that the child returned "closed"
// within kWakeBound.
void ExpectWokenBySigterm(TestDaemon& d, ClientProcess& blocked, bool ready_seen = false) {
  if (!ready_seen) {
    absl::StatusOr<std::string> ready = blocked.ReadLine(absl::Seconds(10));
    ASSERT_TRUE(ready.ok()) << ready.status();
    ASSERT_EQ(ready->rfind("ready", 0), 0u) << *ready;
  }
  // Well past the 50 µs spin: the child is parked on its doorbell.
  absl::SleepFor(absl::Milliseconds(300));
  const int64_t sigterm_ns = MonotonicNs();
  absl::StatusOr<int> code = d.Stop(SIGTERM, absl::Seconds(5));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << d.stderr_text();
  EXPECT_EQ(*code, 0) << d.stderr_text();
  const absl::Duration stop_took = absl::Nanoseconds(MonotonicNs() - sigterm_ns);
  std::optional<int> exit_code = blocked.Wait(kWakeBound - stop_took);
  ASSERT_TRUE(exit_code.has_value())
      << "the blocked side was still blocked " << absl::FormatDuration(kWakeBound)
      << " after SIGTERM (the daemon stopped in " << absl::FormatDuration(stop_took) << ")";
  absl::StatusOr<std::string> woke = blocked.ReadLine(absl::Seconds(1));
  ASSERT_TRUE(woke.ok()) << woke.status();
  int64_t woke_ns = 0;
  ASSERT_TRUE(absl::SimpleAtoi(woke->substr(5, woke->find(' ', 5) - 5), &woke_ns)) << *woke;
  std::printf("woken %.2f ms after SIGTERM (daemon exited after %.2f ms): %s\n",
              (woke_ns - sigterm_ns) / 1e6, absl::ToDoubleMilliseconds(stop_took), woke->c_str());
  EXPECT_EQ(*exit_code, kWoke) << *woke;
  EXPECT_LT(absl::Nanoseconds(woke_ns - sigterm_ns), kWakeBound) << *woke;
}

void CreateChannels(TestDaemon& d) {
  CommandResult r = d.Ctl({"channels", "create", "lane", "--ring-bytes", "4KiB", "--backpressure",
                           "block", "--max-frame-bytes", "1KiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = d.Ctl({"channels", "create", "rr", "--pattern", "request-reply", "--ring-bytes", "4KiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(DaemonStopTest, ProducerOnAFullRingWithoutAConsumerWakes) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateChannels(d);
  ClientProcess producer([&](const ClientProcess::Io& io) { return BlockedProducer(d, io); });
  ExpectWokenBySigterm(d, producer);
}

TEST(DaemonStopTest, ProducerOnAFullRingWithAnIdleConsumerWakes) {
  TestDaemon d;
  // The default made explicit, once.
  ASSERT_TRUE(d.Start({"--on-stop=close"}).ok()) << d.stderr_text();
  CreateChannels(d);
  // The producer attaches first, so the daemon ends its attachment first.
  ClientProcess producer([&](const ClientProcess::Io& io) { return BlockedProducer(d, io); });
  absl::StatusOr<std::string> ready = producer.ReadLine(absl::Seconds(10));
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_EQ(ready->rfind("ready", 0), 0u) << *ready;
  ClientProcess consumer(
      [&](const ClientProcess::Io& io) { return Idle(d, io, v1::ROLE_CONSUMER); });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ExpectWokenBySigterm(d, producer, /*ready_seen=*/true);
}

TEST(DaemonStopTest, ConsumerParkedOnAnEmptyRingWakes) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateChannels(d);
  ClientProcess producer(
      [&](const ClientProcess::Io& io) { return Idle(d, io, v1::ROLE_PRODUCER); });
  ASSERT_EQ(producer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess consumer([&](const ClientProcess::Io& io) {
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "parked-consumer");
    auto c = client::Consumer::Attach("lane", o);
    if (!c.ok()) return Report(io, kSetupFailed, c.status().ToString());
    // Its one lane arrives with the reply (the producer attached first).
    if (c->peers().size() != 1) return Report(io, kSetupFailed, "expected one lane");
    io.Say("ready");
    absl::StatusOr<client::Frame> f = c->Read(absl::Now() + kBlockedCallDeadline);
    if (f.ok()) return Report(io, kWrongResult, "read a frame nobody wrote");
    if (absl::IsDeadlineExceeded(f.status())) return Report(io, kStillBlocked, "Read timed out");
    if (!absl::IsUnavailable(f.status())) return Report(io, kWrongResult, f.status().ToString());
    return Report(io, kWoke, f.status().ToString());
  });
  ExpectWokenBySigterm(d, consumer);
}

TEST(DaemonStopTest, ClientWaitingForAReplyWakes) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateChannels(d);
  // The client attaches first (so the daemon ends it first), then a server
  // that never answers.
  ClientProcess caller([&](const ClientProcess::Io& io) {
    auto c = client::Client::Attach("rr", ClientOptions(d, "waiting-client"));
    if (!c.ok()) return Report(io, kSetupFailed, c.status().ToString());
    io.Say("attached");
    io.AwaitGo();
    io.Say("ready");
    absl::StatusOr<std::string> reply = c->Call("ping", absl::Now() + kBlockedCallDeadline);
    if (reply.ok()) return Report(io, kWrongResult, "a reply nobody sent");
    if (absl::IsDeadlineExceeded(reply.status())) {
      return Report(io, kStillBlocked, reply.status().ToString());
    }
    if (!absl::IsUnavailable(reply.status())) {
      return Report(io, kWrongResult, reply.status().ToString());
    }
    return Report(io, kWoke, reply.status().ToString());
  });
  ASSERT_EQ(caller.ReadLine(absl::Seconds(10)).value_or("?"), "attached");
  ClientProcess server([&](const ClientProcess::Io& io) { return Idle(d, io, v1::ROLE_SERVER); });
  ASSERT_EQ(server.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  caller.Go();
  ExpectWokenBySigterm(d, caller);
}

TEST(DaemonStopTest, ServerWaitingForRequestsWakes) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateChannels(d);
  ClientProcess caller([&](const ClientProcess::Io& io) { return Idle(d, io, v1::ROLE_CLIENT); });
  ASSERT_EQ(caller.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess server([&](const ClientProcess::Io& io) {
    client::Server::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "waiting-server");
    auto s = client::Server::Attach("rr", o);
    if (!s.ok()) return Report(io, kSetupFailed, s.status().ToString());
    io.Say("ready");
    const int64_t start = MonotonicNs();
    const absl::Status served =
        s->Serve([](const client::Server::Request&, std::string*) { return absl::OkStatus(); },
                 absl::Now() + kBlockedCallDeadline);
    if (served.ok()) {
      return Report(io, kStillBlocked,
                    absl::StrCat("Serve returned OK after ", (MonotonicNs() - start) / 1e6, " ms"));
    }
    if (!absl::IsUnavailable(served)) return Report(io, kWrongResult, served.ToString());
    return Report(io, kWoke, served.ToString());
  });
  ExpectWokenBySigterm(d, server);
}

// --on-stop=keep: a producer streams sequence numbers to a consumer; the
// daemon is stopped with SIGTERM mid-stream and exits; the producer then
// writes kAfterStop more frames. Every frame arrives, in order, and no write
// is refused: nothing was closed.
TEST(DaemonStopTest, OnStopKeepLeavesLanesStreaming) {
  constexpr uint64_t kAfterStop = 20000;
  constexpr uint64_t kEnd = ~uint64_t{0};
  TestDaemon d;
  ASSERT_TRUE(d.Start({"--on-stop=keep"}).ok()) << d.stderr_text();
  CreateChannels(d);
  ClientProcess consumer([&](const ClientProcess::Io& io) {
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "keep-consumer");
    auto c = client::Consumer::Attach("lane", o);
    if (!c.ok()) return Report(io, kSetupFailed, c.status().ToString());
    io.Say("ready");
    uint64_t expected = 0;
    for (;;) {
      absl::StatusOr<client::Frame> f = c->Read(absl::Now() + absl::Seconds(5));
      if (!f.ok()) {
        return Report(io, kWrongResult,
                      absl::StrCat("after ", expected, " frames: ", f.status().ToString()));
      }
      uint64_t seq = 0;
      if (f->data.size() != sizeof(seq)) return Report(io, kWrongResult, "frame size");
      std::memcpy(&seq, f->data.data(), sizeof(seq));
      if (seq == kEnd) break;
      if (seq != expected) {
        return Report(io, kWrongResult, absl::StrCat("expected frame ", expected, ", got ", seq));
      }
      ++expected;
    }
    return Report(io, kWoke, absl::StrCat("read ", expected, " frames in order"));
  });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess producer([&](const ClientProcess::Io& io) {
    auto p = client::Producer::Attach("lane", ClientOptions(d, "keep-producer"));
    if (!p.ok()) return Report(io, kSetupFailed, p.status().ToString());
    io.Say("ready");
    uint64_t seq = 0;
    uint64_t stop_at = kEnd;
    auto write = [&](uint64_t value) {
      return p->Write(std::as_bytes(std::span(&value, 1)), absl::Now() + absl::Seconds(5));
    };
    while (seq < stop_at) {
      if (const client::WriteResult r = write(seq); r != client::WriteResult::kOk) {
        return Report(io, kWrongResult,
                      absl::StrCat("frame ", seq, ": ", client::ToStatus(r).ToString()));
      }
      ++seq;
      pollfd go{io.command_fd, POLLIN, 0};
      if (stop_at == kEnd && seq % 256 == 0 && ::poll(&go, 1, 0) == 1) stop_at = seq + kAfterStop;
    }
    if (write(kEnd) != client::WriteResult::kOk) return Report(io, kWrongResult, "end marker");
    return Report(io, kWoke, absl::StrCat("wrote ", seq, " frames"));
  });
  ASSERT_EQ(producer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  absl::SleepFor(absl::Milliseconds(200));  // streaming
  absl::StatusOr<int> code = d.Stop(SIGTERM, absl::Seconds(5));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << d.stderr_text();
  EXPECT_NE(::access(d.attach_socket().c_str(), F_OK), 0) << "the daemon left its socket";
  producer.Go();  // the daemon has exited: write on without it
  std::optional<int> produced = producer.Wait(absl::Seconds(30));
  ASSERT_TRUE(produced.has_value()) << "the producer did not finish";
  absl::StatusOr<std::string> wrote = producer.ReadLine(absl::Seconds(1));
  ASSERT_TRUE(wrote.ok()) << wrote.status();
  EXPECT_EQ(*produced, kWoke) << *wrote;
  std::optional<int> consumed = consumer.Wait(absl::Seconds(10));
  ASSERT_TRUE(consumed.has_value()) << "the consumer did not finish";
  absl::StatusOr<std::string> read = consumer.ReadLine(absl::Seconds(1));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*consumed, kWoke) << *read;
  std::printf("producer: %s\nconsumer: %s\n", wrote->c_str(), read->c_str());
  // The same count on both sides ("woke <ns> wrote N frames" / "read N ...").
  const std::string wrote_n = wrote->substr(wrote->find("wrote ") + 6);
  const std::string read_n = read->substr(read->find("read ") + 5);
  EXPECT_EQ(wrote_n.substr(0, wrote_n.find(' ')), read_n.substr(0, read_n.find(' ')));
}

}  // namespace
}  // namespace shmlane::testing
