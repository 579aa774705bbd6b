// Fan-in example, consumer side: reads every producer of a STREAM channel,
// checks each producer's sequence numbers, and prints frames/s and
// per-producer counts once a second. Producers may come and go; the library
// picks them up without any call from here.
//
//   stream_consumer [--channel demo] [--runtime-dir DIR] [--idle-exit-s 0]
//
// With --idle-exit-s N it exits N seconds after the last producer left.
// (`--flag=value` works as well; --help lists the flags.)
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/examples/example_flags.h"

namespace {

struct PerProducer {
  std::string name;
  uint64_t frames = 0;
  uint64_t next_seq = 0;
  uint64_t gaps = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(
      "Fan-in example, consumer side: reads every producer of a STREAM channel, checks their "
      "sequence numbers and prints frames/s once a second.",
      "stream_consumer");
  shmlane::examples::InitApp(app);
  std::string channel = "demo";
  int idle_exit_s = 0;
  shmlane::client::Consumer::Options options;
  app.add_option("--channel", channel, "The STREAM channel to read")->type_name("NAME");
  app.add_option("--idle-exit-s", idle_exit_s,
                 "Exit this many seconds after the last producer left (0: never)")
      ->type_name("SECONDS");
  shmlane::examples::AddRuntimeDirFlag(app, &options.runtime_dir);
  if (std::optional<int> exit = shmlane::examples::ParseFlags(app, argc, argv)) return *exit;
  const absl::Duration idle_exit = absl::Seconds(idle_exit_s);
  std::map<uint64_t, PerProducer> producers;  // by lane id
  absl::Time last_left = absl::InfiniteFuture();
  options.on_peer_event = [&](const shmlane::client::PeerEvent& e) {
    const bool came = e.kind == shmlane::client::PeerEvent::Kind::kAttached;
    std::printf("%s producer '%s' (lane %lu) %s\n", came ? "+" : "-", e.peer.name.c_str(),
                static_cast<unsigned long>(e.peer.lane_id), e.status.ToString().c_str());
    if (came) producers[e.peer.lane_id].name = e.peer.name;
  };
  auto consumer = shmlane::client::Consumer::Attach(channel, options);
  if (!consumer.ok()) {
    std::fprintf(stderr, "stream_consumer: %s\n", consumer.status().ToString().c_str());
    return 1;
  }

  uint64_t total = 0, last_total = 0;
  absl::Time last_report = absl::Now();
  for (;;) {
    const absl::Time now = absl::Now();
    auto n = consumer->Wait(
        [&](const shmlane::client::Peer& peer, std::span<const std::byte> data) {
          PerProducer& p = producers[peer.lane_id];
          uint64_t seq = 0;
          if (data.size() >= sizeof(seq)) std::memcpy(&seq, data.data(), sizeof(seq));
          if (seq != p.next_seq) ++p.gaps;
          p.next_seq = seq + 1;
          ++p.frames;
          ++total;
        },
        std::min(last_report + absl::Seconds(1), now + absl::Seconds(1)));
    if (!n.ok()) {
      std::printf("stream_consumer: %s\n", n.status().ToString().c_str());
      break;
    }
    if (consumer->peers().empty() && last_left == absl::InfiniteFuture()) last_left = absl::Now();
    if (!consumer->peers().empty()) last_left = absl::InfiniteFuture();
    if (absl::Now() - last_report >= absl::Seconds(1)) {
      const double secs = absl::ToDoubleSeconds(absl::Now() - last_report);
      std::printf("%.0f frames/s, %lu total, %zu producers\n",
                  static_cast<double>(total - last_total) / secs, static_cast<unsigned long>(total),
                  consumer->peers().size());
      for (const auto& [lane, p] : producers) {
        std::printf("  %-20s %12lu frames %lu gaps\n", p.name.c_str(),
                    static_cast<unsigned long>(p.frames), static_cast<unsigned long>(p.gaps));
      }
      std::fflush(stdout);
      last_report = absl::Now();
      last_total = total;
    }
    if (idle_exit > absl::ZeroDuration() && absl::Now() - last_left >= idle_exit) break;
  }
  std::printf("stream_consumer: %lu frames\n", static_cast<unsigned long>(total));
  return 0;
}
