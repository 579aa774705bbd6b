// Fan-in example, producer side: attaches to a STREAM channel and writes
// numbered frames as fast as the consumer takes them.
//
//   stream_producer [--channel demo] [--frames 1000000] [--size 64] [--name p1]
//                   [--runtime-dir DIR]
//
// (`--flag=value` works as well; --help lists the flags.)
//
// Every frame starts with its sequence number (8 bytes, little-endian), so
// the consumer can check that nothing was lost or reordered.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "clients/examples/example_flags.h"
#include "clients/producer.h"

int main(int argc, char** argv) {
  CLI::App app("Fan-in example, producer side: writes numbered frames to a STREAM channel.",
               "stream_producer");
  shmlane::examples::InitApp(app);
  std::string channel = "demo";
  uint64_t frames = 1000000;
  size_t size = 64;
  shmlane::client::Producer::Options options;
  app.add_option("--channel", channel, "The STREAM channel to write to")->type_name("NAME");
  // NonNegativeNumber: CLI11 would take "-1" for an unsigned as 2^64 - 1.
  app.add_option("--frames", frames, "How many frames to write")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--size", size, "Bytes per frame; less than 8 (the sequence number) means 8")
      ->type_name("BYTES")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--name", options.client_name,
                 "Client name the consumer and `shmlanectl watch` show (default: the program's)")
      ->type_name("NAME");
  shmlane::examples::AddRuntimeDirFlag(app, &options.runtime_dir);
  if (std::optional<int> exit = shmlane::examples::ParseFlags(app, argc, argv)) return *exit;
  size = std::max<size_t>(size, 8);

  auto producer = shmlane::client::Producer::Attach(channel, options);
  if (!producer.ok()) {
    std::fprintf(stderr, "stream_producer: %s\n", producer.status().ToString().c_str());
    return 1;
  }

  const absl::Time start = absl::Now();
  for (uint64_t seq = 0; seq < frames; ++seq) {
    // Zero-copy: fill the frame in place in the ring when there is room.
    shmlane::client::Reservation r = producer->Reserve(size);
    if (r.result == shmlane::client::WriteResult::kOk) {
      std::memcpy(r.data.data(), &seq, sizeof(seq));
      std::memset(r.data.data() + sizeof(seq), 0, size - sizeof(seq));
      producer->Commit(size);
      continue;
    }
    // Full (or worse): the copying Write applies the channel's policy.
    std::vector<std::byte> frame(size);
    std::memcpy(frame.data(), &seq, sizeof(seq));
    const shmlane::client::WriteResult w = producer->Write(frame);
    if (w != shmlane::client::WriteResult::kOk) {
      std::fprintf(stderr, "stream_producer: frame %lu: %s\n", static_cast<unsigned long>(seq),
                   producer->status().ok() ? shmlane::client::ToStatus(w).ToString().c_str()
                                           : producer->status().ToString().c_str());
      return 2;
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("stream_producer: wrote %lu frames of %zu bytes in %.3f s (%.0f frames/s)\n",
              static_cast<unsigned long>(frames), size, seconds,
              seconds > 0 ? static_cast<double>(frames) / seconds : 0.0);
  producer->Close();  // the consumer reads every frame, then sees us go
  return 0;
}
