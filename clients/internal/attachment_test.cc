// The attach handshake against a scripted fake daemon: what the client sends,
// and how it treats every kind of bad or hostile answer (bounds, fd indices,
// stray fds, truncation, silence, hang-up).
#include "clients/internal/attachment.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/lane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shmlane::client::internal {
namespace {

using ::testing::HasSubstr;

// Listens on DIR/attach.sock; for one connection, reads the request and runs
// `script(conn_fd, request)`.
class FakeDaemon {
 public:
  using Script = std::function<void(int fd, const v1::AttachRequest& request)>;

  explicit FakeDaemon(Script script) : script_(std::move(script)) {
    char tmpl[] = "/tmp/shmlane-attach-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    listen_fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = dir_ + "/attach.sock";
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    thread_ = std::thread([this] {
      const int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) return;
      char buf[70000];
      const ssize_t n = ::recv(conn, buf, sizeof(buf), 0);
      v1::AttachMessage m;
      if (n > 0 && m.ParseFromArray(buf, static_cast<int>(n))) {
        request_ = m.attach_request();
        script_(conn, request_);
      }
      ::close(conn);
    });
  }
  ~FakeDaemon() {
    thread_.join();
    ::close(listen_fd_);
    ::unlink((dir_ + "/attach.sock").c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }
  const v1::AttachRequest& request() const { return request_; }  // after the attach

 private:
  Script script_;
  std::string dir_;
  int listen_fd_ = -1;
  std::thread thread_;
  v1::AttachRequest request_;
};

void SendPacket(int fd, const std::string& bytes, const std::vector<int>& fds) {
  iovec iov{.iov_base = const_cast<char*>(bytes.data()), .iov_len = bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ASSERT_EQ(::sendmsg(fd, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

void Send(int fd, const v1::AttachMessage& m, const std::vector<int>& fds = {}) {
  SendPacket(fd, m.SerializeAsString(), fds);
}

AttachOptions OptionsFor(const FakeDaemon& d) {
  AttachOptions o;
  o.runtime_dir = d.dir();
  o.attach_timeout = absl::Seconds(5);
  return o;
}

// A real lane segment and doorbells, as a daemon would hand them out.
struct LaneFds {
  dataplane::Segment segment;
  int own_bell = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int peer_bell = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  LaneFds()
      : segment(*dataplane::CreateLaneSegment({.ring_bytes = 4096, .max_frame_bytes = 1024})) {}
  ~LaneFds() {
    ::close(own_bell);
    ::close(peer_bell);
  }
};

TEST(AttachTest, SendsAVersionedRequestAndMapsTheReply) {
  LaneFds lane;
  int stray[2];
  ASSERT_EQ(::pipe2(stray, O_CLOEXEC), 0);
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    v1::AttachReply* r = m.mutable_attach_reply();
    r->set_attachment_id(42);
    r->set_doorbell_fd_index(1);
    v1::LaneDescription* d = r->add_lanes();
    d->set_lane_id(7);
    d->set_direction(v1::LANE_DIRECTION_WRITE);
    d->set_segment_fd_index(0);
    d->set_peer_doorbell_fd_index(2);
    d->set_peer_attachment_id(9);
    d->set_peer_name("the-consumer");
    // fd 3, the pipe's write end, is referred to by nothing: the client must
    // close it.
    Send(fd, m, {lane.segment.fd(), lane.own_bell, lane.peer_bell, stray[1]});
  });
  AttachOptions options = OptionsFor(daemon);
  options.client_name = std::string(100, 'n');
  auto hs = Attach("chan", v1::ROLE_PRODUCER, options);
  ASSERT_TRUE(hs.ok()) << hs.status();
  EXPECT_EQ(hs->attachment_id, 42u);
  ASSERT_EQ(hs->lanes.size(), 1u);
  EXPECT_EQ(hs->lanes[0].peer.lane_id, 7u);
  EXPECT_EQ(hs->lanes[0].peer.attachment_id, 9u);
  EXPECT_EQ(hs->lanes[0].peer.name, "the-consumer");
  EXPECT_TRUE(hs->lanes[0].segment.valid());
  EXPECT_TRUE(hs->own_bell->valid());

  ::close(stray[1]);
  char byte;
  EXPECT_EQ(::read(stray[0], &byte, 1), 0) << "the unreferenced fd was left open";
  ::close(stray[0]);
  hs->socket.Close();
}

TEST(AttachTest, RequestCarriesVersionRoleAndABoundedName) {
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    m.mutable_attach_reply()->set_code(5);
    Send(fd, m);
  });
  AttachOptions options = OptionsFor(daemon);
  options.client_name = std::string(100, 'n');
  EXPECT_TRUE(absl::IsNotFound(Attach("chan", v1::ROLE_SERVER, options).status()));
  const v1::AttachRequest& req = daemon.request();
  EXPECT_EQ(req.protocol_version(), static_cast<uint32_t>(v1::ATTACH_PROTOCOL_VERSION_1));
  EXPECT_EQ(req.channel(), "chan");
  EXPECT_EQ(req.role(), v1::ROLE_SERVER);
  EXPECT_EQ(req.client_name(), std::string(63, 'n'));
}

TEST(AttachTest, ErrorCodeAndMessageComeFromTheDaemon) {
  FakeDaemon daemon([](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    m.mutable_attach_reply()->set_code(7);
    m.mutable_attach_reply()->set_message("uid 65534 lacks PRODUCE");
    Send(fd, m);
  });
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsPermissionDenied(hs.status())) << hs.status();
  EXPECT_EQ(hs.status().message(), "uid 65534 lacks PRODUCE");
}

TEST(AttachTest, UnknownCodesBecomeUnknown) {
  EXPECT_EQ(CodeFromRpc(14), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CodeFromRpc(99), absl::StatusCode::kUnknown);
  EXPECT_EQ(CodeFromRpc(-1), absl::StatusCode::kUnknown);
}

TEST(AttachTest, APeerPidfdIsSharedAndMayNotDoubleAsAnotherFd) {
  LaneFds lane;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
  ASSERT_GE(pidfd, 0) << "pidfd_open: " << std::strerror(errno);
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    v1::AttachReply* r = m.mutable_attach_reply();
    r->set_doorbell_fd_index(1);
    v1::LaneDescription* d = r->add_lanes();
    d->set_lane_id(7);
    d->set_direction(v1::LANE_DIRECTION_WRITE);
    d->set_segment_fd_index(0);
    d->set_peer_doorbell_fd_index(2);
    d->set_has_peer_pidfd(true);
    d->set_peer_pidfd_fd_index(3);
    Send(fd, m, {lane.segment.fd(), lane.own_bell, lane.peer_bell, pidfd});
  });
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  ASSERT_TRUE(hs.ok()) << hs.status();
  ASSERT_EQ(hs->lanes.size(), 1u);
  const Peer& peer = hs->lanes[0].peer;
  ASSERT_GE(peer.pidfd_fd(), 0);
  EXPECT_NE(peer.pidfd_fd(), pidfd);  // the library's own copy
  const Peer copy = peer;
  EXPECT_EQ(copy.pidfd_fd(), peer.pidfd_fd());  // copies share one fd
  EXPECT_EQ(Peer{}.pidfd_fd(), -1);

  FakeDaemon bad([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    v1::AttachReply* r = m.mutable_attach_reply();
    r->set_doorbell_fd_index(1);
    v1::LaneDescription* d = r->add_lanes();
    d->set_lane_id(7);
    d->set_direction(v1::LANE_DIRECTION_WRITE);
    d->set_segment_fd_index(0);
    d->set_peer_doorbell_fd_index(2);
    d->set_has_peer_pidfd(true);
    d->set_peer_pidfd_fd_index(2);  // the doorbell
    Send(fd, m, {lane.segment.fd(), lane.own_bell, lane.peer_bell});
  });
  auto refused = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(bad));
  EXPECT_TRUE(absl::IsDataLoss(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("two purposes"));
  ::close(pidfd);
}

TEST(AttachTest, FdIndexOutOfRangeIsDataLoss) {
  LaneFds lane;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    v1::AttachReply* r = m.mutable_attach_reply();
    r->set_doorbell_fd_index(0);
    v1::LaneDescription* d = r->add_lanes();
    d->set_lane_id(1);
    d->set_direction(v1::LANE_DIRECTION_READ);
    d->set_segment_fd_index(5);  // only 1 fd comes
    Send(fd, m, {lane.own_bell});
  });
  auto hs = Attach("chan", v1::ROLE_CONSUMER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
  EXPECT_THAT(std::string(hs.status().message()), HasSubstr("fd index 5"));
}

TEST(AttachTest, ADoorbellThatIsNotAMemfdIsRefusedAsASegment) {
  LaneFds lane;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    v1::AttachReply* r = m.mutable_attach_reply();
    r->set_doorbell_fd_index(0);
    v1::LaneDescription* d = r->add_lanes();
    d->set_lane_id(1);
    d->set_direction(v1::LANE_DIRECTION_READ);
    d->set_segment_fd_index(1);  // an eventfd, not a sealed memfd
    d->set_peer_doorbell_fd_index(0);
    Send(fd, m, {lane.own_bell, lane.peer_bell});
  });
  auto hs = Attach("chan", v1::ROLE_CONSUMER, OptionsFor(daemon));
  EXPECT_FALSE(hs.ok());
  EXPECT_THAT(std::string(hs.status().message()), HasSubstr("lane 1"));
}

TEST(AttachTest, WrongDirectionForTheRoleIsDataLoss) {
  LaneFds lane;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    v1::AttachReply* r = m.mutable_attach_reply();
    r->set_doorbell_fd_index(1);
    v1::LaneDescription* d = r->add_lanes();
    d->set_lane_id(3);
    d->set_direction(v1::LANE_DIRECTION_READ);  // a producer never reads
    d->set_segment_fd_index(0);
    d->set_peer_doorbell_fd_index(2);
    Send(fd, m, {lane.segment.fd(), lane.own_bell, lane.peer_bell});
  });
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
}

TEST(AttachTest, OversizedPacketIsDataLoss) {
  FakeDaemon daemon([](int fd, const v1::AttachRequest&) {
    SendPacket(fd, std::string(kMaxAttachMessageBytes + 100, 'x'), {});
  });
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
  EXPECT_THAT(std::string(hs.status().message()), HasSubstr("limit"));
}

TEST(AttachTest, GarbageIsDataLoss) {
  FakeDaemon daemon([](int fd, const v1::AttachRequest&) { SendPacket(fd, "\xff\xff\xff", {}); });
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
}

TEST(AttachTest, AnswerOtherThanAReplyIsDataLoss) {
  FakeDaemon daemon([](int fd, const v1::AttachRequest&) {
    v1::AttachMessage m;
    m.mutable_goodbye()->set_reason("bye");
    Send(fd, m);
  });
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
}

TEST(AttachTest, HangUpIsUnavailable) {
  FakeDaemon daemon([](int, const v1::AttachRequest&) {});
  auto hs = Attach("chan", v1::ROLE_PRODUCER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsUnavailable(hs.status())) << hs.status();
}

TEST(AttachTest, SilenceHitsTheTimeout) {
  int wake[2];
  ASSERT_EQ(::pipe2(wake, O_CLOEXEC), 0);
  FakeDaemon daemon([&](int, const v1::AttachRequest&) {
    char byte;
    (void)!::read(wake[0], &byte, 1);  // hold the connection open, say nothing
  });
  AttachOptions options = OptionsFor(daemon);
  options.attach_timeout = absl::Milliseconds(100);
  const absl::Time start = absl::Now();
  auto hs = Attach("chan", v1::ROLE_PRODUCER, options);
  EXPECT_TRUE(absl::IsDeadlineExceeded(hs.status())) << hs.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  (void)!::write(wake[1], "x", 1);
  ::close(wake[1]);
  ::close(wake[0]);
}

void DescribeReadLane(v1::LaneDescription* d, uint64_t lane_id, uint32_t segment_index,
                      uint32_t bell_index) {
  d->set_lane_id(lane_id);
  d->set_direction(v1::LANE_DIRECTION_READ);
  d->set_segment_fd_index(segment_index);
  d->set_peer_doorbell_fd_index(bell_index);
  d->set_peer_attachment_id(100 + lane_id);
}

TEST(AttachTest, LanesFollowingTheReplyArePartOfTheAttach) {
  LaneFds a, b, c;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage reply;
    v1::AttachReply* r = reply.mutable_attach_reply();
    r->set_attachment_id(1);
    r->set_doorbell_fd_index(0);
    DescribeReadLane(r->add_lanes(), 10, 1, 2);
    r->set_lanes_following(2);
    Send(fd, reply, {a.own_bell, a.segment.fd(), a.peer_bell});
    v1::AttachMessage more;
    DescribeReadLane(more.mutable_lane_added()->add_lanes(), 11, 0, 1);
    DescribeReadLane(more.mutable_lane_added()->add_lanes(), 12, 2, 3);
    Send(fd, more, {b.segment.fd(), b.peer_bell, c.segment.fd(), c.peer_bell});
  });
  auto hs = Attach("chan", v1::ROLE_CONSUMER, OptionsFor(daemon));
  ASSERT_TRUE(hs.ok()) << hs.status();
  ASSERT_EQ(hs->lanes.size(), 3u);
  EXPECT_EQ(hs->lanes[0].peer.lane_id, 10u);
  EXPECT_EQ(hs->lanes[1].peer.lane_id, 11u);
  EXPECT_EQ(hs->lanes[2].peer.lane_id, 12u);
  EXPECT_EQ(hs->lanes[2].peer.attachment_id, 112u);
}

TEST(AttachTest, SomethingElseWhereAnnouncedLanesBelongIsDataLoss) {
  LaneFds a;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage reply;
    reply.mutable_attach_reply()->set_doorbell_fd_index(0);
    reply.mutable_attach_reply()->set_lanes_following(1);
    Send(fd, reply, {a.own_bell});
    v1::AttachMessage removed;
    removed.mutable_lane_removed()->set_lane_id(4);
    Send(fd, removed);
  });
  auto hs = Attach("chan", v1::ROLE_CONSUMER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
  EXPECT_THAT(std::string(hs.status().message()), HasSubstr("announced 1 more lanes"));
}

TEST(AttachTest, MoreLanesThanAnnouncedIsDataLoss) {
  LaneFds a, b, c;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage reply;
    reply.mutable_attach_reply()->set_doorbell_fd_index(0);
    reply.mutable_attach_reply()->set_lanes_following(1);
    Send(fd, reply, {a.own_bell});
    v1::AttachMessage more;
    DescribeReadLane(more.mutable_lane_added()->add_lanes(), 1, 0, 1);
    DescribeReadLane(more.mutable_lane_added()->add_lanes(), 2, 2, 3);
    Send(fd, more, {b.segment.fd(), b.peer_bell, c.segment.fd(), c.peer_bell});
  });
  auto hs = Attach("chan", v1::ROLE_CONSUMER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
}

TEST(AttachTest, AFollowingLaneRepeatingAReplyLaneIsDataLoss) {
  LaneFds a, b;
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage reply;
    reply.mutable_attach_reply()->set_doorbell_fd_index(0);
    DescribeReadLane(reply.mutable_attach_reply()->add_lanes(), 5, 1, 2);
    reply.mutable_attach_reply()->set_lanes_following(1);
    Send(fd, reply, {a.own_bell, a.segment.fd(), a.peer_bell});
    v1::AttachMessage more;
    DescribeReadLane(more.mutable_lane_added()->add_lanes(), 5, 0, 1);
    Send(fd, more, {b.segment.fd(), b.peer_bell});
  });
  auto hs = Attach("chan", v1::ROLE_CONSUMER, OptionsFor(daemon));
  EXPECT_TRUE(absl::IsDataLoss(hs.status())) << hs.status();
  EXPECT_THAT(std::string(hs.status().message()), HasSubstr("lane 5 twice"));
}

TEST(AttachTest, AnnouncedLanesThatNeverComeHitTheTimeout) {
  LaneFds a;
  int wake[2];
  ASSERT_EQ(::pipe2(wake, O_CLOEXEC), 0);
  FakeDaemon daemon([&](int fd, const v1::AttachRequest&) {
    v1::AttachMessage reply;
    reply.mutable_attach_reply()->set_doorbell_fd_index(0);
    reply.mutable_attach_reply()->set_lanes_following(3);
    Send(fd, reply, {a.own_bell});
    char byte;
    (void)!::read(wake[0], &byte, 1);  // hold the connection open, send no lanes
  });
  AttachOptions options = OptionsFor(daemon);
  options.attach_timeout = absl::Milliseconds(200);
  auto hs = Attach("chan", v1::ROLE_CONSUMER, options);
  EXPECT_TRUE(absl::IsDeadlineExceeded(hs.status())) << hs.status();
  EXPECT_THAT(std::string(hs.status().message()), HasSubstr("waiting for 3 of 3 announced lanes"));
  (void)!::write(wake[1], "x", 1);
  ::close(wake[1]);
  ::close(wake[0]);
}

TEST(AttachTest, NoDaemonIsUnavailableWithAdvice) {
  char tmpl[] = "/tmp/shmlane-attach-test-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  AttachOptions options;
  options.runtime_dir = dir;
  auto hs = Attach("chan", v1::ROLE_PRODUCER, options);
  EXPECT_TRUE(absl::IsUnavailable(hs.status())) << hs.status();
  EXPECT_THAT(std::string(hs.status().message()),
              HasSubstr("shmlaned is not running at " + dir + "/attach.sock"));
  ::rmdir(dir.c_str());
}

// DaemonWatch, the hang-up check Producer and Client share: messages go to
// the caller, a hang-up closes the socket and starts the resume backoff (5 ms,
// doubling), and nothing is looked at without a socket.
TEST(DaemonWatchTest, MessagesHangUpAndBackoff) {
  char tmpl[] = "/tmp/shmlane-attach-test-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/attach.sock";
  const int listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listen_fd, 1), 0);
  auto socket = AttachSocket::Connect(path, absl::Seconds(5));
  ASSERT_TRUE(socket.ok()) << socket.status();
  const int daemon = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(daemon, 0);

  DaemonWatch watch;
  std::vector<std::string> seen;
  auto note = [&](const v1::AttachMessage& m) {
    seen.push_back(m.has_goodbye() ? m.goodbye().reason() : "other");
  };
  const int64_t t = 1'000'000'000;
  EXPECT_FALSE(watch.Check(t, nullptr, note));   // nothing to look at
  EXPECT_FALSE(watch.Check(t, &*socket, note));  // nothing pending
  EXPECT_FALSE(watch.gone());
  v1::AttachMessage goodbye;
  goodbye.mutable_goodbye()->set_reason("bye");
  SendPacket(daemon, goodbye.SerializeAsString(), {});
  EXPECT_FALSE(watch.Check(t, &*socket, note));
  EXPECT_EQ(seen, std::vector<std::string>{"bye"});
  EXPECT_FALSE(watch.gone());

  ::close(daemon);  // the daemon hangs up
  EXPECT_TRUE(watch.Check(t, &*socket, note)) << "a resume is due at once after the hang-up";
  EXPECT_TRUE(watch.gone());
  EXPECT_FALSE(socket->is_open());
  watch.RetryLater(t);  // no daemon yet: 5 ms
  EXPECT_FALSE(watch.Check(t + 4'999'999, &*socket, note));
  EXPECT_TRUE(watch.Check(t + 5'000'000, &*socket, note));
  watch.RetryLater(t + 5'000'000);  // then 10 ms
  EXPECT_FALSE(watch.Check(t + 14'999'999, nullptr, note));
  EXPECT_TRUE(watch.Check(t + 15'000'000, nullptr, note));
  watch.Reconnected();
  EXPECT_FALSE(watch.gone());
  EXPECT_FALSE(watch.Check(t + 15'000'000, &*socket, note));  // closed: nothing to look at
  EXPECT_EQ(seen.size(), 1u);
  ::close(listen_fd);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace shmlane::client::internal
