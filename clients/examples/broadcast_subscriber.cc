// Broadcast example, subscriber side: reads a BROADCAST channel in place
// (zero-copy, read-only), checks the sequence numbers, and reports what it
// read and what the channel's slow-subscriber policy made it miss.
//
//   broadcast_subscriber [--channel demo-bcast] [--history N] [--runtime-dir DIR]
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "clients/broadcast.h"
#include "clients/examples/example_flags.h"

int main(int argc, char** argv) {
  CLI::App app("Broadcast example, subscriber side: reads a BROADCAST channel until it closes.",
               "broadcast_subscriber");
  shmlane::examples::InitApp(app);
  std::string channel = "demo-bcast";
  uint32_t history = 0;
  shmlane::client::Subscriber::Options options;
  app.add_option("--channel", channel, "The BROADCAST channel to read")->type_name("NAME");
  app.add_option("--history", history, "Start with up to N frames still in the ring (0: live tail)")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  shmlane::examples::AddRuntimeDirFlag(app, &options.runtime_dir);
  if (std::optional<int> exit = shmlane::examples::ParseFlags(app, argc, argv)) return *exit;

  shmlane::client::ReaderStart start;
  start.mode = history > 0 ? shmlane::client::ReaderStart::Mode::kHistory
                           : shmlane::client::ReaderStart::Mode::kLiveTail;
  start.history_frames = history;
  auto sub = shmlane::client::Subscriber::Attach(channel, start, options);
  if (!sub.ok()) {
    std::fprintf(stderr, "broadcast_subscriber: %s\n", sub.status().ToString().c_str());
    return 1;
  }
  uint64_t frames = 0, out_of_order = 0, expected = 0;
  bool first = true;
  for (;;) {
    shmlane::client::BroadcastPeek p = sub->Peek();
    if (p.result == shmlane::client::BroadcastReadResult::kEmpty) {
      (void)sub->WaitReadable(absl::Now() + absl::Seconds(1));
      continue;
    }
    if (p.result != shmlane::client::BroadcastReadResult::kOk) break;  // closed, detached, ...
    uint64_t seq = 0;
    if (p.data.size() >= sizeof(seq)) std::memcpy(&seq, p.data.data(), sizeof(seq));
    if (sub->Release() != shmlane::client::ReleaseResult::kOk) {
      first = true;  // overwritten while held: counted as missed; resynchronize
      continue;
    }
    if (!first && seq != expected + p.missed) ++out_of_order;
    expected = seq + 1;
    first = false;
    ++frames;
  }
  std::printf("broadcast_subscriber: read %lu frames, missed %lu, out of order %lu (%s)\n",
              static_cast<unsigned long>(frames), static_cast<unsigned long>(sub->missed_frames()),
              static_cast<unsigned long>(out_of_order), sub->status().ToString().c_str());
  return out_of_order == 0 ? 0 : 3;
}
