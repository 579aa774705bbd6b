#include "dataplane/lane_set.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace shmlane::dataplane {
namespace {

struct Lane {
  Segment observer;
  std::shared_ptr<const Doorbell> producer_bell;
  std::optional<Producer> producer;
};

// Builds `count` lanes whose consumers share `consumer_bell`, added to `set`.
std::vector<Lane> MakeLanes(int count, LaneSet& set, LaneOptions options = {}) {
  std::vector<Lane> lanes(count);
  for (int i = 0; i < count; ++i) {
    options.lane_id = i;
    lanes[i].observer = *CreateLaneSegment(options);
    lanes[i].producer_bell = std::make_shared<Doorbell>(*Doorbell::Create());
    auto p = Producer::Attach(*Segment::Map(*lanes[i].observer.DupFd(), Access::kReadWrite),
                              {lanes[i].producer_bell, set.doorbell()});
    EXPECT_TRUE(p.ok()) << p.status();
    lanes[i].producer.emplace(std::move(*p));
    auto c = Consumer::Attach(*Segment::Map(*lanes[i].observer.DupFd(), Access::kReadWrite),
                              {set.doorbell(), lanes[i].producer_bell});
    EXPECT_TRUE(c.ok()) << c.status();
    set.Add(i, std::move(*c));
  }
  return lanes;
}

TEST(LaneSetTest, FairRoundRobinWithBatchCap) {
  LaneSet set(std::make_shared<Doorbell>(*Doorbell::Create()), /*per_lane_batch=*/4);
  std::vector<Lane> lanes = MakeLanes(3, set, {.sample_every = 0});
  std::byte b[8] = {};
  for (int i = 0; i < 100; ++i) ASSERT_EQ(lanes[0].producer->TryWrite(b), WriteResult::kOk);
  ASSERT_EQ(lanes[1].producer->TryWrite(b), WriteResult::kOk);
  ASSERT_EQ(lanes[2].producer->TryWrite(b), WriteResult::kOk);
  std::map<uint64_t, int> got;
  auto on_frame = [&](uint64_t id, std::span<const std::byte>) { ++got[id]; };
  auto on_end = [](uint64_t, ReadResult, const absl::Status&) {};
  EXPECT_EQ(set.Poll(on_frame, on_end), 6u);  // 4 from the busy lane, 1 from each other
  EXPECT_EQ(got[0], 4);
  EXPECT_EQ(got[1], 1);
  EXPECT_EQ(got[2], 1);
}

TEST(LaneSetTest, ClosedLanesAreReportedAndRemoved) {
  LaneSet set(std::make_shared<Doorbell>(*Doorbell::Create()));
  std::vector<Lane> lanes = MakeLanes(2, set);
  std::byte b[8] = {};
  ASSERT_EQ(lanes[1].producer->TryWrite(b), WriteResult::kOk);
  lanes[1].producer->Close();
  std::vector<uint64_t> ended;
  int frames = 0;
  set.Poll([&](uint64_t, std::span<const std::byte>) { ++frames; },
           [&](uint64_t id, ReadResult r, const absl::Status&) {
             EXPECT_EQ(r, ReadResult::kClosed);
             ended.push_back(id);
           });
  EXPECT_EQ(frames, 1);  // the frame before the close is delivered
  EXPECT_EQ(ended, std::vector<uint64_t>{1});
  EXPECT_EQ(set.size(), 1u);
  EXPECT_TRUE(set.Remove(0));
  EXPECT_FALSE(set.Remove(0));
}

TEST(LaneSetTest, WaitWakesOnAnyLane) {
  LaneSet set(std::make_shared<Doorbell>(*Doorbell::Create()), 64, {.spin = absl::Microseconds(5)});
  std::vector<Lane> lanes = MakeLanes(8, set);
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(20));
    std::byte b[8] = {};
    EXPECT_EQ(lanes[5].producer->TryWrite(b), WriteResult::kOk);
  });
  uint64_t from = 99;
  const size_t n =
      set.Wait([&](uint64_t id, std::span<const std::byte>) { from = id; },
               [](uint64_t, ReadResult, const absl::Status&) {}, absl::Now() + absl::Seconds(10));
  writer.join();
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(from, 5u);
  EXPECT_EQ(set.Wait([](uint64_t, std::span<const std::byte>) {},
                     [](uint64_t, ReadResult, const absl::Status&) {},
                     absl::Now() + absl::Milliseconds(5)),
            0u);
}

// Callbacks may add and remove lanes (the client library learns of peers
// from inside its reads): the pass stays valid and sees consistent lanes.
TEST(LaneSetTest, CallbacksMayAddAndRemoveLanes) {
  LaneSet set(std::make_shared<Doorbell>(*Doorbell::Create()));
  std::vector<Lane> lanes = MakeLanes(4, set, {.sample_every = 0});
  LaneSet spare(
      set.doorbell());  // holds the extra lane's first consumer; the callback adds another
  std::vector<Lane> extra = MakeLanes(1, spare, {.sample_every = 0});
  std::byte b[8] = {};
  for (auto& l : lanes) ASSERT_EQ(l.producer->TryWrite(b), WriteResult::kOk);
  ASSERT_EQ(lanes[2].producer->TryWrite(b), WriteResult::kOk);
  std::map<uint64_t, int> got;
  bool changed = false;
  auto on_frame = [&](uint64_t id, std::span<const std::byte>) {
    ++got[id];
    if (!changed) {
      changed = true;
      EXPECT_TRUE(set.Remove(id == 1 ? 2 : 1));  // a lane not visited yet, or visited
      EXPECT_TRUE(set.Remove(id));               // the lane being drained right now
      auto c = Consumer::Attach(*Segment::Map(*extra[0].observer.DupFd(), Access::kReadWrite),
                                {set.doorbell(), extra[0].producer_bell});
      ASSERT_TRUE(c.ok());
      set.Add(9, std::move(*c));
    }
  };
  auto on_end = [](uint64_t, ReadResult, const absl::Status&) {};
  for (int i = 0; i < 4; ++i) set.Poll(on_frame, on_end);
  EXPECT_EQ(set.size(), 3u);  // 4 - 2 removed + 1 added
  EXPECT_TRUE(set.Remove(9));
  EXPECT_FALSE(set.Remove(9));
}

TEST(LaneSetTest, ManyThreadsFanIn) {
  constexpr int kLanes = 8;
  const uint64_t per_lane = 20'000;
  LaneSet set(std::make_shared<Doorbell>(*Doorbell::Create()), 32, {.spin = absl::Microseconds(2)});
  std::vector<Lane> lanes = MakeLanes(kLanes, set, {.ring_bytes = 8192, .max_frame_bytes = 64});
  std::vector<std::thread> writers;
  for (int i = 0; i < kLanes; ++i) {
    // A failing writer stops and closes its lane, so the reader below never
    // waits for frames that will not come.
    writers.emplace_back([&, i] {
      for (uint64_t s = 0; s < per_lane; ++s) {
        const WriteResult r = lanes[i].producer->Write({reinterpret_cast<std::byte*>(&s), 8},
                                                       absl::Now() + absl::Seconds(30));
        if (r != WriteResult::kOk) {
          ADD_FAILURE() << "lane " << i << " frame " << s << ": " << ToString(r);
          break;
        }
      }
      lanes[i].producer->Close();
    });
  }
  std::vector<uint64_t> next(kLanes, 0);
  int ended = 0;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!set.empty() && absl::Now() < give_up) {
    set.Wait(
        [&](uint64_t id, std::span<const std::byte> f) {
          uint64_t s;
          std::memcpy(&s, f.data(), 8);
          EXPECT_EQ(s, next[id]) << "lane " << id;
          next[id] = s + 1;
        },
        [&](uint64_t, ReadResult r, const absl::Status&) {
          EXPECT_EQ(r, ReadResult::kClosed);
          ++ended;
        },
        absl::Now() + absl::Seconds(30));
  }
  EXPECT_TRUE(set.empty()) << "lanes still open after 60 s";
  // A reader that gave up closes the lanes, which unblocks any writer.
  for (int i = 0; i < kLanes; ++i) set.Remove(i);
  for (auto& w : writers) w.join();
  EXPECT_EQ(ended, kLanes);
  for (int i = 0; i < kLanes; ++i) EXPECT_EQ(next[i], per_lane);
}

}  // namespace
}  // namespace shmlane::dataplane

namespace shmlane::dataplane {
namespace {

// Durable reading: a kept frame is not consumed, ends the pass, and is the
// lane's next frame again until ReleaseKept(); its position is the lane
// offset it was delivered at.
TEST(LaneSetTest, KeepLeavesTheFrameUnconsumedUntilReleaseKept) {
  LaneSet set(std::make_shared<Doorbell>(*Doorbell::Create()));
  std::vector<Lane> lanes = MakeLanes(2, set, {.sample_every = 0});
  std::byte b[8] = {};
  for (int i = 0; i < 3; ++i) ASSERT_EQ(lanes[0].producer->TryWrite(b), WriteResult::kOk);
  ASSERT_EQ(lanes[1].producer->TryWrite(b), WriteResult::kOk);
  auto on_end = [](uint64_t, ReadResult, const absl::Status&) {};
  std::vector<std::pair<uint64_t, uint64_t>> seen;  // (lane, position)
  auto keep = [&](uint64_t id, std::span<const std::byte>) {
    seen.emplace_back(id, set.delivering_position());
    set.Keep();
  };
  EXPECT_FALSE(set.delivering());
  ASSERT_EQ(set.Poll(keep, on_end), 1u);  // the pass ends at the kept frame
  ASSERT_EQ(seen.size(), 1u);
  const auto first = seen[0];
  // Not released: a later pass delivers the same frame again, at the same
  // position (the next pass starts at the other lane, whose frame is kept
  // in turn and so also stays).
  ASSERT_EQ(set.Poll(keep, on_end), 1u);
  ASSERT_EQ(set.Poll(keep, on_end), 1u);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[1].first, 1u);
  EXPECT_EQ(seen[2], first) << "the kept frame was not delivered again";
  EXPECT_TRUE(set.ReleaseKept());
  EXPECT_FALSE(set.ReleaseKept());  // nothing kept any more
  // Everything else still arrives, positions grow by one record per frame.
  std::map<uint64_t, std::vector<uint64_t>> positions;
  auto all = [&](uint64_t id, std::span<const std::byte>) {
    positions[id].push_back(set.delivering_position());
  };
  while (set.Poll(all, on_end) > 0) {
  }
  size_t total = 0;
  for (const auto& [id, p] : positions) {
    total += p.size();
    for (size_t i = 1; i < p.size(); ++i) EXPECT_GT(p[i], p[i - 1]);
  }
  EXPECT_EQ(total, 3u);  // 4 written, lane 0's first released above
}

// A consumer that leaves publishes what it consumed, not the frame it held,
// sets no closed flag, and the next consumer continues there with the
// counters carried on.
TEST(LaneSetTest, LeaveAllHandsTheLanesToTheNextConsumer) {
  LaneOptions options{.sample_every = 0};
  Segment observer = *CreateLaneSegment(options);
  auto producer_bell = std::make_shared<Doorbell>(*Doorbell::Create());
  auto consumer_bell = std::make_shared<Doorbell>(*Doorbell::Create());
  auto p = Producer::Attach(*Segment::Map(*observer.DupFd(), Access::kReadWrite),
                            {producer_bell, consumer_bell});
  ASSERT_TRUE(p.ok()) << p.status();
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_EQ(p->TryWrite(std::as_bytes(std::span(&i, 1))), WriteResult::kOk);
  }
  auto on_end = [](uint64_t, ReadResult, const absl::Status&) {};
  uint64_t position_of_held = 0;
  {
    LaneSet set(consumer_bell);
    auto c = Consumer::Attach(*Segment::Map(*observer.DupFd(), Access::kReadWrite),
                              {consumer_bell, producer_bell});
    ASSERT_TRUE(c.ok()) << c.status();
    set.Add(7, std::move(*c));
    int n = 0;
    // Consume 4, keep the 5th.
    auto take = [&](uint64_t, std::span<const std::byte>) {
      if (++n == 5) {
        position_of_held = set.delivering_position();
        set.Keep();
      }
    };
    set.Poll(take, on_end);
    ASSERT_EQ(n, 5);
    set.LeaveAll();
    EXPECT_TRUE(set.empty());
  }
  absl::StatusOr<LaneSnapshot> snap = Observe(observer);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->consumer_closed, 0u);
  EXPECT_EQ(snap->consumer.frames, 4u);
  EXPECT_EQ(p->TryWrite(std::as_bytes(std::span(&position_of_held, 1))), WriteResult::kOk)
      << "the producer must not see the lane closed";
  auto next = Consumer::Attach(*Segment::Map(*observer.DupFd(), Access::kReadWrite),
                               {consumer_bell, producer_bell});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->position(), position_of_held);
  PeekResult r = next->Peek();
  ASSERT_EQ(r.result, ReadResult::kOk);
  uint64_t value = 0;
  std::memcpy(&value, r.data.data(), sizeof(value));
  EXPECT_EQ(value, 4u);  // frames 0..3 were consumed; 4 was held
  next->Release();
  snap = Observe(observer);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->consumer.frames, 5u) << "the next consumer continues the counters";
}

}  // namespace
}  // namespace shmlane::dataplane
