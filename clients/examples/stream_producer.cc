// Fan-in example, producer side: attaches to a STREAM channel and writes
// numbered frames as fast as the consumer takes them.
//
//   stream_producer [--channel=demo] [--frames=1000000] [--size=64] [--name=p1]
//                   [--runtime-dir=DIR]
//
// Every frame starts with its sequence number (8 bytes, little-endian), so
// the consumer can check that nothing was lost or reordered.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "clients/producer.h"

namespace {

std::string Flag(int argc, char** argv, std::string_view name, std::string fallback) {
  const std::string prefix = "--" + std::string(name) + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with(prefix)) return argv[i] + prefix.size();
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string channel = Flag(argc, argv, "channel", "demo");
  const uint64_t frames = std::stoull(Flag(argc, argv, "frames", "1000000"));
  const size_t size = std::max<size_t>(std::stoul(Flag(argc, argv, "size", "64")), 8);

  shmlane::client::Producer::Options options;
  options.runtime_dir = Flag(argc, argv, "runtime-dir", "");
  options.client_name = Flag(argc, argv, "name", "");
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
