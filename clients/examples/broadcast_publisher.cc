// Broadcast example, publisher side: attaches to a BROADCAST channel (one
// publisher, many subscribers) and writes numbered frames, each once, read
// in place by every subscriber.
//
//   shmlanectl channels create demo-bcast --pattern broadcast
//   broadcast_publisher [--channel demo-bcast] [--frames 1000000] [--size 64]
//                       [--wait-subscribers 1] [--runtime-dir DIR]
//
// Every frame starts with its sequence number (8 bytes, little-endian).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "clients/broadcast.h"
#include "clients/examples/example_flags.h"

int main(int argc, char** argv) {
  CLI::App app("Broadcast example, publisher side: writes numbered frames to a BROADCAST channel.",
               "broadcast_publisher");
  shmlane::examples::InitApp(app);
  std::string channel = "demo-bcast";
  uint64_t frames = 1000000;
  size_t size = 64;
  size_t wait_subscribers = 1;
  shmlane::client::Publisher::Options options;
  app.add_option("--channel", channel, "The BROADCAST channel to publish on")->type_name("NAME");
  app.add_option("--frames", frames, "How many frames to write")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--size", size, "Bytes per frame; less than 8 means 8")
      ->type_name("BYTES")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--wait-subscribers", wait_subscribers,
                 "Wait (up to 30 s) for this many subscribers before writing")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  shmlane::examples::AddRuntimeDirFlag(app, &options.runtime_dir);
  if (std::optional<int> exit = shmlane::examples::ParseFlags(app, argc, argv)) return *exit;
  size = std::max<size_t>(size, 8);

  auto pub = shmlane::client::Publisher::Attach(channel, options);
  if (!pub.ok()) {
    std::fprintf(stderr, "broadcast_publisher: %s\n", pub.status().ToString().c_str());
    return 1;
  }
  const absl::Time wait_until = absl::Now() + absl::Seconds(30);
  while (pub->subscribers() < wait_subscribers && absl::Now() < wait_until) {
    (void)pub->Poll();  // SubscriberAdded arrives on the attach socket
    absl::SleepFor(absl::Milliseconds(5));
  }

  const absl::Time start = absl::Now();
  for (uint64_t seq = 0; seq < frames; ++seq) {
    // Zero-copy: fill the frame in place in the ring when there is room.
    shmlane::client::Reservation r = pub->Reserve(size);
    if (r.result == shmlane::client::WriteResult::kOk) {
      std::memcpy(r.data.data(), &seq, sizeof(seq));
      std::memset(r.data.data() + sizeof(seq), 0, size - sizeof(seq));
      pub->Commit(size);
      continue;
    }
    // Full (a BLOCK subscriber is behind): the copying Write waits for it.
    std::vector<std::byte> frame(size);
    std::memcpy(frame.data(), &seq, sizeof(seq));
    if (pub->Write(frame, absl::Now() + absl::Seconds(10)) != shmlane::client::WriteResult::kOk) {
      std::fprintf(stderr, "broadcast_publisher: frame %lu: %s\n", static_cast<unsigned long>(seq),
                   pub->status().ToString().c_str());
      return 2;
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("broadcast_publisher: wrote %lu frames of %zu bytes to %zu subscribers in %.3f s\n",
              static_cast<unsigned long>(frames), size, pub->subscribers(), seconds);
  pub->Close();  // subscribers read every frame, then see closed
  return 0;
}
