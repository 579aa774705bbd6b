// A restarted daemon re-adopts live lanes (docs/protocol.md "Resume"):
// - SIGKILL mid-stream, or SIGTERM with --on-stop=keep, then a new daemon on
//   the same runtime directory: one consumer and several producers (real
//   client processes) stream sequence numbers through it with no frame lost;
//   the lanes are handed back, a producer killed afterwards is reported to
//   the consumer again, the stats keep their totals, and a second consumer is
//   refused (one consumer per channel).
// - Hostile resumes (forged attachment or lane credential, wrong uid, unknown
//   lane id, unsealed or wrong-sized memfd) are refused with a clear error
//   and counted.
// - Lanes nobody hands back are retired after --resume-grace and counted.
// - Figures: the longest stall of a 64 B stream across a SIGKILL + restart,
//   and the time until 1, 32 and 512 producers are re-adopted.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
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

namespace v1 = ::shmlane::v1;

void RaiseFdLimit(rlim_t want) {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  r.rlim_cur = std::min(want, r.rlim_max);
  (void)::setrlimit(RLIMIT_NOFILE, &r);
}

void CreateStream(const TestDaemon& d, const std::string& name, const std::string& ring = "65536",
                  const std::string& producers = "64") {
  CommandResult r = d.Ctl({"channels", "create", name, "--ring-bytes", ring, "--max-producers",
                           producers, "--backpressure", "block"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

// A counter from the daemon's /metrics (0 when absent).
double Metric(const TestDaemon& d, const std::string& sample) {
  absl::StatusOr<std::string> body = HttpGet(d.metrics_port(), "/metrics");
  if (!body.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*body, '\n')) {
    if (!absl::StartsWith(line, sample + " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(sample.size() + 1), &v)) return v;
  }
  return 0;
}

double AttachResult(const TestDaemon& d, const std::string& result) {
  return Metric(d, absl::StrCat("shmlane_attach_total{result=\"", result, "\"}"));
}

// Waits until shmlane_attach_total{result="resumed"} reaches `n`; the time it
// took, or nullopt.
std::optional<absl::Duration> AwaitResumed(const TestDaemon& d, double n, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < timeout) {
    if (AttachResult(d, "resumed") >= n) return absl::Now() - start;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return std::nullopt;
}

// The channel's total frames as `shmlanectl stats` prints them (-1: none).
int64_t StatsFrames(const TestDaemon& d, const std::string& channel) {
  CommandResult r = d.Ctl({"stats", channel, "--json"});
  if (r.exit_code != 0) return -1;
  // "framesSent": "N" or "frames_sent": N: the first number after the key.
  for (const char* key : {"\"framesSent\"", "\"frames_sent\""}) {
    const size_t at = r.out.find(key);
    if (at == std::string::npos) continue;
    size_t i = r.out.find_first_of("0123456789", at + std::strlen(key));
    size_t j = r.out.find_first_not_of("0123456789", i);
    int64_t v = 0;
    if (i != std::string::npos && absl::SimpleAtoi(r.out.substr(i, j - i), &v)) return v;
  }
  return -1;
}

struct Seq {
  uint32_t producer;
  uint32_t end;  // 1: the producer's last frame; seq is its frame count
  uint64_t seq;
  uint64_t sent_ns;  // CLOCK_MONOTONIC when written
};

// Child: producer `index` writes 64 B frames (Seq + padding) until told to
// stop, then an end frame with its count.
int StreamProducer(const TestDaemon& d, uint32_t index, const ClientProcess::Io& io) {
  auto p = client::Producer::Attach("lane", ClientOptions(d, absl::StrCat("p", index)));
  if (!p.ok()) {
    io.Say(absl::StrCat("failed ", p.status().ToString()));
    return 10;
  }
  io.Say("ready");
  char frame[64] = {};
  uint64_t seq = 0;
  for (;;) {
    const bool stop = (seq % 64 == 0) && io.GoPending();
    Seq s{index, stop ? 1u : 0u, seq, static_cast<uint64_t>(MonotonicNs())};
    std::memcpy(frame, &s, sizeof(s));
    const client::WriteResult r =
        p->Write(std::as_bytes(std::span(frame)), absl::Now() + absl::Seconds(10));
    if (r != client::WriteResult::kOk) {
      io.Say(absl::StrCat("failed frame ", seq, ": ", p->status().ToString()));
      return 12;
    }
    if (stop) break;
    ++seq;
  }
  io.Say(absl::StrCat("done ", seq, " resumes ", p->resumes()));
  return 0;
}

// Child: the consumer. Checks every producer's sequence, reports each
// producer that goes away ("gone pN ..."), and ends once `ends` producers
// sent their end frame: "done frames=F stall_us=S resumes=R".
int StreamConsumer(const TestDaemon& d, int ends, const ClientProcess::Io& io) {
  client::Consumer::Options o;
  static_cast<client::AttachOptions&>(o) = ClientOptions(d, "consumer");
  o.on_peer_event = [&](const client::PeerEvent& e) {
    if (e.kind == client::PeerEvent::Kind::kDetached) {
      io.Say(absl::StrCat("gone ", e.peer.name, " ", e.status.ToString()));
    }
  };
  auto c = client::Consumer::Attach("lane", o);
  if (!c.ok()) {
    io.Say(absl::StrCat("failed ", c.status().ToString()));
    return 10;
  }
  io.Say("ready");
  std::map<uint32_t, uint64_t> expected;
  uint64_t frames = 0;
  int64_t last_ns = 0, stall_ns = 0;
  int ended = 0;
  while (ended < ends) {
    absl::StatusOr<client::Frame> f = c->Read(absl::Now() + absl::Seconds(20));
    if (!f.ok()) {
      io.Say(absl::StrCat("failed after ", frames, " frames: ", f.status().ToString()));
      return 12;
    }
    Seq s{};
    if (f->data.size() != 64) return 13;
    std::memcpy(&s, f->data.data(), sizeof(s));
    const int64_t now = MonotonicNs();
    if (last_ns != 0) stall_ns = std::max(stall_ns, now - last_ns);
    last_ns = now;
    uint64_t& want = expected[s.producer];
    if (s.seq != want) {
      io.Say(absl::StrCat("failed producer ", s.producer, ": expected ", want, ", got ", s.seq));
      return 14;
    }
    ++want;
    ++frames;
    if (s.end != 0) ++ended;
  }
  io.Say(absl::StrCat("done frames=", frames, " stall_us=", stall_ns / 1000,
                      " resumes=", c->resumes()));
  return 0;
}

// (a), (b), (e): producers and a consumer stream through a daemon that is
// SIGKILLed (or SIGTERMed with --on-stop=keep) and restarted.
void StreamThroughRestart(int sig) {
  constexpr int kProducers = 4;
  TestDaemon d;
  std::vector<std::string> flags = {"--resume-grace=20s"};
  if (sig == SIGTERM) flags.push_back("--on-stop=keep");
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  CreateStream(d, "lane");
  ClientProcess consumer(
      [&](const ClientProcess::Io& io) { return StreamConsumer(d, kProducers - 1, io); });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  std::vector<std::unique_ptr<ClientProcess>> producers;
  for (int i = 0; i < kProducers; ++i) {
    producers.push_back(std::make_unique<ClientProcess>(
        [&, i](const ClientProcess::Io& io) { return StreamProducer(d, i, io); }));
    ASSERT_EQ(producers.back()->ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  }
  absl::SleepFor(absl::Milliseconds(300));
  const int64_t before = StatsFrames(d, "lane");
  ASSERT_GT(before, 0) << "no frames counted before the restart";
  const std::string sent = "shmlane_frames_total{channel=\"lane\",direction=\"sent\"}";
  const double exported_before = Metric(d, sent);
  ASSERT_GT(exported_before, 0) << "no exported frames before the restart";
  if (sig == SIGKILL) {
    ASSERT_TRUE(d.Stop(SIGKILL).ok());
  } else {
    absl::StatusOr<int> code = d.Stop(SIGTERM);
    ASSERT_TRUE(code.ok()) << code.status();
    ASSERT_EQ(*code, 0) << d.stderr_text();
  }
  absl::SleepFor(absl::Milliseconds(300));  // streaming with no daemon
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  std::optional<absl::Duration> took = AwaitResumed(d, kProducers + 1, absl::Seconds(15));
  ASSERT_TRUE(took.has_value()) << "not every holder resumed: " << AttachResult(d, "resumed")
                                << " did\n"
                                << d.stderr_text();
  std::printf("all %d attachments resumed %s after the new daemon was ready\n", kProducers + 1,
              absl::FormatDuration(*took).c_str());
  // Totals continue from shared memory.
  const int64_t after = StatsFrames(d, "lane");
  EXPECT_GE(after, before) << "the channel's frame total went back after the restart";
  const double exported_after = Metric(d, sent);
  EXPECT_GE(exported_after, exported_before) << "the exported frame total went back";
  std::printf("exported %s: %.0f before, %.0f after\n", sent.c_str(), exported_before,
              exported_after);
  CommandResult lanes = d.Ctl({"stats", "lane", "--lanes"});
  EXPECT_EQ(lanes.exit_code, 0) << lanes.err;
  std::printf("frames before %ld, after %ld\n%s", static_cast<long>(before),
              static_cast<long>(after), lanes.out.c_str());
  // (b) One consumer per channel, also after re-adoption.
  absl::StatusOr<Attached> second = AttachTo(d.attach_socket(), "lane", v1::ROLE_CONSUMER);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->reply.message.attach_reply().code(),
            static_cast<int>(absl::StatusCode::kFailedPrecondition))
      << second->reply.message.DebugString();
  // Supervision again: a producer killed now is reported to the consumer.
  const absl::Time killed = absl::Now();
  producers.back()->Kill();
  absl::StatusOr<std::string> gone = consumer.ReadLineStartingWith("gone p3", absl::Seconds(5));
  ASSERT_TRUE(gone.ok()) << "the consumer was not told that p3 died: " << gone.status();
  EXPECT_LT(absl::Now() - killed, absl::Seconds(2));
  std::printf("p3's death reported in %s: %s\n", absl::FormatDuration(absl::Now() - killed).c_str(),
              gone->c_str());
  for (int i = 0; i < kProducers - 1; ++i) producers[i]->Go();
  for (int i = 0; i < kProducers - 1; ++i) {
    absl::StatusOr<std::string> line = producers[i]->ReadLineStartingWith("", absl::Seconds(20));
    ASSERT_TRUE(line.ok()) << line.status();
    EXPECT_TRUE(absl::StartsWith(*line, "done")) << *line;
    EXPECT_TRUE(absl::StrContains(*line, "resumes 1")) << *line;
    EXPECT_EQ(producers[i]->Wait(absl::Seconds(10)).value_or(-1), 0);
  }
  absl::StatusOr<std::string> done = consumer.ReadLineStartingWith("done", absl::Seconds(30));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(absl::StrContains(*done, "resumes=1")) << *done;
  EXPECT_EQ(consumer.Wait(absl::Seconds(10)).value_or(-1), 0);
  std::printf("consumer: %s\n", done->c_str());
}

TEST(DaemonResumeTest, StreamsContinueThroughSigkillAndRestart) { StreamThroughRestart(SIGKILL); }

TEST(DaemonResumeTest, StreamsContinueThroughPlannedRestartWithOnStopKeep) {
  StreamThroughRestart(SIGTERM);
}

// REQUEST_REPLY: a client calls a server in a loop through a SIGKILL and
// restart; both resume, every call is answered, and a client killed after
// the restart is reported to the server again.
TEST(DaemonResumeTest, RequestReplyContinuesThroughSigkill) {
  TestDaemon d;
  const std::vector<std::string> flags = {"--resume-grace=20s"};
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  CommandResult r = d.Ctl({"channels", "create", "rr", "--pattern", "request-reply"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ClientProcess server([&](const ClientProcess::Io& io) {
    client::Server::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "server");
    o.on_peer_event = [&](const client::PeerEvent& e) {
      if (e.kind == client::PeerEvent::Kind::kDetached) io.Say(absl::StrCat("gone ", e.peer.name));
    };
    auto s = client::Server::Attach("rr", o);
    if (!s.ok()) {
      io.Say(absl::StrCat("failed ", s.status().ToString()));
      return 10;
    }
    io.Say("ready");
    while (!io.GoPending()) {
      auto n = s->ServeOnce(
          [](const client::Server::Request& req, std::string* reply) {
            reply->assign(req.data_as_string_view());
            return absl::OkStatus();
          },
          absl::Now() + absl::Milliseconds(100));
      if (!n.ok()) {
        io.Say(absl::StrCat("failed ", n.status().ToString()));
        return 12;
      }
    }
    return 0;
  });
  ASSERT_EQ(server.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess caller([&](const ClientProcess::Io& io) {
    auto c = client::Client::Attach("rr", ClientOptions(d, "caller"));
    if (!c.ok()) {
      io.Say(absl::StrCat("failed ", c.status().ToString()));
      return 10;
    }
    io.Say("ready");
    for (uint64_t i = 0;; ++i) {
      const std::string request = absl::StrCat("call ", i);
      auto reply = c->Call(request, absl::Now() + absl::Seconds(10));
      if (!reply.ok() || *reply != request) {
        io.Say(absl::StrCat("failed call ", i, ": ", reply.status().ToString()));
        return 12;
      }
      if (c->resumes() > 0 && i % 100 == 0) io.Say(absl::StrCat("resumed at ", i));
    }
  });
  ASSERT_EQ(caller.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  ASSERT_TRUE(AwaitResumed(d, 2, absl::Seconds(10)).has_value())
      << AttachResult(d, "resumed") << " of 2 resumed";
  absl::StatusOr<std::string> resumed = caller.ReadLine(absl::Seconds(10));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE(absl::StartsWith(*resumed, "resumed at")) << *resumed;
  std::printf("client: %s\n", resumed->c_str());
  const absl::Time killed = absl::Now();
  caller.Kill();
  absl::StatusOr<std::string> gone = server.ReadLineStartingWith("gone caller", absl::Seconds(5));
  ASSERT_TRUE(gone.ok()) << "the server was not told that its client died: " << gone.status();
  EXPECT_LT(absl::Now() - killed, absl::Seconds(2));
  server.Go();
  EXPECT_EQ(server.Wait(absl::Seconds(10)).value_or(-1), 0);
}

// A daemon restarted without the state file knows none of the lanes: the
// producer's resume is refused, so it closes its lane (its writes return
// kClosed, status() says to attach again) and the consumer, whose resume is
// refused too, reads every frame committed before that, then sees the end.
TEST(DaemonResumeTest, LanesTheNewDaemonDoesNotKnowAreClosedByTheirHolders) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateStream(d, "lane");
  ClientProcess consumer([&](const ClientProcess::Io& io) {
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "consumer");
    auto c = client::Consumer::Attach("lane", o);
    if (!c.ok()) return 10;
    io.Say("ready");
    uint64_t frames = 0;
    for (;;) {
      auto f = c->Read(absl::Now() + absl::Seconds(20));
      if (!f.ok()) {
        io.Say(absl::StrCat("end after ", frames, " frames: ", f.status().ToString()));
        return absl::IsUnavailable(f.status()) ? 0 : 12;
      }
      ++frames;
    }
  });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess producer([&](const ClientProcess::Io& io) {
    auto p = client::Producer::Attach("lane", ClientOptions(d, "producer"));
    if (!p.ok()) return 10;
    io.Say("ready");
    uint64_t written = 0;
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (absl::Now() < until) {
      const client::WriteResult r = p->Write("frame", absl::Now() + absl::Seconds(10));
      if (r == client::WriteResult::kClosed) {
        io.Say(absl::StrCat("closed after ", written, " frames: ", p->status().ToString()));
        return absl::IsUnavailable(p->status()) ? 0 : 12;
      }
      if (r != client::WriteResult::kOk) return 13;
      ++written;
      if (written % 64 == 0) absl::SleepFor(absl::Microseconds(100));
    }
    return 14;
  });
  ASSERT_EQ(producer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  ASSERT_EQ(::unlink((d.runtime_dir() + "/shmlaned.state").c_str()), 0) << std::strerror(errno);
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateStream(d, "lane");
  absl::StatusOr<std::string> closed = producer.ReadLine(absl::Seconds(10));
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_TRUE(absl::StrContains(*closed, "attach again")) << *closed;
  EXPECT_EQ(producer.Wait(absl::Seconds(5)).value_or(-1), 0) << *closed;
  absl::StatusOr<std::string> end = consumer.ReadLine(absl::Seconds(30));
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(consumer.Wait(absl::Seconds(5)).value_or(-1), 0) << *end;
  // Every frame written was read: "closed after N" and "end after N".
  const std::string wrote = closed->substr(13, closed->find(' ', 13) - 13);
  EXPECT_TRUE(absl::StrContains(*end, absl::StrCat("end after ", wrote, " frames")))
      << *closed << " / " << *end;
  std::printf("producer: %s\nconsumer: %s\n", closed->c_str(), end->c_str());
}

// A consumer that held no lane at the crash has nothing to hand back: it
// keeps no place, and a new consumer may attach at once.
TEST(DaemonResumeTest, AConsumerWithoutLanesKeepsNoPlace) {
  TestDaemon d;
  ASSERT_TRUE(d.Start({"--resume-grace=30s"}).ok()) << d.stderr_text();
  CreateStream(d, "lane");
  absl::StatusOr<Attached> old = AttachTo(d.attach_socket(), "lane", v1::ROLE_CONSUMER);
  ASSERT_TRUE(old.ok());
  ASSERT_EQ(old->reply.message.attach_reply().code(), 0);
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  ASSERT_TRUE(d.Start({"--resume-grace=30s"}).ok()) << d.stderr_text();
  absl::StatusOr<Attached> fresh = AttachTo(d.attach_socket(), "lane", v1::ROLE_CONSUMER);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->reply.message.attach_reply().code(), 0)
      << fresh->reply.message.attach_reply().message();
}

// ---------------------------------------------------------------------------
// Hostile resumes, from a raw attach client in this process.

struct RawProducer {
  std::optional<Attached> attached;  // keeps the connection and the fds
  uint64_t attachment_id = 0;
  std::string credential;
  v1::LaneDescription lane;
  int segment_fd = -1;
  int own_bell_fd = -1;
  int peer_bell_fd = -1;
};

absl::StatusOr<RawProducer> AttachRawProducer(const TestDaemon& d, const std::string& channel) {
  absl::StatusOr<Attached> a = AttachTo(d.attach_socket(), channel, v1::ROLE_PRODUCER);
  if (!a.ok()) return a.status();
  const v1::AttachReply& reply = a->reply.message.attach_reply();
  if (reply.code() != 0 || reply.lanes_size() != 1) {
    return absl::InternalError(reply.DebugString());
  }
  RawProducer p;
  p.attachment_id = reply.attachment_id();
  p.credential = reply.resume_credential();
  p.lane = reply.lanes(0);
  p.own_bell_fd = a->reply.fds[reply.doorbell_fd_index()].get();
  p.segment_fd = a->reply.fds[p.lane.segment_fd_index()].get();
  p.peer_bell_fd = a->reply.fds[p.lane.peer_doorbell_fd_index()].get();
  p.attached.emplace(*std::move(a));
  return p;
}

struct ResumeOutcome {
  v1::ResumeReply first;
  v1::ResumeReply last;
};

// Sends a Resume and (when ready) one lane with the given fds over `conn`.
absl::StatusOr<ResumeOutcome> SendResume(RawAttach& conn, const RawProducer& p,
                                         const std::string& credential, uint64_t lane_id,
                                         const std::string& lane_credential, int segment_fd) {
  v1::AttachMessage m;
  v1::Resume* r = m.mutable_resume();
  r->set_protocol_version(1);
  r->set_channel("lane");
  r->set_role(v1::ROLE_PRODUCER);
  r->set_attachment_id(p.attachment_id);
  r->set_credential(credential);
  r->set_client_name("test");
  r->set_lanes(1);
  if (absl::Status s = conn.Send(m); !s.ok()) return s;
  absl::StatusOr<Packet> first = conn.Receive();
  if (!first.ok()) return first.status();
  ResumeOutcome out;
  out.first = first->message.resume_reply();
  if (!out.first.ready()) return out;
  v1::AttachMessage lanes;
  v1::ResumedLane* l = lanes.mutable_resume_lanes()->add_lanes();
  l->set_lane_id(lane_id);
  l->set_credential(lane_credential);
  l->set_segment_fd_index(0);
  l->set_producer_doorbell_fd_index(1);
  l->set_consumer_doorbell_fd_index(2);
  std::string bytes;
  lanes.SerializeToString(&bytes);
  const int fds[3] = {segment_fd, p.own_bell_fd, p.peer_bell_fd};
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(fds))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(c), fds, sizeof(fds));
  if (::sendmsg(conn.fd(), &msg, MSG_NOSIGNAL) < 0) {
    return absl::InternalError(absl::StrCat("sendmsg: ", std::strerror(errno)));
  }
  absl::StatusOr<Packet> last = conn.Receive();
  if (!last.ok()) return last.status();
  out.last = last->message.resume_reply();
  return out;
}

// A memfd of `bytes` bytes, sealed when `seal`.
int MakeMemfd(size_t bytes, bool seal) {
  const int fd = ::memfd_create("fake-lane", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return -1;
  if (seal && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return -1;
  return fd;
}

TEST(DaemonResumeTest, HostileResumesAreRefusedAndCounted) {
  TestDaemon d;
  ASSERT_TRUE(d.Start({"--resume-grace=30s"}).ok()) << d.stderr_text();
  CreateStream(d, "lane");
  absl::StatusOr<RawProducer> p = AttachRawProducer(d, "lane");
  ASSERT_TRUE(p.ok()) << p.status();
  absl::SleepFor(absl::Milliseconds(100));  // the state write after the attach
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  ASSERT_TRUE(d.Start({"--resume-grace=30s"}).ok()) << d.stderr_text();
  const std::string wrong(32, 'x');
  const uint64_t lane_id = p->lane.lane_id();
  const std::string& lane_cred = p->lane.resume_credential();
  struct Case {
    const char* what;
    std::string credential;
    uint64_t lane_id;
    std::string lane_credential;
    int segment_fd;
    absl::StatusCode code;
    const char* says;
  };
  const uint64_t segment_bytes = 4096 + 65536;
  const int unsealed = MakeMemfd(segment_bytes, false);
  const int wrong_size = MakeMemfd(segment_bytes * 2, true);
  ASSERT_GE(unsealed, 0);
  ASSERT_GE(wrong_size, 0);
  const std::vector<Case> cases = {
      {"forged attachment credential", wrong, lane_id, lane_cred, p->segment_fd,
       absl::StatusCode::kPermissionDenied, "wrong resume credential for attachment"},
      {"forged lane credential", p->credential, lane_id, wrong, p->segment_fd,
       absl::StatusCode::kPermissionDenied, "wrong resume credential for lane"},
      {"unknown lane id", p->credential, lane_id + 1000, lane_cred, p->segment_fd,
       absl::StatusCode::kNotFound, "is not one shmlaned knows"},
      {"memfd without seals", p->credential, lane_id, lane_cred, unsealed,
       absl::StatusCode::kInvalidArgument, "not a memfd sealed"},
      {"memfd of the wrong size", p->credential, lane_id, lane_cred, wrong_size,
       absl::StatusCode::kInvalidArgument, "bytes; the lane's is"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<RawAttach> conn = RawAttach::Connect(d.attach_socket());
    ASSERT_TRUE(conn.ok()) << conn.status();
    absl::StatusOr<ResumeOutcome> out =
        SendResume(*conn, *p, c.credential, c.lane_id, c.lane_credential, c.segment_fd);
    ASSERT_TRUE(out.ok()) << c.what << ": " << out.status();
    const v1::ResumeReply& verdict = out->first.ready() ? out->last : out->first;
    EXPECT_EQ(verdict.code(), static_cast<int>(c.code)) << c.what << ": " << verdict.DebugString();
    EXPECT_TRUE(absl::StrContains(verdict.message(), c.says))
        << c.what << ": " << verdict.message();
    EXPECT_TRUE(conn->WaitClosed(absl::Seconds(5))) << c.what << ": the connection stayed open";
    std::printf("%s: %s\n", c.what, verdict.message().c_str());
  }
  // A wrong uid, with the right credentials.
  if (::geteuid() == 0) {
    std::fflush(stdout);
    const pid_t child = ::fork();
    if (child == 0) {
      ::alarm(20);
      if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
        std::_Exit(20);
      }
      absl::StatusOr<RawAttach> conn = RawAttach::Connect(d.attach_socket());
      if (!conn.ok()) std::_Exit(21);
      absl::StatusOr<ResumeOutcome> out =
          SendResume(*conn, *p, p->credential, lane_id, lane_cred, p->segment_fd);
      if (!out.ok()) std::_Exit(22);
      const bool refused =
          out->first.code() == static_cast<int>(absl::StatusCode::kPermissionDenied) &&
          absl::StrContains(out->first.message(), "may not resume it");
      std::printf("wrong uid: %s\n", out->first.message().c_str());
      std::fflush(stdout);
      std::_Exit(refused ? 0 : 23);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "a resume from another uid was not refused (child status " << status << ")";
  } else {
    std::printf("SKIPPED the wrong-uid case: it needs root to run a child as uid 65534\n");
  }
  EXPECT_GE(AttachResult(d, "resume_permission_denied"), ::geteuid() == 0 ? 3 : 2);
  EXPECT_GE(AttachResult(d, "resume_not_found"), 1);
  EXPECT_GE(AttachResult(d, "resume_invalid_argument"), 2);
  EXPECT_GE(AttachResult(d, "resume_lane_invalid_argument"), 2);
  // The rightful holder still can: nothing above consumed the attachment.
  absl::StatusOr<RawAttach> conn = RawAttach::Connect(d.attach_socket());
  ASSERT_TRUE(conn.ok());
  absl::StatusOr<ResumeOutcome> ok =
      SendResume(*conn, *p, p->credential, lane_id, lane_cred, p->segment_fd);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->last.code(), 0) << ok->last.DebugString();
  ASSERT_EQ(ok->last.lanes_size(), 1);
  EXPECT_EQ(ok->last.lanes(0).code(), 0) << ok->last.lanes(0).message();
  EXPECT_EQ(AttachResult(d, "resumed"), 1);
  ::close(unsealed);
  ::close(wrong_size);
}

// (d) Lanes nobody hands back are retired after --resume-grace: the raw
// producer below never resumes; the consumer, which does, is told that the
// lane ended. A lane on a channel without a consumer is dropped. Both count.
TEST(DaemonResumeTest, UnclaimedLanesAreRetiredAfterTheGrace) {
  TestDaemon d;
  const std::vector<std::string> flags = {"--resume-grace=1s"};
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  CreateStream(d, "lane");
  CreateStream(d, "lonely");
  ClientProcess consumer([&](const ClientProcess::Io& io) {
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "consumer");
    o.on_peer_event = [&](const client::PeerEvent& e) {
      io.Say(absl::StrCat(e.kind == client::PeerEvent::Kind::kDetached ? "gone " : "came ",
                          e.peer.name, " ", e.status.ToString()));
    };
    auto c = client::Consumer::Attach("lane", o);
    if (!c.ok()) return 10;
    io.Say("ready");
    for (;;) {
      auto f = c->Read(absl::Now() + absl::Milliseconds(200));
      if (!f.ok() && !absl::IsDeadlineExceeded(f.status())) {
        io.Say(absl::StrCat("read ", f.status().ToString()));
      }
      if (io.GoPending()) break;
    }
    io.Say(absl::StrCat("resumes ", c->resumes()));
    return 0;
  });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  absl::StatusOr<RawProducer> silent = AttachRawProducer(d, "lane");
  ASSERT_TRUE(silent.ok()) << silent.status();
  absl::StatusOr<RawProducer> lonely = AttachRawProducer(d, "lonely");
  ASSERT_TRUE(lonely.ok()) << lonely.status();
  ASSERT_TRUE(absl::StartsWith(consumer.ReadLine(absl::Seconds(5)).value_or("?"), "came test"));
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(d.Start(flags).ok()) << d.stderr_text();
  ASSERT_TRUE(AwaitResumed(d, 1, absl::Seconds(5)).has_value()) << "the consumer did not resume";
  absl::StatusOr<std::string> gone = consumer.ReadLineStartingWith("gone test", absl::Seconds(5));
  ASSERT_TRUE(gone.ok()) << "the unclaimed lane was not retired: " << gone.status();
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(900));
  // (The lane reads closed at once, before the LaneRemoved that says why.)
  std::printf("retired %s after the restart: %s\n", absl::FormatDuration(took).c_str(),
              gone->c_str());
  EXPECT_EQ(AttachResult(d, "resume_unclaimed_lane"), 2);
  // The lane's producer side reads closed: the daemon closed the lane.
  consumer.Go();
  EXPECT_EQ(consumer.ReadLineStartingWith("resumes", absl::Seconds(5)).value_or("?"), "resumes 1");
  // The grace is over: a new consumer may attach to the lonely channel.
  absl::StatusOr<Attached> fresh = AttachTo(d.attach_socket(), "lonely", v1::ROLE_CONSUMER);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->reply.message.attach_reply().code(), 0)
      << fresh->reply.message.attach_reply().message();
}

// ---------------------------------------------------------------------------
// Figures.

// The longest stall a 64 B stream sees at the consumer across a SIGKILL and
// restart of the daemon, and frames lost (none may be).
TEST(DaemonResumeFigures, StallOfA64ByteStreamAcrossSigkill) {
  TestDaemon d;
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  CreateStream(d, "lane");
  ClientProcess consumer([&](const ClientProcess::Io& io) { return StreamConsumer(d, 1, io); });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess producer([&](const ClientProcess::Io& io) { return StreamProducer(d, 0, io); });
  ASSERT_EQ(producer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  const absl::Time restart = absl::Now();
  ASSERT_TRUE(d.Start().ok()) << d.stderr_text();
  const absl::Duration startup = absl::Now() - restart;
  std::optional<absl::Duration> took = AwaitResumed(d, 2, absl::Seconds(10));
  ASSERT_TRUE(took.has_value());
  absl::SleepFor(absl::Milliseconds(300));
  producer.Go();
  absl::StatusOr<std::string> wrote = producer.ReadLineStartingWith("done", absl::Seconds(20));
  ASSERT_TRUE(wrote.ok()) << wrote.status();
  absl::StatusOr<std::string> read = consumer.ReadLineStartingWith("done", absl::Seconds(20));
  ASSERT_TRUE(read.ok()) << read.status();
  // done N: frames 0..N (N+1 with the end frame); the consumer checked order.
  uint64_t n = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      std::string(absl::StripPrefix(wrote->substr(0, wrote->find(" resumes")), "done ")), &n));
  EXPECT_TRUE(absl::StrContains(*read, absl::StrCat("frames=", n + 1, " "))) << *read;
  std::printf(
      "FIGURE 64B stream across SIGKILL: producer %s; consumer %s; lost %s; both "
      "resumed %s after the restarted daemon was ready (start took %s)\n",
      wrote->c_str(), read->c_str(),
      absl::StrContains(*read, absl::StrCat("frames=", n + 1, " ")) ? "0" : "SOME",
      absl::FormatDuration(*took).c_str(), absl::FormatDuration(startup).c_str());
}

// Time from the restarted daemon's "ready" until N producers (one process,
// N Producer objects written round-robin by one thread) and their consumer
// are all re-adopted.
void ReadoptionTime(int n) {
  RaiseFdLimit(20000);
  TestDaemon d;
  ASSERT_TRUE(
      d.Start({"--max-connections-per-uid=4096", "--max-handshakes-per-uid=4096"}, 20000).ok())
      << d.stderr_text();
  CreateStream(d, "lane", "4096", absl::StrCat(std::max(n, 1)));
  CommandResult quota = d.Ctl({"quota", "set", "--uid", absl::StrCat(::geteuid()),
                               "--max-attachments", "4096", "--max-shm-bytes", "1073741824"});
  ASSERT_EQ(quota.exit_code, 0) << quota.out << quota.err;
  ClientProcess consumer([&](const ClientProcess::Io& io) {
    RaiseFdLimit(20000);
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(d, "consumer");
    auto c = client::Consumer::Attach("lane", o);
    if (!c.ok()) {
      io.Say(absl::StrCat("failed ", c.status().ToString()));
      return 10;
    }
    io.Say("ready");
    while (!io.GoPending()) {
      (void)c->Wait([](const client::Peer&, std::span<const std::byte>) {},
                    absl::Now() + absl::Milliseconds(50));
    }
    io.Say(absl::StrCat("resumes ", c->resumes()));
    return 0;
  });
  ASSERT_EQ(consumer.ReadLine(absl::Seconds(10)).value_or("?"), "ready");
  ClientProcess producers([&](const ClientProcess::Io& io) {
    RaiseFdLimit(20000);
    std::vector<client::Producer> ps;
    for (int i = 0; i < n; ++i) {
      auto p = client::Producer::Attach("lane", ClientOptions(d, absl::StrCat("p", i)));
      if (!p.ok()) {
        io.Say(absl::StrCat("failed ", i, ": ", p.status().ToString()));
        return 10;
      }
      ps.push_back(*std::move(p));
    }
    io.Say("ready");
    const char frame[8] = {};
    while (!io.GoPending()) {
      for (client::Producer& p : ps) (void)p.TryWrite(std::as_bytes(std::span(frame)));
      absl::SleepFor(absl::Microseconds(200));
    }
    uint64_t resumed = 0;
    for (client::Producer& p : ps) resumed += p.resumes();
    io.Say(absl::StrCat("resumes ", resumed));
    return 0;
  });
  ASSERT_EQ(producers.ReadLine(absl::Seconds(120)).value_or("?"), "ready");
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_TRUE(d.Stop(SIGKILL).ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(
      d.Start({"--max-connections-per-uid=4096", "--max-handshakes-per-uid=4096"}, 20000).ok())
      << d.stderr_text();
  const absl::Duration startup = absl::Now() - start;
  std::optional<absl::Duration> took = AwaitResumed(d, n + 1, absl::Seconds(60));
  ASSERT_TRUE(took.has_value()) << AttachResult(d, "resumed") << " of " << n + 1 << " resumed";
  producers.Go();
  consumer.Go();
  EXPECT_EQ(producers.ReadLineStartingWith("resumes", absl::Seconds(20)).value_or("?"),
            absl::StrCat("resumes ", n));
  EXPECT_EQ(consumer.ReadLineStartingWith("resumes", absl::Seconds(20)).value_or("?"), "resumes 1");
  std::printf(
      "FIGURE %d producers + 1 consumer re-adopted %s after the new daemon was ready "
      "(its start took %s)\n",
      n, absl::FormatDuration(*took).c_str(), absl::FormatDuration(startup).c_str());
}

TEST(DaemonResumeFigures, ReadoptionOf1Producer) { ReadoptionTime(1); }
TEST(DaemonResumeFigures, ReadoptionOf32Producers) { ReadoptionTime(32); }
TEST(DaemonResumeFigures, ReadoptionOf512Producers) { ReadoptionTime(512); }

}  // namespace
}  // namespace shmlane::testing
