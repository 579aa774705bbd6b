// The attach socket against hostile and unusual clients, permissions, quotas,
// lane wiring, peer death and forced deletion, with a real shmlaned.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataplane/doorbell.h"
#include "dataplane/lane.h"
#include "dataplane/segment.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

namespace v1 = ::shmlane::v1;
using dataplane::ReadResult;

// Pidfds in a packet: the lanes of one peer share one (SO_PEERPIDFD kernels).
size_t DistinctPidfds(const google::protobuf::RepeatedPtrField<v1::LaneDescription>& lanes) {
  std::set<uint32_t> indices;
  for (const v1::LaneDescription& lane : lanes) {
    if (lane.has_peer_pidfd()) indices.insert(lane.peer_pidfd_fd_index());
  }
  return indices.size();
}
using dataplane::WriteResult;

std::shared_ptr<const dataplane::Doorbell> Bell(const Packet& p, uint32_t index) {
  auto bell = dataplane::Doorbell::Adopt(DupFd(p, index));
  if (!bell.ok()) return nullptr;
  return std::make_shared<const dataplane::Doorbell>(*std::move(bell));
}

// Maps lane `lane` of packet `p` as producer or consumer; `own` is this
// attachment's doorbell (from its AttachReply).
template <typename Side>
absl::StatusOr<Side> MapLane(const Packet& p, const v1::LaneDescription& lane,
                             std::shared_ptr<const dataplane::Doorbell> own) {
  auto segment =
      dataplane::Segment::Map(DupFd(p, lane.segment_fd_index()), dataplane::Access::kReadWrite);
  if (!segment.ok()) return segment.status();
  return Side::Attach(*std::move(segment),
                      dataplane::LaneBells{std::move(own), Bell(p, lane.peer_doorbell_fd_index())});
}

std::span<const std::byte> Bytes(const std::string& s) { return std::as_bytes(std::span(s)); }

// The producer learns of a close when it next finds the ring full (the hot
// path does not read the closed flags on every write): write until the first
// non-kOk result.
WriteResult WriteUntilRefused(dataplane::Producer& writer) {
  const std::string frame(256, 'f');
  for (int i = 0; i < 100000; ++i) {
    const WriteResult r = writer.TryWrite(Bytes(frame));
    if (r != WriteResult::kOk) return r;
  }
  return WriteResult::kOk;
}

class AttachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.Start({"--handshake-timeout", "300ms"}).ok()) << daemon_.stderr_text();
    ASSERT_EQ(Ctl({"channels", "create", "s", "--ring-bytes", "64KiB"}).exit_code, 0);
  }

  CommandResult Ctl(std::vector<std::string> args) { return daemon_.Ctl(std::move(args)); }

  // Sends `bytes` as the first packet and expects an error reply then EOF.
  void ExpectRejected(const std::string& bytes, int code, const std::string& text) {
    auto conn = RawAttach::Connect(daemon_.attach_socket());
    ASSERT_TRUE(conn.ok()) << conn.status();
    ASSERT_TRUE(conn->SendBytes(bytes).ok());
    auto reply = conn->Receive();
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->message.attach_reply().code(), code) << reply->message.DebugString();
    EXPECT_TRUE(absl::StrContains(reply->message.attach_reply().message(), text))
        << reply->message.attach_reply().message();
    EXPECT_TRUE(conn->WaitClosed(absl::Seconds(2)));
    ExpectValidAttachWorks();
  }

  void ExpectValidAttachWorks() {
    auto ok = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(ok->reply.message.attach_reply().code(), 0)
        << ok->reply.message.attach_reply().message();
    EXPECT_EQ(ok->reply.message.attach_reply().lanes_size(), 1);
  }

  TestDaemon daemon_;
};

TEST_F(AttachTest, GarbageBytesGetAnErrorThenAValidAttachSucceeds) {
  constexpr char kGarbage[] = "\xff\xff\xff\xff garbage \x01\x02";
  ExpectRejected(std::string(kGarbage, sizeof(kGarbage) - 1), 3,
                 "not a serialized shmlane.v1.AttachMessage");
}

TEST_F(AttachTest, OversizedPacketIsRejected) {
  ExpectRejected(std::string(100000, 'a'), 3, "exceeds the limit of 65536 bytes");
}

TEST_F(AttachTest, TruncatedProtobufIsRejected) {
  v1::AttachMessage m;
  m.mutable_attach_request()->set_protocol_version(1);
  m.mutable_attach_request()->set_channel("s");
  m.mutable_attach_request()->set_client_name(std::string(40, 'n'));
  const std::string bytes = m.SerializeAsString();
  ExpectRejected(bytes.substr(0, bytes.size() - 10), 3, "not a serialized");
}

TEST_F(AttachTest, WrongProtocolVersionIsRejected) {
  v1::AttachMessage m;
  m.mutable_attach_request()->set_protocol_version(2);
  m.mutable_attach_request()->set_channel("s");
  m.mutable_attach_request()->set_role(v1::ROLE_PRODUCER);
  ExpectRejected(m.SerializeAsString(), 9, "version 2 is not supported");
}

TEST_F(AttachTest, FirstMessageMustBeAnAttachRequest) {
  v1::AttachMessage m;
  m.mutable_detach();
  ExpectRejected(m.SerializeAsString(), 3, "must be an AttachRequest");
}

TEST_F(AttachTest, UnknownChannelAndWrongRoleAreRejected) {
  auto conn = AttachTo(daemon_.attach_socket(), "nope", v1::ROLE_PRODUCER);
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(conn->reply.message.attach_reply().code(), 5);
  EXPECT_TRUE(absl::StrContains(conn->reply.message.attach_reply().message(),
                                "shmlanectl channels create nope"));
  conn = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_SERVER);
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(conn->reply.message.attach_reply().code(), 3);
  ExpectValidAttachWorks();
}

TEST_F(AttachTest, SilentClientIsDroppedAfterTheHandshakeTimeout) {
  auto conn = RawAttach::Connect(daemon_.attach_socket());
  ASSERT_TRUE(conn.ok());
  const absl::Time start = absl::Now();
  auto reply = conn->Receive(absl::Seconds(3));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->message.attach_reply().code(), 4);  // DEADLINE_EXCEEDED
  EXPECT_TRUE(conn->WaitClosed(absl::Seconds(1)));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(2));
  ExpectValidAttachWorks();
}

TEST_F(AttachTest, ThousandSimultaneousConnectionsThenAValidAttach) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 1200) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4096);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  std::vector<RawAttach> conns;
  for (int i = 0; i < 1000; ++i) {
    auto c = RawAttach::Connect(daemon_.attach_socket());
    ASSERT_TRUE(c.ok()) << i << ": " << c.status();
    conns.push_back(*std::move(c));
  }
  // Half of them send garbage, the rest stay silent.
  for (size_t i = 0; i < conns.size(); i += 2) (void)conns[i].SendBytes("junk");
  ExpectValidAttachWorks();
  conns.clear();
  ExpectValidAttachWorks();
}

TEST(AttachFdExhaustionTest, DaemonOutOfFdsShedsConnectionsAndRecovers) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start({"--handshake-timeout", "2s"}, /*max_fds=*/128).ok())
      << daemon.stderr_text();
  ASSERT_EQ(daemon.Ctl({"channels", "create", "s"}).exit_code, 0);
  std::vector<RawAttach> conns;
  for (int i = 0; i < 300; ++i) {
    auto c = RawAttach::Connect(daemon.attach_socket());
    if (c.ok()) conns.push_back(*std::move(c));
  }
  // Some were accepted and held (handshake pending), the rest were accepted
  // and closed at once because the daemon ran out of fds.
  absl::SleepFor(absl::Milliseconds(300));
  size_t shed = 0;
  for (RawAttach& c : conns) shed += c.WaitClosed(absl::Milliseconds(1)) ? 1 : 0;
  EXPECT_GT(shed, 0u);
  EXPECT_LT(shed, conns.size());
  conns.clear();
  absl::SleepFor(absl::Milliseconds(100));
  auto ok = AttachTo(daemon.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->reply.message.attach_reply().code(), 0)
      << ok->reply.message.attach_reply().message();
  auto body = HttpGet(daemon.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_GT(MetricValue(*body, "shmlane_attach_total{result=\"overload\"}").value_or(0), 0);
}

// Runs in a child as uid 65534: attaches as producer to channel `channel` and
// returns the reply code (0 = attached).
int AttachAsNobody(const std::string& socket_and_channel) {
  const size_t bar = socket_and_channel.find('|');
  auto a = AttachTo(socket_and_channel.substr(0, bar), socket_and_channel.substr(bar + 1),
                    v1::ROLE_PRODUCER);
  if (!a.ok()) return 200;
  const v1::AttachReply& reply = a->reply.message.attach_reply();
  if (reply.code() == 7 &&
      !absl::StrContains(reply.message(), "uid 65534 may not attach to channel \"s\"")) {
    return 201;
  }
  if (reply.code() == 7 &&
      !absl::StrContains(reply.message(), "shmlanectl grants add s --uid 65534 --role produce")) {
    return 202;
  }
  return reply.code();
}

TEST_F(AttachTest, OtherUidIsDeniedUntilGranted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to uid 65534";
  const std::string arg = daemon_.attach_socket() + "|s";
  EXPECT_EQ(RunAsUser(65534, 65534, AttachAsNobody, arg), 7);  // PERMISSION_DENIED
  ASSERT_EQ(Ctl({"grants", "add", "s", "--uid", "65534", "--role", "consume"}).exit_code, 0);
  EXPECT_EQ(RunAsUser(65534, 65534, AttachAsNobody, arg), 7);  // wrong role
  ASSERT_EQ(Ctl({"grants", "add", "s", "--gid", "65534", "--role", "produce"}).exit_code, 0);
  EXPECT_EQ(RunAsUser(65534, 65534, AttachAsNobody, arg), 0);
  ASSERT_EQ(Ctl({"grants", "remove", "s", "--gid", "65534", "--role", "produce"}).exit_code, 0);
  ASSERT_EQ(Ctl({"grants", "add", "s", "--uid", "65534", "--role", "admin"}).exit_code, 0);
  EXPECT_EQ(RunAsUser(65534, 65534, AttachAsNobody, arg), 0);
}

TEST_F(AttachTest, QuotaExceededIsResourceExhausted) {
  const std::string uid = absl::StrCat(::geteuid());
  ASSERT_EQ(Ctl({"quota", "set", "--uid", uid, "--max-attachments", "2"}).exit_code, 0);
  auto a = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  auto b = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  auto c = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->reply.message.attach_reply().code(), 0);
  EXPECT_EQ(b->reply.message.attach_reply().code(), 0);
  EXPECT_EQ(c->reply.message.attach_reply().code(), 8);  // RESOURCE_EXHAUSTED
  EXPECT_TRUE(absl::StrContains(c->reply.message.attach_reply().message(), "max_attachments"));
  CommandResult q = Ctl({"--json", "quota", "get", "--uid", uid});
  EXPECT_TRUE(absl::StrContains(q.out, "\"attachments\": 2")) << q.out;
  // Detaching releases the quota.
  v1::AttachMessage detach;
  detach.mutable_detach();
  ASSERT_TRUE(a->conn.Send(detach).ok());
  EXPECT_TRUE(a->conn.WaitClosed(absl::Seconds(2)));
  auto d = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->reply.message.attach_reply().code(), 0);
  // Shared-memory quota: one 64 KiB lane needs 68 KiB.
  ASSERT_EQ(
      Ctl({"quota", "set", "--uid", uid, "--max-attachments", "100", "--max-shm-bytes", "150000"})
          .exit_code,
      0);
  auto e = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->reply.message.attach_reply().code(), 8);
  EXPECT_TRUE(absl::StrContains(e->reply.message.attach_reply().message(), "max_shm_bytes"));
  auto body = HttpGet(daemon_.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(MetricValue(*body, "shmlane_quota_rejections_total"), 2);
  EXPECT_EQ(MetricValue(*body, "shmlane_attach_total{result=\"resource_exhausted\"}"), 2);
}

TEST_F(AttachTest, ConsumerGetsLanesAndSeesPeerDeathAfterDrainingFrames) {
  auto consumer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_CONSUMER, "sink");
  ASSERT_TRUE(consumer.ok());
  const v1::AttachReply& creply = consumer->reply.message.attach_reply();
  ASSERT_EQ(creply.code(), 0) << creply.message();
  EXPECT_EQ(creply.lanes_size(), 0);
  auto consumer_bell = Bell(consumer->reply, creply.doorbell_fd_index());

  auto second = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_CONSUMER);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->reply.message.attach_reply().code(), 9);  // FAILED_PRECONDITION
  EXPECT_TRUE(
      absl::StrContains(second->reply.message.attach_reply().message(), "already has a consumer"));

  auto producer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER, "source");
  ASSERT_TRUE(producer.ok());
  const v1::AttachReply& preply = producer->reply.message.attach_reply();
  ASSERT_EQ(preply.code(), 0);
  ASSERT_EQ(preply.lanes_size(), 1);
  EXPECT_EQ(preply.lanes(0).direction(), v1::LANE_DIRECTION_WRITE);
  EXPECT_EQ(preply.lanes(0).peer_name(), "sink");
  auto writer = MapLane<dataplane::Producer>(producer->reply, preply.lanes(0),
                                             Bell(producer->reply, preply.doorbell_fd_index()));
  ASSERT_TRUE(writer.ok()) << writer.status();

  auto added = consumer->conn.Receive();
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(added->message.has_lane_added());
  ASSERT_EQ(added->message.lane_added().lanes_size(), 1);
  const v1::LaneDescription& lane = added->message.lane_added().lanes(0);
  EXPECT_EQ(lane.direction(), v1::LANE_DIRECTION_READ);
  EXPECT_EQ(lane.lane_id(), preply.lanes(0).lane_id());
  EXPECT_EQ(lane.peer_name(), "source");
  auto reader = MapLane<dataplane::Consumer>(*added, lane, consumer_bell);
  ASSERT_TRUE(reader.ok()) << reader.status();

  for (const char* f : {"one", "two", "three"}) {
    ASSERT_EQ(writer->TryWrite(Bytes(f)), WriteResult::kOk);
  }
  // The producer process "dies": its connection hangs up without Detach.
  producer->conn.Close();
  auto removed = consumer->conn.Receive();
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_TRUE(removed->message.has_lane_removed()) << removed->message.DebugString();
  EXPECT_EQ(removed->message.lane_removed().lane_id(), lane.lane_id());
  // Frames committed before the death are still delivered, then "closed".
  char buf[64];
  size_t n = 0;
  for (const char* f : {"one", "two", "three"}) {
    ASSERT_EQ(
        reader->Read(std::as_writable_bytes(std::span(buf)), &n, absl::Now() + absl::Seconds(1)),
        ReadResult::kOk);
    EXPECT_EQ(std::string(buf, n), f);
  }
  EXPECT_EQ(
      reader->Read(std::as_writable_bytes(std::span(buf)), &n, absl::Now() + absl::Seconds(1)),
      ReadResult::kClosed);
  auto snap = dataplane::Observe(reader->segment());
  ASSERT_TRUE(snap.ok());
  EXPECT_NE(snap->supervisor_closed_by & dataplane::kClosedProducerGone, 0u);
}

TEST_F(AttachTest, ConsumerDeathClosesProducersLanes) {
  auto producer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(producer.ok());
  const v1::AttachReply& preply = producer->reply.message.attach_reply();
  ASSERT_EQ(preply.code(), 0);
  auto writer = MapLane<dataplane::Producer>(producer->reply, preply.lanes(0),
                                             Bell(producer->reply, preply.doorbell_fd_index()));
  ASSERT_TRUE(writer.ok());
  auto consumer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_CONSUMER);
  ASSERT_TRUE(consumer.ok());
  // An existing producer's lane comes in the consumer's AttachReply.
  EXPECT_EQ(consumer->reply.message.attach_reply().lanes_size(), 1);
  consumer->conn.Close();
  EXPECT_TRUE(producer->conn.WaitClosed(absl::Seconds(2)));
  EXPECT_TRUE(writer->PeerClosed());
  EXPECT_EQ(WriteUntilRefused(*writer), WriteResult::kClosed);
}

TEST_F(AttachTest, ForcedDeleteClosesAttachedLanes) {
  auto producer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  auto consumer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_CONSUMER);
  ASSERT_TRUE(producer.ok() && consumer.ok());
  const v1::AttachReply& preply = producer->reply.message.attach_reply();
  const v1::AttachReply& creply = consumer->reply.message.attach_reply();
  ASSERT_EQ(preply.code(), 0);
  ASSERT_EQ(creply.code(), 0);
  ASSERT_EQ(creply.lanes_size(), 1);
  auto writer = MapLane<dataplane::Producer>(producer->reply, preply.lanes(0),
                                             Bell(producer->reply, preply.doorbell_fd_index()));
  auto reader = MapLane<dataplane::Consumer>(consumer->reply, creply.lanes(0),
                                             Bell(consumer->reply, creply.doorbell_fd_index()));
  ASSERT_TRUE(writer.ok() && reader.ok());

  CommandResult r = Ctl({"channels", "delete", "s"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED_PRECONDITION")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--force")) << r.err;

  r = Ctl({"channels", "delete", "s", "--force"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  char buf[16];
  size_t n = 0;
  // A consumer parked on the channel doorbell wakes at once with "closed".
  const absl::Time start = absl::Now();
  EXPECT_EQ(
      reader->Read(std::as_writable_bytes(std::span(buf)), &n, absl::Now() + absl::Seconds(2)),
      ReadResult::kClosed);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_TRUE(writer->PeerClosed());
  EXPECT_EQ(WriteUntilRefused(*writer), WriteResult::kClosed);
  for (RawAttach* conn : {&producer->conn, &consumer->conn}) {
    bool goodbye = false;
    while (true) {
      auto p = conn->Receive(absl::Seconds(2));
      if (!p.ok()) break;
      if (p->message.has_goodbye()) {
        goodbye = true;
        EXPECT_TRUE(absl::StrContains(p->message.goodbye().reason(), "deleted"));
      }
    }
    EXPECT_TRUE(goodbye);
  }
  EXPECT_EQ(Ctl({"channels", "get", "s"}).exit_code, 1);
}

TEST_F(AttachTest, SegmentsAreSealedMemfdsAndDevShmGainsNothing) {
  const size_t before = CountDevShm();
  auto producer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER);
  ASSERT_TRUE(producer.ok());
  const v1::AttachReply& reply = producer->reply.message.attach_reply();
  ASSERT_EQ(reply.code(), 0);
  // Reply fds: own doorbell, then segment + peer doorbell per lane.
  ASSERT_EQ(producer->reply.fds.size(), 3u);
  EXPECT_EQ(reply.doorbell_fd_index(), 0u);
  EXPECT_EQ(reply.lanes(0).segment_fd_index(), 1u);
  EXPECT_EQ(reply.lanes(0).peer_doorbell_fd_index(), 2u);
  const int seg = producer->reply.fds[1].get();
  const int seals = ::fcntl(seg, F_GET_SEALS);
  EXPECT_NE(seals & F_SEAL_SHRINK, 0);
  EXPECT_NE(seals & F_SEAL_GROW, 0);
  EXPECT_NE(seals & F_SEAL_SEAL, 0);
  EXPECT_NE(::ftruncate(seg, 0), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(seg, 1 << 30), 0);
  EXPECT_EQ(CountDevShm(), before);
}

TEST_F(AttachTest, RequestReplyRoundTrip) {
  ASSERT_EQ(Ctl({"channels", "create", "rpc", "--pattern", "request-reply"}).exit_code, 0);
  auto server = AttachTo(daemon_.attach_socket(), "rpc", v1::ROLE_SERVER, "srv");
  ASSERT_TRUE(server.ok());
  const v1::AttachReply& sreply = server->reply.message.attach_reply();
  ASSERT_EQ(sreply.code(), 0) << sreply.message();
  auto server_bell = Bell(server->reply, sreply.doorbell_fd_index());
  auto client = AttachTo(daemon_.attach_socket(), "rpc", v1::ROLE_CLIENT, "cli");
  ASSERT_TRUE(client.ok());
  const v1::AttachReply& creply = client->reply.message.attach_reply();
  ASSERT_EQ(creply.code(), 0) << creply.message();
  ASSERT_EQ(creply.lanes_size(), 2);
  EXPECT_EQ(creply.lanes(0).direction(), v1::LANE_DIRECTION_WRITE);
  EXPECT_EQ(creply.lanes(1).direction(), v1::LANE_DIRECTION_READ);
  auto client_bell = Bell(client->reply, creply.doorbell_fd_index());
  auto request_writer = MapLane<dataplane::Producer>(client->reply, creply.lanes(0), client_bell);
  auto reply_reader = MapLane<dataplane::Consumer>(client->reply, creply.lanes(1), client_bell);
  ASSERT_TRUE(request_writer.ok() && reply_reader.ok());

  auto added = server->conn.Receive();
  ASSERT_TRUE(added.ok() && added->message.has_lane_added());
  ASSERT_EQ(added->message.lane_added().lanes_size(), 2);
  const auto& req_lane = added->message.lane_added().lanes(0);
  const auto& rep_lane = added->message.lane_added().lanes(1);
  EXPECT_EQ(req_lane.direction(), v1::LANE_DIRECTION_READ);
  EXPECT_EQ(rep_lane.direction(), v1::LANE_DIRECTION_WRITE);
  EXPECT_EQ(req_lane.peer_name(), "cli");
  auto request_reader = MapLane<dataplane::Consumer>(*added, req_lane, server_bell);
  auto reply_writer = MapLane<dataplane::Producer>(*added, rep_lane, server_bell);
  ASSERT_TRUE(request_reader.ok() && reply_writer.ok());

  char buf[64];
  size_t n = 0;
  ASSERT_EQ(request_writer->TryWrite(Bytes("ping")), WriteResult::kOk);
  ASSERT_EQ(request_reader->Read(std::as_writable_bytes(std::span(buf)), &n,
                                 absl::Now() + absl::Seconds(1)),
            ReadResult::kOk);
  EXPECT_EQ(std::string(buf, n), "ping");
  ASSERT_EQ(reply_writer->TryWrite(Bytes("pong")), WriteResult::kOk);
  ASSERT_EQ(reply_reader->Read(std::as_writable_bytes(std::span(buf)), &n,
                               absl::Now() + absl::Seconds(1)),
            ReadResult::kOk);
  EXPECT_EQ(std::string(buf, n), "pong");

  CommandResult stats = Ctl({"--json", "stats", "rpc", "--lanes"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_TRUE(absl::StrContains(stats.out, "\"frames_sent\": \"2\"")) << stats.out;
}

TEST_F(AttachTest, ConsumerWithManyProducersGetsLanesAcrossPackets) {
  std::vector<Attached> producers;
  for (int i = 0; i < 40; ++i) {
    auto p = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER, absl::StrCat("p", i));
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p->reply.message.attach_reply().code(), 0);
    producers.push_back(*std::move(p));
  }
  auto consumer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_CONSUMER);
  ASSERT_TRUE(consumer.ok());
  const v1::AttachReply& reply = consumer->reply.message.attach_reply();
  ASSERT_EQ(reply.code(), 0);
  EXPECT_LE(consumer->reply.fds.size(), 64u);
  EXPECT_GT(reply.lanes_following(), 0u);
  size_t lanes = reply.lanes_size();
  while (lanes < 40) {
    auto more = consumer->conn.Receive();
    ASSERT_TRUE(more.ok()) << more.status();
    ASSERT_TRUE(more->message.has_lane_added());
    // Segment, peer bell, own bell per lane, and each peer's pidfd once.
    EXPECT_EQ(more->fds.size(), 3u * more->message.lane_added().lanes_size() +
                                    DistinctPidfds(more->message.lane_added().lanes()));
    lanes += more->message.lane_added().lanes_size();
  }
  EXPECT_EQ(lanes, 40u);
  EXPECT_EQ(reply.lanes_size() + reply.lanes_following(), 40u);
}

// A busy consumer reads its attach socket only now and then. While it does
// not, the daemon must queue LaneAdded/LaneRemoved (with their fds) instead
// of disconnecting it, and deliver them in order once it reads.
TEST_F(AttachTest, ConsumerThatDoesNotReadGetsEveryLaneChangeInOrderLater) {
  constexpr int kProducers = 600;
  // This process holds one connection per producer plus the fds of what the
  // consumer receives.
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 4096) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4096);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < kProducers + 512) GTEST_SKIP() << "RLIMIT_NOFILE hard limit too low";
  const std::string uid = absl::StrCat(::geteuid());
  ASSERT_EQ(Ctl({"quota", "set", "--uid", uid, "--max-attachments", "2000"}).exit_code, 0);
  ASSERT_EQ(Ctl({"channels", "create", "many", "--ring-bytes", "4KiB", "--max-producers", "1000"})
                .exit_code,
            0);
  auto consumer = AttachTo(daemon_.attach_socket(), "many", v1::ROLE_CONSUMER, "sink");
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  ASSERT_EQ(consumer->reply.message.attach_reply().code(), 0)
      << consumer->reply.message.attach_reply().message();

  // The consumer does not read while every producer attaches and detaches:
  // far more packets than its socket buffer holds.
  std::vector<uint64_t> lane_ids;
  std::vector<RawAttach> producers;
  for (int i = 0; i < kProducers; ++i) {
    auto p = AttachTo(daemon_.attach_socket(), "many", v1::ROLE_PRODUCER, absl::StrCat("p", i));
    ASSERT_TRUE(p.ok()) << i << ": " << p.status();
    const v1::AttachReply& reply = p->reply.message.attach_reply();
    ASSERT_EQ(reply.code(), 0) << i << ": " << reply.message();
    ASSERT_EQ(reply.lanes_size(), 1);
    lane_ids.push_back(reply.lanes(0).lane_id());
    producers.push_back(std::move(p->conn));  // the reply's fds close here
  }
  v1::AttachMessage detach;
  detach.mutable_detach();
  for (size_t i = 0; i < producers.size(); ++i) {
    // Half detach cleanly, half "die".
    if (i % 2 == 0) {
      ASSERT_TRUE(producers[i].Send(detach).ok());
    } else {
      producers[i].Close();
    }
  }
  for (size_t i = 0; i < producers.size(); i += 2) {
    EXPECT_TRUE(producers[i].WaitClosed(absl::Seconds(5)));
  }
  producers.clear();

  // Now it reads: every LaneAdded in attach order, with working fds, and a
  // LaneRemoved for each lane, never before its LaneAdded.
  std::vector<uint64_t> added;
  std::set<uint64_t> live;
  std::set<uint64_t> removed;
  while (removed.size() < lane_ids.size()) {
    auto packet = consumer->conn.Receive(absl::Seconds(5));
    ASSERT_TRUE(packet.ok()) << packet.status() << " after " << added.size() << " added, "
                             << removed.size() << " removed";
    const v1::AttachMessage& m = packet->message;
    if (m.has_lane_added()) {
      // Segment, peer bell, own bell per lane, and each peer's pidfd once.
      ASSERT_EQ(packet->fds.size(),
                3u * m.lane_added().lanes_size() + DistinctPidfds(m.lane_added().lanes()));
      for (const v1::LaneDescription& lane : m.lane_added().lanes()) {
        EXPECT_EQ(lane.direction(), v1::LANE_DIRECTION_READ);
        auto segment = dataplane::Segment::Map(DupFd(*packet, lane.segment_fd_index()),
                                               dataplane::Access::kReadOnly);
        ASSERT_TRUE(segment.ok()) << "lane " << lane.lane_id() << ": " << segment.status();
        auto snap = dataplane::Observe(*segment);
        ASSERT_TRUE(snap.ok()) << snap.status();
        EXPECT_EQ(snap->lane_id, lane.lane_id());
        EXPECT_NE(Bell(*packet, lane.peer_doorbell_fd_index()), nullptr);
        added.push_back(lane.lane_id());
        live.insert(lane.lane_id());
      }
    } else if (m.has_lane_removed()) {
      const uint64_t id = m.lane_removed().lane_id();
      ASSERT_EQ(live.erase(id), 1u) << "LaneRemoved " << id << " before its LaneAdded";
      ASSERT_TRUE(removed.insert(id).second) << "LaneRemoved " << id << " twice";
    } else {
      FAIL() << "unexpected " << m.DebugString();
    }
  }
  EXPECT_EQ(added, lane_ids);
  EXPECT_TRUE(live.empty());

  // Still attached: nothing more is queued, and a new producer is announced.
  auto extra = consumer->conn.Receive(absl::Milliseconds(100));
  EXPECT_TRUE(absl::IsDeadlineExceeded(extra.status())) << extra.status();
  auto late = AttachTo(daemon_.attach_socket(), "many", v1::ROLE_PRODUCER, "late");
  ASSERT_TRUE(late.ok()) << late.status();
  ASSERT_EQ(late->reply.message.attach_reply().code(), 0);
  auto announced = consumer->conn.Receive(absl::Seconds(2));
  ASSERT_TRUE(announced.ok()) << announced.status();
  ASSERT_TRUE(announced->message.has_lane_added()) << announced->message.DebugString();
  EXPECT_EQ(announced->message.lane_added().lanes(0).lane_id(),
            late->reply.message.attach_reply().lanes(0).lane_id());
  auto body = HttpGet(daemon_.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(MetricValue(*body, "shmlane_attach_send_overflows_total"), 0);
}

// SIGTERM stays fast when a consumer has packets queued that it never reads:
// the queue gets a short bound, then its socket is shut down.
TEST(AttachShutdownTest, ConsumerThatDoesNotReadDoesNotDelayShutdown) {
  constexpr int kProducers = 400;
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 4096) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4096);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < kProducers + 512) GTEST_SKIP() << "RLIMIT_NOFILE hard limit too low";
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.stderr_text();
  const std::string uid = absl::StrCat(::geteuid());
  ASSERT_EQ(daemon.Ctl({"quota", "set", "--uid", uid, "--max-attachments", "2000"}).exit_code, 0);
  ASSERT_EQ(
      daemon.Ctl({"channels", "create", "many", "--ring-bytes", "4KiB", "--max-producers", "1000"})
          .exit_code,
      0);
  auto consumer = AttachTo(daemon.attach_socket(), "many", v1::ROLE_CONSUMER, "sink");
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  ASSERT_EQ(consumer->reply.message.attach_reply().code(), 0);
  std::vector<RawAttach> producers;
  for (int i = 0; i < kProducers; ++i) {
    auto p = AttachTo(daemon.attach_socket(), "many", v1::ROLE_PRODUCER);
    ASSERT_TRUE(p.ok()) << i << ": " << p.status();
    ASSERT_EQ(p->reply.message.attach_reply().code(), 0);
    producers.push_back(std::move(p->conn));
  }
  const absl::Time start = absl::Now();
  auto code = daemon.Stop(SIGTERM, absl::Seconds(1));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << daemon.stderr_text();
  EXPECT_EQ(*code, 0) << daemon.stderr_text();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  // Producers read nothing either, but their queues were short: LaneRemoved
  // then Goodbye.
  auto removed = producers.back().Receive(absl::Seconds(1));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_TRUE(removed->message.has_lane_removed()) << removed->message.DebugString();
  auto bye = producers.back().Receive(absl::Seconds(1));
  ASSERT_TRUE(bye.ok()) << bye.status();
  EXPECT_TRUE(bye->message.has_goodbye()) << bye->message.DebugString();
  // The consumer finds what the kernel held, then the end.
  EXPECT_TRUE(consumer->conn.WaitClosed(absl::Seconds(5)));
}

// A consumer that never reads while producers keep coming and going is
// disconnected once its queue passes the bound, and that is counted.
TEST(AttachOverflowTest, ConsumerWhoseQueueOverflowsIsDisconnectedAndCounted) {
  // The daemon inherits this hard limit and holds 4 fds per queued LaneAdded
  // (segment, two doorbells, the producer's pidfd where the kernel has
  // SO_PEERPIDFD).
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_max < 20000) GTEST_SKIP() << "needs a hard RLIMIT_NOFILE of 20000";
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.stderr_text();
  // Whichever bound comes first: the per-connection message bound (2
  // packets per cycle), or the daemon-wide fd ceiling (at most half the
  // daemon's fd limit; 3 fds per queued LaneAdded since every lane has its
  // own consumer-side doorbell, and a 4th, the producer's pidfd, with
  // SO_PEERPIDFD).
  const int bound =
      std::min(8000, static_cast<int>(std::min<rlim_t>(lim.rlim_max, 1 << 20) / 2 / 4) - 200);
  const std::string uid = absl::StrCat(::geteuid());
  ASSERT_EQ(daemon.Ctl({"quota", "set", "--uid", uid, "--max-attachments", "2000"}).exit_code, 0);
  ASSERT_EQ(daemon.Ctl({"channels", "create", "churn", "--ring-bytes", "4KiB"}).exit_code, 0);
  auto consumer = AttachTo(daemon.attach_socket(), "churn", v1::ROLE_CONSUMER, "sink");
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  ASSERT_EQ(consumer->reply.message.attach_reply().code(), 0);
  // Each cycle queues a LaneAdded and a LaneRemoved: 2 packets. The consumer
  // is cut off when more than kMaxOutboundMessages (16384) are waiting, on
  // top of the few hundred the kernel buffer takes.
  bool dropped = false;
  for (int i = 0; i < 12000 && !dropped; ++i) {
    auto p = AttachTo(daemon.attach_socket(), "churn", v1::ROLE_PRODUCER);
    ASSERT_TRUE(p.ok()) << i << ": " << p.status();
    const v1::AttachReply& reply = p->reply.message.attach_reply();
    // Once the consumer is gone the producer is refused or said Goodbye to.
    if (reply.code() != 0) {
      std::printf("cycle %d: attach refused: %s\n", i, reply.message().c_str());
      dropped = true;
      break;
    }
    p->conn.Close();
    if (i % 500 == 499) {
      auto body = HttpGet(daemon.metrics_port(), "/metrics");
      ASSERT_TRUE(body.ok()) << body.status();
      dropped = MetricValue(*body, "shmlane_attach_send_overflows_total").value_or(0) > 0;
      // Not before the bound: 2 packets per cycle.
      if (dropped) {
        EXPECT_GT(i, bound) << daemon.stderr_text();
      }
    }
  }
  EXPECT_TRUE(dropped);
  auto body = HttpGet(daemon.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(MetricValue(*body, "shmlane_attach_send_overflows_total"), 1);
  // It reads what the kernel held, then the end (its queue was dropped).
  EXPECT_TRUE(consumer->conn.WaitClosed(absl::Seconds(5)));
}

TEST_F(AttachTest, WatchReportsAttachBackpressureAndPeerDeath) {
  CommandResult watch;
  std::thread watcher([&] {
    watch = RunCommand({SHMLANECTL_PATH, "--runtime-dir", daemon_.runtime_dir(), "--json", "watch",
                        "--channel", "s", "--count", "4"},
                       absl::Seconds(15));
  });
  absl::SleepFor(absl::Milliseconds(300));  // let the stream open
  auto producer = AttachTo(daemon_.attach_socket(), "s", v1::ROLE_PRODUCER, "busy");
  ASSERT_TRUE(producer.ok());
  const v1::AttachReply& reply = producer->reply.message.attach_reply();
  ASSERT_EQ(reply.code(), 0);
  auto writer = MapLane<dataplane::Producer>(producer->reply, reply.lanes(0),
                                             Bell(producer->reply, reply.doorbell_fd_index()));
  ASSERT_TRUE(writer.ok());
  // No consumer: the ring fills and every further write is a backpressure event.
  EXPECT_EQ(WriteUntilRefused(*writer), WriteResult::kFull);
  // The daemon checks every second: STARTED after the first check, ENDED at
  // the first check that sees no new backpressure.
  absl::SleepFor(absl::Milliseconds(2500));
  producer->conn.Close();
  watcher.join();
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_TRUE(absl::StrContains(watch.out, "EVENT_TYPE_ATTACHED")) << watch.out;
  EXPECT_TRUE(absl::StrContains(watch.out, "EVENT_TYPE_BACKPRESSURE_STARTED")) << watch.out;
  EXPECT_TRUE(absl::StrContains(watch.out, "EVENT_TYPE_BACKPRESSURE_ENDED")) << watch.out;
  EXPECT_TRUE(absl::StrContains(watch.out, "EVENT_TYPE_PEER_DIED")) << watch.out;
  EXPECT_TRUE(absl::StrContains(watch.out, "\"client_name\":\"busy\"")) << watch.out;
}

}  // namespace
}  // namespace shmlane::testing
