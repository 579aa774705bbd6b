// What the harness's processes share (harness.cc, harness_fanout.cc): the
// start barrier and one result slot per process in a shared anonymous
// mapping, and the set-up every child process does.
//
// Thread safety: each slot has one writer (its process), which publishes it
// once with `done` (release); the parent reads it after an acquire load.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/spec.h"
#include "bench/loadgen/sys.h"
#include "bench/loadgen/transport.h"

namespace shmlane::bench::internal {

// One process's results, written by that process once, read by the parent
// after `done` (release/acquire). Fanout: the server slot is the
// publisher's (window_frames: frames published in the window), each client
// slot a subscriber's (frames delivered to it).
struct alignas(64) WorkerSlot {
  std::atomic<uint32_t> done;
  uint32_t failed;
  char error[512];
  uint64_t window_frames;
  uint64_t window_bytes;
  int64_t window_ns;
  uint64_t total_frames;
  uint64_t unsent;
  uint64_t flushes;  // clients (fanout: the publisher): batches handed to the transport
  CpuUsage usage;
  // Fanout, over the whole run from the start barrier (warm-up included):
  uint64_t copied_bytes;  // publisher: FanoutPublisher::copied_bytes()
  IoBytes io;             // this process's read()/write() bytes (/proc/self/io)
};

// The start barrier and the result slots, in a shared anonymous mapping.
struct SharedControl {
  std::atomic<uint32_t> server_ready;   // 0 not yet, 1 listening, 2 failed
  std::atomic<uint32_t> clients_ready;  // clients that connected or failed
  std::atomic<uint32_t> go;             // 0 wait, 1 run with `clock`, 2 abort
  RunClock clock;
  WorkerSlot server;
  WorkerSlot clients[kMaxClients];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

void Fail(WorkerSlot* slot, const absl::Status& status);
inline void Publish(WorkerSlot* slot) { slot->done.store(1, std::memory_order_release); }

// Every child: die with the parent, default signal state, no stray output,
// pinned to `cpu` when `pin`.
void ChildInit(int cpu, bool pin);

// Fanout (harness_fanout.cc). The publisher runs in the server process and
// reports in ctl->server; subscriber `index` in a client process reports in
// ctl->clients[index] and its sampled one-way latencies in *latency.
[[noreturn]] void PublisherMain(Transport& transport, const RunSpec& spec, SharedControl* ctl);
[[noreturn]] void SubscriberMain(Transport& transport, const RunSpec& spec, SharedControl* ctl,
                                 int index, Histogram* latency);

}  // namespace shmlane::bench::internal
