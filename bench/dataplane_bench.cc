// Single-process cost of moving one frame through a lane (write + read in
// the same thread, so no cache line crosses cores): the floor under every
// multi-process number.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "dataplane/broadcast.h"
#include "dataplane/lane.h"
#include "dataplane/lane_set.h"

namespace shmlane::dataplane {
namespace {

struct Lane {
  Segment seg;
  std::optional<Producer> producer;
  std::optional<Consumer> consumer;
};

Lane MakeLane(uint32_t frame_bytes) {
  Lane l;
  LaneOptions o;
  // Ring sized to the frame: 64 frames in flight at most, so the benchmark
  // measures the protocol, not cache misses on a ring larger than L2.
  o.ring_bytes = std::max<uint64_t>(uint64_t{1} << 16, std::bit_ceil(uint64_t{frame_bytes} * 256));
  o.max_frame_bytes = std::max<uint32_t>(frame_bytes, 64);
  o.sample_every = 64;
  l.seg = *CreateLaneSegment(o);
  auto pb = std::make_shared<const Doorbell>(*Doorbell::Create());
  auto cb = std::make_shared<const Doorbell>(*Doorbell::Create());
  l.producer.emplace(
      *Producer::Attach(*Segment::Map(*l.seg.DupFd(), Access::kReadWrite), {pb, cb}));
  l.consumer.emplace(
      *Consumer::Attach(*Segment::Map(*l.seg.DupFd(), Access::kReadWrite), {cb, pb}));
  return l;
}

// TryWrite + TryRead: one publish (release store + fence) per frame each way.
void BM_WriteRead(benchmark::State& state) {
  const auto n = static_cast<uint32_t>(state.range(0));
  Lane l = MakeLane(n);
  std::vector<std::byte> in(n, std::byte{1}), out(n);
  size_t len = 0;
  for (auto _ : state) {
    if (l.producer->TryWrite(in) != WriteResult::kOk) state.SkipWithError("write failed");
    if (l.consumer->TryRead(out, &len) != ReadResult::kOk) state.SkipWithError("read failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * n);
}
BENCHMARK(BM_WriteRead)->Arg(64)->Arg(1024)->Arg(64 << 10);

// Zero-copy Reserve/Commit and Peek/Release, batched 64 frames per publish
// and per head release: the path the streaming demo uses.
void BM_ZeroCopyBatch64(benchmark::State& state) {
  const auto n = static_cast<uint32_t>(state.range(0));
  Lane l = MakeLane(n);
  std::vector<std::byte> in(n, std::byte{1});
  constexpr int kBatch = 64;
  uint64_t sink = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      Reservation r = l.producer->Reserve(n);
      std::memcpy(r.data.data(), in.data(), n);
      l.producer->Commit(n, PublishMode::kDefer);
    }
    l.producer->Publish();
    l.consumer->Drain([&](std::span<const std::byte> f) { sink += f.size(); }, kBatch);
  }
  benchmark::DoNotOptimize(sink);
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetBytesProcessed(state.iterations() * kBatch * n);
}
BENCHMARK(BM_ZeroCopyBatch64)->Arg(64)->Arg(1024)->Arg(64 << 10);

// Park/unpark round trip through a LaneSet of N lanes: the main thread
// writes one frame to lane i % N and parks on a reply lane; a consumer
// thread parked in LaneSet::Wait (spin 0: every wait parks) wakes, reads it
// and writes the reply. One iteration = two park/unpark pairs, one of them
// through the set (announce on N lanes, one ppoll, re-check). Arg 1: 0 =
// one doorbell shared by all producers, 1 = a doorbell per lane (epoll).
void BM_ParkUnpark(benchmark::State& state) {
  const auto lanes_n = static_cast<int>(state.range(0));
  const bool per_lane = state.range(1) != 0;
#ifdef SHMLANE_BENCH_BASE_API
  if (per_lane) {
    state.SkipWithError("no per-lane doorbells in this build");
    return;
  }
#endif
  const WaitOptions park_at_once{absl::ZeroDuration()};
  LaneOptions o;
  o.ring_bytes = 1 << 16;
  o.max_frame_bytes = 64;
  o.sample_every = 0;
  auto shared_bell = std::make_shared<const Doorbell>(*Doorbell::Create());
#ifdef SHMLANE_BENCH_BASE_API
  LaneSet set(shared_bell, 64, park_at_once);
#else
  LaneSet set = per_lane ? LaneSet(64, park_at_once) : LaneSet(shared_bell, 64, park_at_once);
#endif
  std::vector<Segment> segs;
  std::vector<Producer> producers;
  for (int i = 0; i < lanes_n; ++i) {
    segs.push_back(*CreateLaneSegment(o));
    auto pb = std::make_shared<const Doorbell>(*Doorbell::Create());
    auto cb = per_lane ? std::make_shared<const Doorbell>(*Doorbell::Create()) : shared_bell;
    producers.push_back(
        *Producer::Attach(*Segment::Map(*segs.back().DupFd(), Access::kReadWrite), {pb, cb}));
    set.Add(i, *Consumer::Attach(*Segment::Map(*segs.back().DupFd(), Access::kReadWrite), {cb, pb},
                                 park_at_once));
  }
  Segment reply_seg = *CreateLaneSegment(o);
  auto rpb = std::make_shared<const Doorbell>(*Doorbell::Create());
  auto rcb = std::make_shared<const Doorbell>(*Doorbell::Create());
  Producer reply_out =
      *Producer::Attach(*Segment::Map(*reply_seg.DupFd(), Access::kReadWrite), {rpb, rcb});
  Consumer reply_in = *Consumer::Attach(*Segment::Map(*reply_seg.DupFd(), Access::kReadWrite),
                                        {rcb, rpb}, park_at_once);
  std::atomic<bool> stop{false};
  std::thread server([&] {
    const std::byte ack[8] = {};
    while (!stop.load(std::memory_order_relaxed)) {
      set.Wait([&](uint64_t, std::span<const std::byte>) { (void)reply_out.TryWrite(ack); },
               [](uint64_t, ReadResult, const absl::Status&) {},
               absl::Now() + absl::Milliseconds(100));
    }
  });
  const std::byte ping[8] = {};
  std::byte pong[64];
  size_t len = 0;
  uint64_t i = 0;
  for (auto _ : state) {
    if (producers[i++ % lanes_n].TryWrite(ping) != WriteResult::kOk) {
      state.SkipWithError("write failed");
      break;
    }
    if (reply_in.Read(pong, &len, absl::Now() + absl::Seconds(5)) != ReadResult::kOk) {
      state.SkipWithError("no reply");
      break;
    }
  }
  stop = true;
  server.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParkUnpark)
    ->ArgsProduct({{1, 32, 512}, {0, 1}})
    ->ArgNames({"lanes", "per_lane"})
    ->UseRealTime();

// Broadcast fan-out: one writer, N readers of one ring in this thread. The
// writer publishes 64 frames (Reserve/Commit, one publish), then every
// reader drains them zero-copy. Items are deliveries (frames x readers):
// the protocol's cost per delivery, with no copy per reader. The readers do
// not read the payload, so bytes_per_second is a counting-only ceiling, not
// a throughput figure (docs/BENCHMARKING rule 3); the writer's copy is in.
void BM_BroadcastFanout(benchmark::State& state) {
  const auto n = static_cast<uint32_t>(state.range(0));
  const auto readers = static_cast<uint32_t>(state.range(1));
  BroadcastOptions o;
  o.ring_bytes = std::max<uint64_t>(uint64_t{1} << 16, std::bit_ceil(uint64_t{n + 32} * 256));
  o.max_frame_bytes = std::max<uint32_t>(n, 64);
  o.max_readers = readers;
  Segment ring = *CreateBroadcastRing(o);
  auto own = std::make_shared<const Doorbell>(*Doorbell::Create());
  std::optional<BroadcastWriter> w;
  w.emplace(*BroadcastWriter::Attach(*Segment::Map(*ring.DupFd(), Access::kReadWrite), {own}));
  std::vector<BroadcastReader> rs;
  for (uint32_t i = 0; i < readers; ++i) {
    Segment page = *CreateReaderPage(ring, i);
    (void)*ActivateReaderSlot(ring, i);
    auto rb = std::make_shared<const Doorbell>(*Doorbell::Create());
    auto wb = std::make_shared<const Doorbell>(*Doorbell::Create());
    if (!w->AddReader(i, *Segment::Map(*page.DupFd(), Access::kReadOnly), rb, wb).ok()) {
      state.SkipWithError("AddReader failed");
      return;
    }
    rs.push_back(*BroadcastReader::Attach(*Segment::Map(*ReopenReadOnly(ring), Access::kReadOnly),
                                          *Segment::Map(*page.DupFd(), Access::kReadWrite), i,
                                          {rb, wb}));
  }
  std::vector<std::byte> in(n, std::byte{1});
  uint64_t sum = 0;
  for (auto _ : state) {
    for (int k = 0; k < 64; ++k) {
      Reservation r = w->Reserve(n);
      if (r.result != WriteResult::kOk) {
        state.SkipWithError("reserve failed");
        return;
      }
      std::memcpy(r.data.data(), in.data(), n);
      w->Commit(n, PublishMode::kDefer);
    }
    w->Publish();
    for (BroadcastReader& r : rs) {
      r.Drain([&](std::span<const std::byte> d) { sum += d.size(); }, 64);
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * 64 * readers);
  state.SetBytesProcessed(state.iterations() * 64 * readers * n);
}
BENCHMARK(BM_BroadcastFanout)
    ->ArgsProduct({{64, 64 << 10}, {1, 8, 32}})
    ->ArgNames({"bytes", "readers"});

}  // namespace
}  // namespace shmlane::dataplane

BENCHMARK_MAIN();
