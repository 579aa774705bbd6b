// Single-process cost of moving one frame through a lane (write + read in
// the same thread, so no cache line crosses cores): the floor under every
// multi-process number.
#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "benchmark/benchmark.h"
#include "dataplane/lane.h"

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

}  // namespace
}  // namespace shmlane::dataplane

BENCHMARK_MAIN();
