// Durable channels (issue 12): a consumer (server) that exits or dies leaves
// the producers' (clients') lanes open, and the next one continues from the
// last released frame: nothing committed is lost, and exactly the frames that
// were not released are delivered again, at the same (lane, position).
//
// Real processes against a real daemon: producers and consumers are forked
// children using the client library; consumers are SIGKILLed. Every wait is
// bounded (ClientProcess reads and waits take timeouts; children alarm()).
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/request_reply.h"
#include "gtest/gtest.h"
#include "tests/integration/client_process.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

constexpr absl::Duration kStep = absl::Seconds(20);  // bound of every single wait

// A frame: its sequence number and the send time, 16 bytes.
struct Payload {
  uint64_t seq;
  int64_t sent_ns;
};

std::span<const std::byte> Bytes(const Payload& p) { return std::as_bytes(std::span(&p, 1)); }

bool Decode(std::span<const std::byte> data, Payload* p) {
  if (data.size() != sizeof(Payload)) return false;
  std::memcpy(p, data.data(), sizeof(Payload));
  return true;
}

client::Consumer::Options ConsumerOptions(const TestDaemon& d, const std::string& name) {
  client::Consumer::Options options;
  static_cast<client::AttachOptions&>(options) = ClientOptions(d, name);
  return options;
}

void CreateDurable(TestDaemon& d, const std::string& name, const std::string& ring = "64KiB") {
  CommandResult r = d.Ctl({"channels", "create", name, "--durable", "--ring-bytes", ring,
                           "--backpressure", "block", "--max-frame-bytes", "256"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// Child: writes frames 0..count-1 (blocking writes), reports the longest
// Write in µs, and exits 0 only if every write succeeded. With `linger`
// it then waits for "go" before closing.
int Producer(const TestDaemon& d, const std::string& channel, uint64_t count,
             const ClientProcess::Io& io, bool linger = false) {
  auto p = client::Producer::Attach(channel, ClientOptions(d, "durable-producer"));
  if (!p.ok()) {
    io.Say(absl::StrCat("attach failed: ", p.status().ToString()));
    return 10;
  }
  io.Say("attached");
  int64_t longest_ns = 0;
  for (uint64_t seq = 0; seq < count; ++seq) {
    const Payload payload{seq, MonotonicNs()};
    const int64_t start = MonotonicNs();
    const client::WriteResult r = p->Write(Bytes(payload), absl::Now() + kStep);
    longest_ns = std::max(longest_ns, MonotonicNs() - start);
    if (r != client::WriteResult::kOk) {
      io.Say(absl::StrCat("write ", seq, " failed: ", static_cast<int>(r)));
      return 11;
    }
  }
  io.Say(absl::StrCat("done longest_write_us ", longest_ns / 1000));
  if (linger) io.AwaitGo();
  return 0;
}

// Child: a consumer that reads with Peek/Release, releases `release` frames,
// then peeks one more (holding it), reports "held SEQ POS LANE", and waits to
// be killed.
int HoldingConsumer(const TestDaemon& d, const std::string& channel, uint64_t release,
                    const ClientProcess::Io& io) {
  auto c = client::Consumer::Attach(channel, ConsumerOptions(d, "first-consumer"));
  if (!c.ok()) {
    io.Say(absl::StrCat("attach failed: ", c.status().ToString()));
    return 10;
  }
  if (!c->durable()) {
    io.Say("the consumer does not see the channel as durable");
    return 12;
  }
  for (uint64_t n = 0; n <= release; ++n) {
    absl::StatusOr<client::FrameView> v = c->Peek(absl::Now() + kStep);
    Payload payload{};
    if (!v.ok() || !Decode(v->data, &payload)) {
      io.Say(absl::StrCat("peek failed: ", v.status().ToString()));
      return 11;
    }
    if (payload.seq != n) {
      io.Say(absl::StrCat("frame ", n, " has seq ", payload.seq));
      return 12;
    }
    // Peek again without Release: the same frame.
    absl::StatusOr<client::FrameView> again = c->Peek(absl::Now() + kStep);
    if (!again.ok() || again->position != v->position || again->data.data() != v->data.data()) {
      io.Say("a second Peek returned another frame");
      return 12;
    }
    if (n < release) {
      c->Release();
      continue;
    }
    io.Say(absl::StrCat("held ", payload.seq, " ", v->position, " ", v->peer->lane_id));
  }
  io.AwaitGo();  // killed here
  return 0;
}

// Child: a consumer that Read()s `count` frames, reports "read SEQ POS" of
// the last, and then either closes (release_last) or waits to be killed.
int ReadingConsumer(const TestDaemon& d, const std::string& channel, uint64_t count,
                    bool close_at_end, const ClientProcess::Io& io) {
  auto c = client::Consumer::Attach(channel, ConsumerOptions(d, "reading-consumer"));
  if (!c.ok()) {
    io.Say(absl::StrCat("attach failed: ", c.status().ToString()));
    return 10;
  }
  client::Frame frame;
  Payload payload{};
  for (uint64_t n = 0; n < count; ++n) {
    absl::Status s = c->Read(&frame, absl::Now() + kStep);
    if (!s.ok() || !Decode(std::as_bytes(std::span(frame.data)), &payload)) {
      io.Say(absl::StrCat("read failed: ", s.ToString()));
      return 11;
    }
  }
  io.Say(absl::StrCat("read ", payload.seq, " ", frame.position));
  if (close_at_end) {
    c->Close();
    return 0;
  }
  io.AwaitGo();  // killed here
  return 0;
}

// Child: the next consumer. Reads until it has seen seq `last`, checking that
// the sequence is gapless from its first frame; reports "first SEQ POS LANE
// gap_us US frames N" (gap: from the first frame's send time to its
// arrival), or why it failed. With `expect_closed` it then expects the lane
// to end (its producer is gone) and reports "ended".
int NextConsumer(const TestDaemon& d, const std::string& channel, uint64_t last, bool expect_end,
                 const ClientProcess::Io& io) {
  bool ended = false;
  client::Consumer::Options options = ConsumerOptions(d, "next-consumer");
  options.on_peer_event = [&](const client::PeerEvent& e) {
    if (e.kind == client::PeerEvent::Kind::kDetached) ended = true;
  };
  auto c = client::Consumer::Attach(channel, std::move(options));
  if (!c.ok()) {
    io.Say(absl::StrCat("attach failed: ", c.status().ToString()));
    return 10;
  }
  std::optional<uint64_t> first;
  uint64_t expect = 0, frames = 0, first_position = 0, first_lane = 0;
  int64_t gap_ns = 0;
  client::Frame frame;
  while (!first.has_value() || expect <= last) {
    absl::Status s = c->Read(&frame, absl::Now() + kStep);
    Payload payload{};
    if (!s.ok() || !Decode(std::as_bytes(std::span(frame.data)), &payload)) {
      io.Say(absl::StrCat("read failed after ", frames, " frames: ", s.ToString()));
      return 11;
    }
    if (!first.has_value()) {
      first = expect = payload.seq;
      first_position = frame.position;
      first_lane = frame.peer.lane_id;
      gap_ns = MonotonicNs() - payload.sent_ns;
    }
    if (payload.seq != expect) {
      io.Say(absl::StrCat("gap: expected seq ", expect, ", got ", payload.seq));
      return 12;
    }
    ++expect;
    ++frames;
  }
  if (expect_end) {
    const absl::Time deadline = absl::Now() + kStep;
    while (!ended && absl::Now() < deadline) {
      absl::StatusOr<client::Frame> more = c->Read(absl::Now() + absl::Milliseconds(50));
      if (more.ok()) {
        io.Say("a frame after the last one");
        return 12;
      }
      if (!absl::IsDeadlineExceeded(more.status())) break;  // Unavailable: no lane left
    }
    if (!ended) {
      io.Say("the producer's end was not reported");
      return 13;
    }
  }
  io.Say(absl::StrCat("first ", *first, " ", first_position, " ", first_lane, " gap_us ",
                      gap_ns / 1000, " frames ", frames, expect_end ? " ended" : ""));
  return 0;
}

std::vector<std::string> Fields(const std::string& line) { return absl::StrSplit(line, ' '); }

uint64_t Field(const std::string& line, size_t i) {
  std::vector<std::string> f = Fields(line);
  uint64_t v = 0;
  if (i >= f.size() || !absl::SimpleAtoi(f[i], &v))
    ADD_FAILURE() << "no field " << i << ": " << line;
  return v;
}

TEST(DaemonDurableTest, ANewConsumerContinuesFromTheLastReleasedFrame) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateDurable(d, "jobs");
  constexpr uint64_t kFrames = 20000, kReleased = 5000;
  ClientProcess first(
      [&](const ClientProcess::Io& io) { return HoldingConsumer(d, "jobs", kReleased, io); });
  ClientProcess producer(
      [&](const ClientProcess::Io& io) { return Producer(d, "jobs", kFrames, io); });
  ASSERT_EQ(producer.ReadLine(kStep).value_or("?"), "attached");
  absl::StatusOr<std::string> held = first.ReadLine(kStep);
  ASSERT_TRUE(held.ok() && absl::StartsWith(*held, "held ")) << held.status() << " " << *held;
  const uint64_t held_seq = Field(*held, 1), held_position = Field(*held, 2),
                 lane = Field(*held, 3);
  EXPECT_EQ(held_seq, kReleased);
  first.Kill();  // dies holding a peeked frame
  // The producer keeps writing (the ring fills and it blocks) and is never
  // told that its lane closed.
  ClientProcess next([&](const ClientProcess::Io& io) {
    return NextConsumer(d, "jobs", kFrames - 1, /*expect_end=*/false, io);
  });
  absl::StatusOr<std::string> seen = next.ReadLine(kStep);
  ASSERT_TRUE(seen.ok()) << seen.status();
  ASSERT_TRUE(absl::StartsWith(*seen, "first ")) << *seen;
  // Exactly the frame that was peeked and not released comes again, at the
  // same lane and position, and then every later one.
  EXPECT_EQ(Field(*seen, 1), held_seq) << *seen;
  EXPECT_EQ(Field(*seen, 2), held_position) << *seen;
  EXPECT_EQ(Field(*seen, 3), lane) << *seen;
  EXPECT_EQ(Field(*seen, 7), kFrames - kReleased) << *seen;
  absl::StatusOr<std::string> done = producer.ReadLine(kStep);
  ASSERT_TRUE(done.ok() && absl::StartsWith(*done, "done")) << done.status() << " " << *done;
  EXPECT_EQ(producer.Wait(kStep).value_or(-1), 0);
  EXPECT_EQ(next.Wait(kStep).value_or(-1), 0);
  std::printf(
      "durable consumer restart: redelivered 1 frame (the held one), producer's longest "
      "write %s us, next consumer: %s\n",
      Fields(*done).back().c_str(), seen->c_str());
}

TEST(DaemonDurableTest, ReadReleasesAFrameWhenTheApplicationCallsAgain) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateDurable(d, "log");
  constexpr uint64_t kFrames = 3000;
  ClientProcess producer(
      [&](const ClientProcess::Io& io) { return Producer(d, "log", kFrames, io, true); });
  ASSERT_EQ(producer.ReadLine(kStep).value_or("?"), "attached");
  // Killed after 1000 Read()s: the 1000th (seq 999) was returned but not
  // yet released, so it comes again.
  {
    ClientProcess killed([&](const ClientProcess::Io& io) {
      return ReadingConsumer(d, "log", 1000, /*close_at_end=*/false, io);
    });
    absl::StatusOr<std::string> read = killed.ReadLine(kStep);
    ASSERT_TRUE(read.ok() && absl::StartsWith(*read, "read ")) << read.status() << " " << *read;
    EXPECT_EQ(Field(*read, 1), 999u);
    killed.Kill();
  }
  // Closed after 1000 more: Close() releases the last one, nothing repeats.
  uint64_t closed_at_seq = 0;
  {
    ClientProcess closing([&](const ClientProcess::Io& io) {
      return ReadingConsumer(d, "log", 1000, /*close_at_end=*/true, io);
    });
    absl::StatusOr<std::string> read = closing.ReadLine(kStep);
    ASSERT_TRUE(read.ok() && absl::StartsWith(*read, "read ")) << read.status() << " " << *read;
    closed_at_seq = Field(*read, 1);
    EXPECT_EQ(closed_at_seq, 999u + 999u);  // began with seq 999 again
    EXPECT_EQ(closing.Wait(kStep).value_or(-1), 0);
  }
  ClientProcess next([&](const ClientProcess::Io& io) {
    return NextConsumer(d, "log", kFrames - 1, /*expect_end=*/false, io);
  });
  absl::StatusOr<std::string> seen = next.ReadLine(kStep);
  ASSERT_TRUE(seen.ok() && absl::StartsWith(*seen, "first ")) << seen.status() << " " << *seen;
  EXPECT_EQ(Field(*seen, 1), closed_at_seq + 1) << *seen;
  EXPECT_EQ(next.Wait(kStep).value_or(-1), 0);
  producer.Go();
  EXPECT_EQ(producer.ReadLine(kStep).value_or("?").rfind("done", 0), 0u);
  EXPECT_EQ(producer.Wait(kStep).value_or(-1), 0);
}

TEST(DaemonDurableTest, FramesOfAProducerThatEndedWhileNoConsumerReadAreDelivered) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateDurable(d, "batch");
  // One producer exits cleanly, one is SIGKILLed, both with no consumer.
  ClientProcess clean(
      [&](const ClientProcess::Io& io) { return Producer(d, "batch", 500, io, true); });
  ASSERT_EQ(clean.ReadLine(kStep).value_or("?"), "attached");
  EXPECT_EQ(clean.ReadLine(kStep).value_or("?").rfind("done", 0), 0u);
  clean.Go();
  EXPECT_EQ(clean.Wait(kStep).value_or(-1), 0);
  ClientProcess next([&](const ClientProcess::Io& io) {
    return NextConsumer(d, "batch", 499, /*expect_end=*/true, io);
  });
  absl::StatusOr<std::string> seen = next.ReadLine(kStep);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_TRUE(absl::StartsWith(*seen, "first 0 0 ")) << *seen;
  EXPECT_TRUE(absl::EndsWith(*seen, "frames 500 ended")) << *seen;
  EXPECT_EQ(next.Wait(kStep).value_or(-1), 0);

  ClientProcess killed(
      [&](const ClientProcess::Io& io) { return Producer(d, "batch", 300, io, true); });
  ASSERT_EQ(killed.ReadLine(kStep).value_or("?"), "attached");
  EXPECT_EQ(killed.ReadLine(kStep).value_or("?").rfind("done", 0), 0u);
  killed.Kill();
  ClientProcess after([&](const ClientProcess::Io& io) {
    return NextConsumer(d, "batch", 299, /*expect_end=*/true, io);
  });
  seen = after.ReadLine(kStep);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_TRUE(absl::EndsWith(*seen, "frames 300 ended")) << *seen;
  EXPECT_EQ(after.Wait(kStep).value_or(-1), 0);
}

TEST(DaemonDurableTest, ProducersOfANonDurableChannelStillSeeTheLaneClose) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult r = d.Ctl({"channels", "create", "plain", "--ring-bytes", "4KiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ClientProcess first([&](const ClientProcess::Io& io) {
    return ReadingConsumer(d, "plain", 10, /*close_at_end=*/false, io);
  });
  ClientProcess producer(
      [&](const ClientProcess::Io& io) { return Producer(d, "plain", 100000, io); });
  ASSERT_EQ(producer.ReadLine(kStep).value_or("?"), "attached");
  ASSERT_TRUE(first.ReadLine(kStep).ok());
  first.Kill();
  absl::StatusOr<std::string> failed = producer.ReadLine(kStep);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_TRUE(absl::StartsWith(*failed, "write ")) << *failed;
  EXPECT_EQ(producer.Wait(kStep).value_or(-1), 11);
}

// The non-durable way back: one call re-attaches a producer whose consumer
// went away, and its frames reach the next consumer.
TEST(DaemonDurableTest, AProducerOfANonDurableChannelReattachesInOneCall) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult r = d.Ctl({"channels", "create", "plain", "--ring-bytes", "4KiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ClientProcess first([&](const ClientProcess::Io& io) {
    return ReadingConsumer(d, "plain", 10, /*close_at_end=*/false, io);
  });
  ClientProcess producer([&](const ClientProcess::Io& io) {
    auto p = client::Producer::Attach("plain", ClientOptions(d, "reattaching-producer"));
    if (!p.ok()) return 10;
    io.Say("attached");
    uint64_t seq = 0;
    client::WriteResult w = client::WriteResult::kOk;
    while (w == client::WriteResult::kOk) {
      const Payload payload{seq++, MonotonicNs()};
      w = p->Write(Bytes(payload), absl::Now() + kStep);
    }
    if (w != client::WriteResult::kClosed) return 11;
    if (absl::Status s = p->Reattach(absl::Now() + kStep); !s.ok()) {
      io.Say(absl::StrCat("reattach failed: ", s.ToString()));
      return 12;
    }
    io.Say(absl::StrCat("reattached ", p->reattaches()));
    for (uint64_t i = 0; i < 100; ++i) {
      const Payload payload{i, MonotonicNs()};
      if (p->Write(Bytes(payload), absl::Now() + kStep) != client::WriteResult::kOk) return 13;
    }
    io.AwaitGo();
    return 0;
  });
  ASSERT_EQ(producer.ReadLine(kStep).value_or("?"), "attached");
  ASSERT_TRUE(first.ReadLine(kStep).ok());
  first.Kill();
  EXPECT_EQ(producer.ReadLine(kStep).value_or("?"), "reattached 1");
  ClientProcess next([&](const ClientProcess::Io& io) {
    return NextConsumer(d, "plain", 99, /*expect_end=*/false, io);
  });
  absl::StatusOr<std::string> seen = next.ReadLine(kStep);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_TRUE(absl::StartsWith(*seen, "first 0 0 ")) << *seen;
  EXPECT_EQ(next.Wait(kStep).value_or(-1), 0);
  producer.Go();
  EXPECT_EQ(producer.Wait(kStep).value_or(-1), 0);
}

TEST(DaemonDurableTest, ARequestWaitsForTheNextServer) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult r = d.Ctl({"channels", "create", "rpc", "--pattern", "request-reply", "--durable",
                           "--ring-bytes", "4KiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto serve = [&](const ClientProcess::Io& io) {
    client::Server::Options options;
    static_cast<client::AttachOptions&>(options) = ClientOptions(d, "server");
    auto s = client::Server::Attach("rpc", std::move(options));
    if (!s.ok()) {
      io.Say(absl::StrCat("attach failed: ", s.status().ToString()));
      return 10;
    }
    io.Say("serving");
    const absl::Time deadline = absl::Now() + kStep;
    while (absl::Now() < deadline) {
      absl::StatusOr<size_t> n = s->ServeOnce(
          [](const client::Server::Request& req, std::string* reply) {
            reply->assign(req.data_as_string_view());
            reply->append(" pong");
            return absl::OkStatus();
          },
          absl::Now() + absl::Milliseconds(100));
      if (!n.ok() && !absl::IsDeadlineExceeded(n.status())) {
        io.Say(absl::StrCat("serve failed: ", n.status().ToString()));
        return 11;
      }
    }
    return 0;
  };
  auto first = std::make_unique<ClientProcess>(serve);
  ASSERT_EQ(first->ReadLine(kStep).value_or("?"), "serving");
  ClientProcess client([&](const ClientProcess::Io& io) {
    auto c = client::Client::Attach("rpc", ClientOptions(d, "client"));
    if (!c.ok()) {
      io.Say(absl::StrCat("attach failed: ", c.status().ToString()));
      return 10;
    }
    for (int i = 0; i < 4; ++i) {
      if (i == 2) {
        io.Say("waiting");
        io.AwaitGo();  // the parent kills the server and starts another
      }
      absl::StatusOr<std::string> reply = c->Call(absl::StrCat("ping ", i), absl::Now() + kStep);
      if (!reply.ok() || *reply != absl::StrCat("ping ", i, " pong")) {
        io.Say(absl::StrCat("call ", i, " failed: ", reply.status().ToString()));
        return 11;
      }
    }
    io.Say("calls ok");
    return 0;
  });
  ASSERT_EQ(client.ReadLine(kStep).value_or("?"), "waiting");
  first.reset();  // SIGKILL: the client keeps its lanes
  client.Go();    // its call waits for the next server
  absl::SleepFor(absl::Milliseconds(200));
  ClientProcess second(serve);
  ASSERT_EQ(second.ReadLine(kStep).value_or("?"), "serving");
  EXPECT_EQ(client.ReadLine(kStep).value_or("?"), "calls ok");
  EXPECT_EQ(client.Wait(kStep).value_or(-1), 0);
}

TEST(DaemonDurableTest, BroadcastChannelsCannotBeDurable) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CommandResult r = d.Ctl({"channels", "create", "ticks", "--pattern", "broadcast", "--durable"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("durable applies to STREAM and REQUEST_REPLY"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace shmlane::testing
