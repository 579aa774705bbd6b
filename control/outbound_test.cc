#include "control/outbound.h"

#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "control/attach_wire.h"
#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

class RecordingWaker final : public OutboundWaker {
 public:
  void WatchWritable(int fd, bool watch) override { watches.emplace_back(fd, watch); }
  void WakeAt(absl::Time when) override { wake_at = when; }
  std::vector<std::pair<int, bool>> watches;
  absl::Time wake_at = absl::InfiniteFuture();
};

v1::AttachMessage Numbered(uint64_t n) {
  v1::AttachMessage m;
  m.mutable_lane_removed()->set_lane_id(n);
  return m;
}

class OutboundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    daemon_.Reset(fds[0]);
    peer_.Reset(fds[1]);
    int small = 4096;
    ::setsockopt(daemon_.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    queues_.SetWaker(&waker_);
  }
  void TearDown() override { queues_.SetWaker(nullptr); }

  // Sends numbered messages until one had to be queued; returns how many.
  uint64_t FillUntilQueued() {
    uint64_t n = 0;
    while (!queues_.HasPending() && n < 100000) queues_.Send(1, daemon_.get(), Numbered(n++), {});
    return n;
  }

  // Reads every packet the peer has now; -1 for end of stream.
  std::vector<int64_t> ReadAll(int timeout_ms = 0) {
    std::vector<int64_t> out;
    while (true) {
      absl::StatusOr<ReceivedPacket> p = ReceiveAttachMessage(peer_.get(), timeout_ms);
      if (absl::IsUnavailable(p.status())) {
        out.push_back(-1);
        return out;
      }
      if (!p.ok()) return out;
      out.push_back(p->message.has_goodbye()
                        ? -2
                        : static_cast<int64_t>(p->message.lane_removed().lane_id()));
    }
  }

  DaemonMetrics metrics_;
  OutboundQueues queues_{&metrics_};
  RecordingWaker waker_;
  dataplane::UniqueFd daemon_;
  dataplane::UniqueFd peer_;
};

TEST_F(OutboundTest, QueuesWhenTheKernelIsFullAndFlushesInOrder) {
  const uint64_t sent = FillUntilQueued();
  ASSERT_TRUE(queues_.HasPending());
  ASSERT_FALSE(waker_.watches.empty());
  EXPECT_EQ(waker_.watches.back(), std::make_pair(daemon_.get(), true));
  for (uint64_t i = sent; i < sent + 100; ++i) queues_.Send(1, daemon_.get(), Numbered(i), {});
  std::vector<int64_t> got;
  for (int round = 0; round < 1000 && queues_.HasPending(); ++round) {
    for (int64_t v : ReadAll()) got.push_back(v);
    queues_.Flush(1);
  }
  for (int64_t v : ReadAll()) got.push_back(v);
  ASSERT_FALSE(queues_.HasPending());
  EXPECT_EQ(waker_.watches.back(), std::make_pair(daemon_.get(), false));
  ASSERT_EQ(got.size(), sent + 100);
  for (uint64_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], static_cast<int64_t>(i));
  EXPECT_FALSE(queues_.Remove(1));
}

TEST_F(OutboundTest, APeerBeyondTheBoundIsDisconnectedAndCounted) {
  FillUntilQueued();
  for (size_t i = 0; i <= kMaxOutboundMessages; ++i) {
    queues_.Send(1, daemon_.get(), Numbered(i), {});
  }
  EXPECT_EQ(metrics_.Read().attach_send_overflows, 1u);
  EXPECT_FALSE(queues_.HasPending());  // the queue (and its fds) was dropped
  // The peer sees what the kernel already had, then the hang-up.
  std::vector<int64_t> got = ReadAll(1000);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), -1);
  // Later sends are discarded; Remove reports the overflow once.
  queues_.Send(1, daemon_.get(), Numbered(0), {});
  EXPECT_TRUE(queues_.Remove(1));
  EXPECT_FALSE(queues_.Remove(1));
}

TEST_F(OutboundTest, SendLastShutsDownOnceFlushed) {
  FillUntilQueued();
  v1::AttachMessage bye;
  bye.mutable_goodbye()->set_reason("test");
  queues_.SendLast(1, daemon_.get(), bye);
  EXPECT_NE(waker_.wake_at, absl::InfiniteFuture());  // the end deadline is scheduled
  std::vector<int64_t> got;
  for (int round = 0; round < 1000 && queues_.HasPending(); ++round) {
    for (int64_t v : ReadAll()) got.push_back(v);
    queues_.Flush(1);
  }
  for (int64_t v : ReadAll(1000)) got.push_back(v);
  ASSERT_GE(got.size(), 2u);
  EXPECT_EQ(got[got.size() - 2], -2);  // Goodbye, then the hang-up
  EXPECT_EQ(got.back(), -1);
}

TEST_F(OutboundTest, AnEndedPeerThatNeverReadsIsShutDownAtTheDeadline) {
  FillUntilQueued();
  v1::AttachMessage bye;
  bye.mutable_goodbye()->set_reason("test");
  queues_.SendLast(1, daemon_.get(), bye);
  queues_.Service();  // not due yet
  EXPECT_TRUE(queues_.HasPending());
  absl::SleepFor(kEndedFlushTimeout + absl::Milliseconds(50));
  queues_.Service();
  EXPECT_FALSE(queues_.HasPending());
  std::vector<int64_t> got = ReadAll(1000);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), -1);
}

TEST_F(OutboundTest, WithoutAWakerAFullSocketDisconnects) {
  queues_.SetWaker(nullptr);
  for (int i = 0; i < 100000; ++i) {
    queues_.Send(1, daemon_.get(), Numbered(i), {});
    char c;
    if (::recv(peer_.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) break;
  }
  EXPECT_FALSE(queues_.HasPending());
  std::vector<int64_t> got = ReadAll(1000);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), -1);
}

TEST_F(OutboundTest, QueuedFdsStayOpenUntilSent) {
  FillUntilQueued();
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  dataplane::UniqueFd write_end(p[1]);
  std::vector<dataplane::UniqueFd> fds;
  fds.emplace_back(p[0]);
  queues_.Send(1, daemon_.get(), Numbered(424242), std::move(fds));
  ASSERT_EQ(::write(write_end.get(), "x", 1), 1);
  for (int round = 0; round < 1000; ++round) {
    while (true) {
      absl::StatusOr<ReceivedPacket> r = ReceiveAttachMessage(peer_.get(), 0);
      if (!r.ok()) break;
      if (r->message.lane_removed().lane_id() != 424242) continue;
      ASSERT_EQ(r->fds.size(), 1u);
      char c = 0;
      ASSERT_EQ(::read(r->fds[0].get(), &c, 1), 1);  // the pipe's read end survived the queue
      EXPECT_EQ(c, 'x');
      return;
    }
    queues_.Flush(1);
  }
  FAIL() << "the packet with the fd never arrived";
}

}  // namespace
}  // namespace shmlane::control
