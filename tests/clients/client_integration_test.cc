// Integration tests of shmlane::client against a real shmlaned and real
// processes: streaming with sequence checks, fan-in, request/reply, and the
// failure cases (a peer or the daemon SIGKILLed, no daemon, no grant).
//
// Frame counts scale with SHMLANE_TEST_SCALE (sanitizer runs use 0.05).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/request_reply.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/clients/test_util.h"

extern "C" int shmlane_c_api_scenario(const char* runtime_dir, const char* channel, char* message,
                                      size_t message_len);

namespace shmlane::client {
namespace {

using ::shmlane::testing::Child;
using ::shmlane::testing::Daemon;
using ::shmlane::testing::Scaled;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kStream = v1::CHANNEL_PATTERN_STREAM;
constexpr auto kRequestReply = v1::CHANNEL_PATTERN_REQUEST_REPLY;

struct Header {
  uint32_t index;
  uint32_t zero;
  uint64_t seq;
};

Header Parse(std::span<const std::byte> data) {
  Header h{};
  if (data.size() >= sizeof(h)) std::memcpy(&h, data.data(), sizeof(h));
  return h;
}

class ClientIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }

  AttachOptions Options() const {
    AttachOptions o;
    o.runtime_dir = daemon_->dir();
    return o;
  }
  Consumer::Options ConsumerOptions() const {
    Consumer::Options o;
    o.runtime_dir = daemon_->dir();
    return o;
  }

  Child SpawnPeer(std::vector<std::string> args, std::optional<uid_t> uid = std::nullopt) {
    args.insert(args.begin(), CLIENT_TEST_PEER_PATH);
    args.push_back("--dir");
    args.push_back(daemon_->dir());
    auto child = Child::Spawn(args, uid);
    EXPECT_TRUE(child.ok()) << child.status();
    return std::move(*child);
  }

  std::unique_ptr<Daemon> daemon_;
};

// The exit code, or -1 when the child did not exit in time.
int ExitCode(const absl::StatusOr<int>& code) { return code.ok() ? *code : -1; }

// Checks per-producer sequences; counts frames.
struct SequenceChecker {
  std::map<uint32_t, uint64_t> next;  // by producer index
  uint64_t frames = 0;
  uint64_t errors = 0;
  void operator()(std::span<const std::byte> data) {
    const Header h = Parse(data);
    uint64_t& expected = next[h.index];
    if (h.seq != expected) ++errors;
    expected = h.seq + 1;
    ++frames;
  }
};

TEST_F(ClientIntegrationTest, InProcessProducerAndConsumer) {
  ASSERT_TRUE(daemon_->CreateChannel("local", kStream).ok());
  auto consumer = Consumer::Attach("local", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  AttachOptions popts = Options();
  popts.client_name = "writer";
  auto producer = Producer::Attach("local", popts);
  ASSERT_TRUE(producer.ok()) << producer.status();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(producer->Write(absl::StrCat("frame ", i)), WriteResult::kOk);
  }
  for (int i = 0; i < 1000; ++i) {
    auto frame = consumer->Read(absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->data, absl::StrCat("frame ", i));
    EXPECT_EQ(frame->peer.name, "writer");
    EXPECT_EQ(frame->peer.attachment_id, producer->attachment_id());
  }
  auto none = consumer->Read(absl::Now() + absl::Milliseconds(20));
  EXPECT_TRUE(absl::IsDeadlineExceeded(none.status())) << none.status();
}

TEST_F(ClientIntegrationTest, LateConsumerFindsQueuedFramesAndASecondIsRefused) {
  ASSERT_TRUE(daemon_->CreateChannel("queued", kStream).ok());
  auto producer = Producer::Attach("queued", Options());
  ASSERT_TRUE(producer.ok()) << producer.status();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(producer->TryWrite(absl::StrCat(i)), WriteResult::kOk);
  auto consumer = Consumer::Attach("queued", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  ASSERT_EQ(consumer->peers().size(), 1u);
  for (int i = 0; i < 10; ++i) {
    auto frame = consumer->Read(absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->data, absl::StrCat(i));
  }
  auto second = Consumer::Attach("queued", ConsumerOptions());
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  auto wrong = Client::Attach("queued", Options());
  EXPECT_FALSE(wrong.ok()) << "a REQUEST_REPLY role on a STREAM channel";
  auto missing = Producer::Attach("no-such-channel", Options());
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
}

// An AttachReply carries at most 64 fds (31 producer lanes); the rest follow
// in LaneAdded packets that Attach waits for, so peers() is complete at once.
TEST_F(ClientIntegrationTest, LateConsumerSeesEveryProducerRightAfterAttach) {
  ASSERT_TRUE(daemon_->CreateChannel("crowd", kStream, 64 << 10).ok());
  constexpr int kProducers = 40;
  std::vector<Producer> producers;
  std::set<uint64_t> producer_ids;
  for (int i = 0; i < kProducers; ++i) {
    AttachOptions o = Options();
    o.client_name = absl::StrCat("p", i);
    auto p = Producer::Attach("crowd", o);
    ASSERT_TRUE(p.ok()) << "producer " << i << ": " << p.status();
    ASSERT_EQ(p->TryWrite(absl::StrCat("from p", i)), WriteResult::kOk);
    producer_ids.insert(p->attachment_id());
    producers.push_back(std::move(*p));
  }
  auto consumer = Consumer::Attach("crowd", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  const std::vector<Peer> peers = consumer->peers();
  ASSERT_EQ(peers.size(), static_cast<size_t>(kProducers));
  std::set<uint64_t> peer_ids;
  for (const Peer& peer : peers) peer_ids.insert(peer.attachment_id);
  EXPECT_EQ(peer_ids, producer_ids);
  std::set<std::string> frames;
  for (int i = 0; i < kProducers; ++i) {
    auto frame = consumer->Read(absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(frame.ok()) << frame.status();
    EXPECT_EQ(frame->data, absl::StrCat("from ", frame->peer.name));
    frames.insert(frame->data);
  }
  EXPECT_EQ(frames.size(), static_cast<size_t>(kProducers));
}

// The same for a server joining 20 clients (two lanes, four fds each).
TEST_F(ClientIntegrationTest, LateServerSeesEveryClientRightAfterAttach) {
  ASSERT_TRUE(daemon_->CreateChannel("crowd-rpc", kRequestReply, 64 << 10).ok());
  constexpr int kClients = 20;
  std::vector<Client> clients;
  for (int i = 0; i < kClients; ++i) {
    auto c = Client::Attach("crowd-rpc", Options());
    ASSERT_TRUE(c.ok()) << "client " << i << ": " << c.status();
    clients.push_back(std::move(*c));
  }
  Server::Options sopts;
  sopts.runtime_dir = daemon_->dir();
  auto server = Server::Attach("crowd-rpc", sopts);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(server->clients().size(), static_cast<size_t>(kClients));
  // The last client's lanes came in a LaneAdded packet; its replies must flow.
  absl::StatusOr<std::string> reply;
  std::thread caller([&] { reply = clients.back().Call("ping", absl::Now() + absl::Seconds(10)); });
  auto served = server->ServeOnce(
      [](const Server::Request& r, std::string* out) {
        *out = absl::StrCat("pong to ", std::string(r.data_as_string_view()));
        return absl::OkStatus();
      },
      absl::Now() + absl::Seconds(10));
  caller.join();
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(*served, 1u);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "pong to ping");
}

TEST_F(ClientIntegrationTest, StreamsAMillionFramesInOrder) {
  ASSERT_TRUE(daemon_->CreateChannel("million", kStream).ok());
  const uint64_t n = Scaled(1'000'000, 1000);
  auto consumer = Consumer::Attach("million", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  Child producer = SpawnPeer({"produce", "--channel", "million", "--frames", absl::StrCat(n)});
  SequenceChecker check;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(120);
  while (check.frames < n && absl::Now() < deadline) {
    auto got = consumer->Wait([&](const Peer&, std::span<const std::byte> data) { check(data); },
                              deadline);
    ASSERT_TRUE(got.ok()) << got.status();
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  EXPECT_EQ(check.frames, n);
  EXPECT_EQ(check.errors, 0u);
  EXPECT_EQ(ExitCode(producer.Wait(absl::Now() + absl::Seconds(10))), 0);
  std::printf("streamed %lu frames in %.3f s (%.0f frames/s)\n", static_cast<unsigned long>(n),
              secs, static_cast<double>(n) / secs);
}

TEST_F(ClientIntegrationTest, ThirtyTwoProducersFanIn) {
  ASSERT_TRUE(daemon_->CreateChannel("fanin", kStream, 64 << 10).ok());
  constexpr int kProducers = 32;
  const uint64_t per = Scaled(20'000, 200);
  std::set<uint64_t> attached, detached;
  Consumer::Options copts = ConsumerOptions();
  std::vector<std::string> bad_ends;
  copts.on_peer_event = [&](const PeerEvent& e) {
    if (e.kind == PeerEvent::Kind::kAttached) {
      attached.insert(e.peer.lane_id);
    } else {
      detached.insert(e.peer.lane_id);
      if (!e.status.ok()) bad_ends.push_back(e.status.ToString());
    }
  };
  auto consumer = Consumer::Attach("fanin", copts);
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::vector<Child> producers;
  for (int i = 0; i < kProducers; ++i) {
    producers.push_back(SpawnPeer({"produce", "--channel", "fanin", "--frames", absl::StrCat(per),
                                   "--index", absl::StrCat(i)}));
  }
  SequenceChecker check;
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while ((check.frames < per * kProducers || detached.size() < kProducers) &&
         absl::Now() < deadline) {
    auto got = consumer->Wait([&](const Peer&, std::span<const std::byte> d) { check(d); },
                              absl::Now() + absl::Seconds(1));
    ASSERT_TRUE(got.ok()) << got.status();
  }
  EXPECT_EQ(check.frames, per * kProducers);
  EXPECT_EQ(check.errors, 0u);
  ASSERT_EQ(check.next.size(), static_cast<size_t>(kProducers));
  for (const auto& [index, next] : check.next) EXPECT_EQ(next, per) << "producer " << index;
  EXPECT_EQ(attached.size(), static_cast<size_t>(kProducers));
  EXPECT_EQ(detached.size(), static_cast<size_t>(kProducers));
  EXPECT_THAT(bad_ends, ::testing::IsEmpty());
  for (Child& p : producers) {
    EXPECT_EQ(ExitCode(p.Wait(absl::Now() + absl::Seconds(10))), 0);
  }
}

TEST_F(ClientIntegrationTest, EightClientsOneServer) {
  ASSERT_TRUE(daemon_->CreateChannel("rpc", kRequestReply).ok());
  Server::Options sopts;
  sopts.runtime_dir = daemon_->dir();
  auto server = Server::Attach("rpc", sopts);
  ASSERT_TRUE(server.ok()) << server.status();
  constexpr int kClients = 8;
  const uint64_t calls = Scaled(5'000, 50);
  std::vector<Child> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(SpawnPeer(
        {"call", "--channel", "rpc", "--calls", absl::StrCat(calls), "--index", absl::StrCat(i)}));
  }
  std::vector<int> codes(kClients, -1);
  std::thread reaper([&] {
    for (int i = 0; i < kClients; ++i) {
      codes[i] = clients[i].Wait(absl::Now() + absl::Seconds(120)).value_or(-1);
    }
    server->Stop();
  });
  uint64_t served = 0;
  const absl::Status s = server->Serve(
      [&](const Server::Request& r, std::string* reply) {
        ++served;
        *reply = absl::StrCat("echo: ", std::string(r.data_as_string_view()));
        return absl::OkStatus();
      },
      absl::Now() + absl::Seconds(150));
  reaper.join();
  EXPECT_TRUE(s.ok()) << s;
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(codes[i], 0) << "client " << i << ": "
                           << clients[i].RestOfOutput(absl::Now() + absl::Seconds(1));
  }
  EXPECT_EQ(served, calls * kClients);
  EXPECT_EQ(server->dropped_replies(), 0u);
}

TEST_F(ClientIntegrationTest, HandlerErrorReachesTheClientAndDeadlinesHold) {
  ASSERT_TRUE(daemon_->CreateChannel("errors", kRequestReply).ok());
  auto client = Client::Attach("errors", Options());
  ASSERT_TRUE(client.ok()) << client.status();
  // No server yet: the call times out at its deadline.
  const absl::Time start = absl::Now();
  auto early = client->Call("anyone?", start + absl::Milliseconds(100));
  EXPECT_TRUE(absl::IsDeadlineExceeded(early.status())) << early.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));

  Server::Options sopts;
  sopts.runtime_dir = daemon_->dir();
  auto server = Server::Attach("errors", sopts);
  ASSERT_TRUE(server.ok()) << server.status();
  std::atomic<bool> stop{false};
  std::thread serving([&] {
    while (!stop.load()) {
      (void)server->ServeOnce(
          [](const Server::Request& r, std::string* reply) -> absl::Status {
            if (r.data_as_string_view() == "bad") return absl::InvalidArgumentError("no bad");
            *reply = std::string(r.data_as_string_view());
            return absl::OkStatus();
          },
          absl::Now() + absl::Milliseconds(50));
    }
  });
  // The stale request of the timed-out call is answered first; the client
  // must skip that reply and return this call's.
  auto ok = client->Call("good", absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "good");
  auto bad = client->Call("bad", absl::Now() + absl::Seconds(5));
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("no bad"));
  stop = true;
  serving.join();
}

TEST_F(ClientIntegrationTest, KilledServerFailsAWaitingCall) {
  ASSERT_TRUE(daemon_->CreateChannel("fragile", kRequestReply).ok());
  Child server = SpawnPeer({"serve", "--channel", "fragile", "--answer", "1"});
  ASSERT_TRUE(server.ExpectLine("ATTACHED", absl::Now() + absl::Seconds(10)).ok());
  auto client = Client::Attach("fragile", Options());
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(client->server().name, "echo-server");
  auto first = client->Call("one", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, "echo: one");
  ASSERT_TRUE(server.ExpectLine("SERVED", absl::Now() + absl::Seconds(10)).ok());
  // The server now ignores requests: this call waits for a reply that will
  // never come, until the server dies.
  absl::Time killed = absl::InfiniteFuture();
  std::thread killer([&] {
    absl::SleepFor(absl::Milliseconds(200));
    killed = absl::Now();
    server.Signal(SIGKILL);
  });
  auto second = client->Call("two", absl::Now() + absl::Seconds(10));
  const absl::Time returned = absl::Now();
  killer.join();
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_LT(returned - killed, absl::Seconds(2)) << "the call hung after its server died";
  std::printf("the waiting call failed %s after the server's SIGKILL: %s\n",
              absl::FormatDuration(returned - killed).c_str(), second.status().ToString().c_str());
}

TEST_F(ClientIntegrationTest, NewProducerWakesAParkedConsumer) {
  ASSERT_TRUE(daemon_->CreateChannel("wake", kStream).ok());
  auto consumer = Consumer::Attach("wake", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  // An idle producer first, so that the consumer parks in the lane set.
  Child idle =
      SpawnPeer({"produce", "--channel", "wake", "--frames", "0", "--index", "1", "--hold"});
  ASSERT_TRUE(idle.ExpectLine("WROTE", absl::Now() + absl::Seconds(10)).ok());
  std::thread late([&] {
    absl::SleepFor(absl::Milliseconds(300));
    Child writer = SpawnPeer({"produce", "--channel", "wake", "--frames", "1", "--index", "2"});
    (void)writer.Wait(absl::Now() + absl::Seconds(10));
  });
  const absl::Time start = absl::Now();
  auto frame = consumer->Read(start + absl::Seconds(10));
  const absl::Duration took = absl::Now() - start;
  late.join();
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(Parse(std::as_bytes(std::span(frame->data))).index, 2u);
  EXPECT_EQ(frame->peer.name, "producer-2");
  EXPECT_LT(took, absl::Seconds(5)) << "the consumer did not wake for the new producer";
  std::printf("new producer's frame read %s after parking\n", absl::FormatDuration(took).c_str());
}

TEST_F(ClientIntegrationTest, KilledConsumerUnblocksProducers) {
  ASSERT_TRUE(daemon_->CreateChannel("stall", kStream, 4096).ok());
  Child consumer = SpawnPeer({"stall", "--channel", "stall"});
  ASSERT_TRUE(consumer.ExpectLine("ATTACHED", absl::Now() + absl::Seconds(10)).ok());
  constexpr int kProducers = 4;
  std::vector<Child> producers;
  for (int i = 0; i < kProducers; ++i) {
    producers.push_back(SpawnPeer({"produce", "--channel", "stall", "--frames", "100000000",
                                   "--index", absl::StrCat(i), "--report-full"}));
  }
  for (Child& p : producers) {
    ASSERT_TRUE(p.ExpectLine("FULL", absl::Now() + absl::Seconds(10)).ok());
  }
  absl::SleepFor(absl::Milliseconds(100));  // let them get past the spin and park
  const absl::Time killed = absl::Now();
  consumer.Signal(SIGKILL);
  absl::Duration slowest;
  for (Child& p : producers) {
    auto code = p.Wait(killed + absl::Seconds(2));
    ASSERT_TRUE(code.ok()) << "a producer is still blocked 2 s after its consumer died";
    EXPECT_EQ(*code, 3) << p.RestOfOutput(absl::Now() + absl::Seconds(1));
    slowest = std::max(slowest, absl::Now() - killed);
  }
  std::printf("all %d blocked producers saw kClosed within %s of the consumer's SIGKILL\n",
              kProducers, absl::FormatDuration(slowest).c_str());
}

// What a producer is told when its lane closes names who closed it, and says
// "attach again" once.
TEST_F(ClientIntegrationTest, ClosedLaneMessagesNameWhoClosedIt) {
  ASSERT_TRUE(daemon_->CreateChannel("doomed", kStream, 4096).ok());
  auto producer = Producer::Attach("doomed", Options());
  ASSERT_TRUE(producer.ok()) << producer.status();
  ASSERT_TRUE(daemon_->DeleteChannel("doomed", /*force=*/true).ok());
  const absl::Time end = absl::Now() + absl::Seconds(5);
  const std::vector<std::byte> frame(16);
  while (producer->TryWrite(frame) != WriteResult::kClosed && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const std::string deleted(producer->status().message());
  EXPECT_THAT(
      deleted,
      HasSubstr("shmlaned closed the lane to channel 'doomed': channel \"doomed\" was deleted"))
      << deleted;
  EXPECT_THAT(deleted, Not(HasSubstr("('')"))) << deleted;

  ASSERT_TRUE(daemon_->CreateChannel("gone", kStream, 4096).ok());
  {
    auto consumer = Consumer::Attach("gone", ConsumerOptions());
    ASSERT_TRUE(consumer.ok()) << consumer.status();
    producer = Producer::Attach("gone", Options());
    ASSERT_TRUE(producer.ok()) << producer.status();
  }  // the consumer closes
  while (producer->TryWrite(frame) != WriteResult::kClosed && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const std::string after(producer->status().message());
  EXPECT_THAT(after, HasSubstr("attach again")) << after;
  EXPECT_EQ(after.find("attach again"), after.rfind("attach again")) << after;
}

TEST_F(ClientIntegrationTest, KilledProducerIsDrainedThenGone) {
  ASSERT_TRUE(daemon_->CreateChannel("drain", kStream).ok());
  std::vector<PeerEvent> events;
  Consumer::Options copts = ConsumerOptions();
  copts.on_peer_event = [&](const PeerEvent& e) { events.push_back(e); };
  auto consumer = Consumer::Attach("drain", copts);
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  const uint64_t n = 1000;
  Child producer =
      SpawnPeer({"produce", "--channel", "drain", "--frames", absl::StrCat(n), "--hold"});
  ASSERT_TRUE(producer.ExpectLine("WROTE", absl::Now() + absl::Seconds(10)).ok());
  producer.Signal(SIGKILL);
  ASSERT_TRUE(producer.Wait(absl::Now() + absl::Seconds(5)).ok());
  SequenceChecker check;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  auto gone = [&] {
    for (const PeerEvent& e : events) {
      if (e.kind == PeerEvent::Kind::kDetached) return true;
    }
    return false;
  };
  while (!gone() && absl::Now() < deadline) {
    auto got =
        consumer->Wait([&](const Peer&, std::span<const std::byte> d) { check(d); }, deadline);
    ASSERT_TRUE(got.ok()) << got.status();
  }
  EXPECT_EQ(check.frames, n) << "frames committed before the SIGKILL must all arrive";
  EXPECT_EQ(check.errors, 0u);
  ASSERT_TRUE(gone()) << "the consumer never saw the killed producer go";
  EXPECT_TRUE(consumer->peers().empty());
}

TEST_F(ClientIntegrationTest, StreamSurvivesTheDaemon) {
  ASSERT_TRUE(daemon_->CreateChannel("survive", kStream, 64 << 10).ok());
  auto consumer = Consumer::Attach("survive", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  const uint64_t n = Scaled(200'000, 5000);
  Child producer = SpawnPeer({"produce", "--channel", "survive", "--frames", absl::StrCat(n)});
  SequenceChecker check;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  auto read = [&](absl::Time until) {
    auto got = consumer->Wait([&](const Peer&, std::span<const std::byte> d) { check(d); }, until);
    return got.ok() ? absl::OkStatus() : got.status();
  };
  while (check.frames < 1000 && absl::Now() < deadline) ASSERT_TRUE(read(deadline).ok());
  const uint64_t before = check.frames;
  daemon_->Kill();
  while (check.frames < n && absl::Now() < deadline) ASSERT_TRUE(read(deadline).ok());
  EXPECT_EQ(check.frames, n);
  EXPECT_EQ(check.errors, 0u);
  EXPECT_LT(before, n) << "the stream ended before the daemon died; the test proved nothing";
  EXPECT_EQ(ExitCode(producer.Wait(absl::Now() + absl::Seconds(10))), 0);
  // The producer closed and no one can attach any more: the consumer says so.
  absl::Status end;
  while (end.ok() && absl::Now() < deadline) end = read(deadline);
  EXPECT_TRUE(absl::IsUnavailable(end)) << end;
  std::printf("%lu of %lu frames flowed after the daemon was SIGKILLed\n",
              static_cast<unsigned long>(n - before), static_cast<unsigned long>(n));
}

TEST_F(ClientIntegrationTest, PermissionDeniedWithoutAGrant) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a child as uid 65534";
  ASSERT_TRUE(daemon_->CreateChannel("private", kStream).ok());
  Child denied = SpawnPeer({"attach", "--channel", "private", "--role", "producer"}, 65534);
  auto line = denied.ExpectLine("STATUS", absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("PERMISSION_DENIED"));
  EXPECT_EQ(ExitCode(denied.Wait(absl::Now() + absl::Seconds(10))),
            static_cast<int>(absl::StatusCode::kPermissionDenied));
  std::printf("as uid 65534: %s\n", line->c_str());

  ASSERT_TRUE(daemon_->GrantUid("private", 65534, v1::GRANT_ROLE_PRODUCE).ok());
  Child allowed = SpawnPeer({"attach", "--channel", "private", "--role", "producer"}, 65534);
  EXPECT_EQ(ExitCode(allowed.Wait(absl::Now() + absl::Seconds(10))), 0)
      << allowed.RestOfOutput(absl::Now() + absl::Seconds(1));
}

TEST_F(ClientIntegrationTest, InterruptEndsABlockedRead) {
  ASSERT_TRUE(daemon_->CreateChannel("quiet", kStream).ok());
  auto consumer = Consumer::Attach("quiet", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::thread interrupter([&] {
    absl::SleepFor(absl::Milliseconds(100));
    consumer->Interrupt();
  });
  const absl::Time start = absl::Now();
  auto frame = consumer->Read(start + absl::Seconds(10));
  interrupter.join();
  EXPECT_TRUE(absl::IsCancelled(frame.status())) << frame.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Once only: the next read waits again.
  auto next = consumer->Read(absl::Now() + absl::Milliseconds(20));
  EXPECT_TRUE(absl::IsDeadlineExceeded(next.status())) << next.status();
}

TEST_F(ClientIntegrationTest, DaemonShutdownEndsTheAttachment) {
  ASSERT_TRUE(daemon_->CreateChannel("shutdown", kStream).ok());
  auto consumer = Consumer::Attach("shutdown", ConsumerOptions());
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  auto producer = Producer::Attach("shutdown", Options());
  ASSERT_TRUE(producer.ok()) << producer.status();
  ASSERT_EQ(producer->Write("last words"), WriteResult::kOk);
  daemon_.reset();  // SIGTERM: the daemon says goodbye and closes every lane
  auto frame = consumer->Read(absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(frame.ok()) << "a frame committed before the shutdown is lost: " << frame.status();
  EXPECT_EQ(frame->data, "last words");
  auto end = consumer->Read(absl::Now() + absl::Seconds(5));
  EXPECT_TRUE(absl::IsUnavailable(end.status())) << end.status();
  EXPECT_FALSE(consumer->attach_status().ok());
  // The ring is far from full, yet the producer learns within a few writes.
  WriteResult w = WriteResult::kOk;
  for (int i = 0; i < 100 && w == WriteResult::kOk; ++i) {
    w = producer->Write("more", absl::Now() + absl::Seconds(5));
  }
  EXPECT_EQ(w, WriteResult::kClosed);
  EXPECT_TRUE(absl::IsUnavailable(producer->status())) << producer->status();
}

TEST_F(ClientIntegrationTest, CApiFromC) {
  ASSERT_TRUE(daemon_->CreateChannel("cabi", kStream).ok());
  char message[256] = "";
  EXPECT_EQ(shmlane_c_api_scenario(daemon_->dir().c_str(), "cabi", message, sizeof(message)), 0)
      << message;
}

TEST(ClientNoDaemonTest, UnavailableWithAdvice) {
  auto dir = shmlane::testing::TempDir::Make();
  ASSERT_TRUE(dir.ok());
  AttachOptions options;
  options.runtime_dir = dir->path();
  auto producer = Producer::Attach("anything", options);
  ASSERT_TRUE(absl::IsUnavailable(producer.status())) << producer.status();
  EXPECT_THAT(std::string(producer.status().message()),
              HasSubstr("shmlaned is not running at " + dir->path() + "/attach.sock"));
  EXPECT_THAT(std::string(producer.status().message()), HasSubstr("make run"));
  Consumer::Options copts;
  copts.runtime_dir = dir->path();
  EXPECT_TRUE(absl::IsUnavailable(Consumer::Attach("anything", copts).status()));
  EXPECT_TRUE(absl::IsUnavailable(Client::Attach("anything", options).status()));
}

TEST(ClientNoDaemonTest, RuntimeDirResolution) {
  ASSERT_EQ(::setenv("SHMLANE_RUNTIME_DIR", "/x/explicit-env", 1), 0);
  EXPECT_EQ(ResolveRuntimeDir("/given"), "/given");
  EXPECT_EQ(ResolveRuntimeDir(), "/x/explicit-env");
  EXPECT_EQ(AttachSocketPath(), "/x/explicit-env/attach.sock");
  ASSERT_EQ(::unsetenv("SHMLANE_RUNTIME_DIR"), 0);
  ASSERT_EQ(::setenv("XDG_RUNTIME_DIR", "/run/user/7", 1), 0);
  EXPECT_EQ(ResolveRuntimeDir(), "/run/user/7/shmlane");
  ASSERT_EQ(::unsetenv("XDG_RUNTIME_DIR"), 0);
  EXPECT_EQ(ResolveRuntimeDir(), "/run/shmlane");
}

}  // namespace
}  // namespace shmlane::client
