// Fanout's two roles in the harness's processes: the publisher (the server
// process) and the subscribers (the client processes). Barrier, slots and
// reaping are harness.cc's.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/loadgen/frame.h"
#include "bench/loadgen/harness_internal.h"

namespace shmlane::bench::internal {
namespace {

IoBytes IoSince(const IoBytes& start) {
  const IoBytes now = SelfIo();
  return IoBytes{now.read - start.read, now.written - start.written};
}

// The publisher's measured part: streams frames to every subscriber from
// start_ns to end_ns, as fast as the slowest subscriber takes them.
absl::Status PublishLoop(FanoutPublisher& pub, const RunSpec& spec, const RunClock& clock,
                         WorkerSlot* slot) {
  std::vector<std::byte> frame(spec.frame_bytes, std::byte{0x5a});
  // Touch::kRead: a pattern, and per frame stamps, sequence number and
  // checksum (frame.h), which every subscriber verifies.
  std::optional<FrameSealer> sealer;
  if (spec.touch == Touch::kRead) sealer.emplace(frame, 1);
  CpuUsage at_open;
  int64_t opened_at = 0;
  uint64_t seq = 0, at_open_frames = 0;
  FrameStamps stamps{clock.start_ns, clock.start_ns};
  WaitUntil(clock.start_ns, WaitMode::kPark, 0);
  while (true) {
    // A fresh clock reading (and send stamp) every kFanoutSampleEvery
    // frames: the frames the subscribers sample carry their true send time.
    if (seq % kFanoutSampleEvery == 0) {
      const int64_t now = NowNs();
      if (opened_at == 0 && now >= clock.measure_ns) {
        opened_at = now;
        at_open = SelfUsage();
        at_open_frames = seq;
      }
      if (now >= clock.end_ns) {
        if (opened_at != 0) {
          slot->usage = Diff(SelfUsage(), at_open);
          slot->window_ns = now - opened_at;
          slot->window_frames = seq - at_open_frames;
          slot->window_bytes = slot->window_frames * spec.frame_bytes;
        }
        break;
      }
      stamps = {now, now};
      if (!sealer) WriteStamps(frame, stamps);
    }
    if (sealer) sealer->Seal(stamps, seq);
    // A saturated publisher always has more to send: batches fill up.
    if (absl::Status s = pub.Send(frame, /*more=*/true); !s.ok()) {
      slot->total_frames = seq;
      return s;
    }
    ++seq;
  }
  slot->total_frames = seq;
  return absl::OkStatus();
}

}  // namespace

void PublisherMain(Transport& transport, const RunSpec& spec, SharedControl* ctl) {
  ChildInit(0, spec.pin);
  WorkerSlot* slot = &ctl->server;
  auto pub = transport.StartPublisher();
  if (!pub.ok()) {
    Fail(slot, pub.status());
    Publish(slot);
    ctl->server_ready.store(2, std::memory_order_release);
    FutexWakeAll(&ctl->server_ready);
    _exit(1);
  }
  ctl->server_ready.store(1, std::memory_order_release);
  FutexWakeAll(&ctl->server_ready);
  // Subscribers attach or connect meanwhile; link them until the barrier.
  while (ctl->go.load(std::memory_order_acquire) == 0) {
    if (!(*pub)->ServiceControl(NowNs() + 10'000'000)) FutexWait(&ctl->go, 0, INT64_MAX);
  }
  if (ctl->go.load(std::memory_order_acquire) != 1) _exit(0);
  const RunClock clock = ctl->clock;
  absl::Status status =
      (*pub)->AwaitSubscribers(NowNs() + 30'000'000'000 + int64_t{spec.clients} * 100'000'000);
  const IoBytes io_start = SelfIo();
  if (status.ok()) status = PublishLoop(**pub, spec, clock, slot);
  if (absl::Status s = (*pub)->Close(); status.ok() && !s.ok()) status = s;
  slot->flushes = (*pub)->flushes();
  slot->copied_bytes = (*pub)->copied_bytes();
  slot->io = IoSince(io_start);
  if (!status.ok()) Fail(slot, status);
  Publish(slot);
  std::fflush(nullptr);
  _exit(status.ok() ? 0 : 1);
}

void SubscriberMain(Transport& transport, const RunSpec& spec, SharedControl* ctl, int index,
                    Histogram* latency) {
  ChildInit(1 + index, spec.pin);
  WorkerSlot* slot = &ctl->clients[index];
  auto sub = transport.Subscribe(index);
  if (!sub.ok()) {
    Fail(slot, sub.status());
    Publish(slot);
  }
  ctl->clients_ready.fetch_add(1, std::memory_order_acq_rel);
  FutexWakeAll(&ctl->clients_ready);
  if (!sub.ok()) _exit(1);
  FutexWait(&ctl->go, 0, INT64_MAX);
  if (ctl->go.load(std::memory_order_acquire) != 1) _exit(0);
  const RunClock clock = ctl->clock;
  const IoBytes io_start = SelfIo();

  auto hist = std::make_unique<Histogram>();
  ServerSink sink(spec, clock, nullptr, hist.get());
  // The publisher stops at end_ns; it may have waited up to its own
  // deadline for the subscribers to link, and then drains and closes.
  const int64_t deadline = clock.end_ns + 40'000'000'000 + int64_t{spec.clients} * 100'000'000;
  absl::Status status = (*sub)->Receive(sink, deadline);
  if (status.ok() && sink.bad_frames() > 0) {
    status = absl::DataLossError(
        absl::StrCat(sink.bad_frames(), " of ", sink.total_frames(),
                     " frames failed the payload checksum; the first: ", sink.first_bad_frame()));
  }
  if (status.ok() && !sink.window_closed()) {
    // The publisher closed before the end: the window still lasts until then.
    WaitUntil(clock.end_ns, WaitMode::kPark, 0);
    sink.Tick(NowNs());
  }
  slot->window_frames = sink.window_frames();
  slot->window_bytes = sink.window_bytes();
  slot->window_ns = sink.window_closed() ? sink.window_ns() : 0;
  slot->total_frames = sink.total_frames();
  slot->usage = CpuUsage{sink.cpu_user_ns(), sink.cpu_sys_ns(), sink.voluntary_switches(),
                         sink.involuntary_switches()};
  slot->io = IoSince(io_start);
  *latency = *hist;
  sub->reset();  // detach before reporting
  if (!status.ok()) Fail(slot, status);
  Publish(slot);
  std::fflush(nullptr);
  _exit(status.ok() ? 0 : 1);
}

}  // namespace shmlane::bench::internal
