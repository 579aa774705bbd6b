// Attaches to an existing channel as a producer and writes one frame.
// Usage: produce_one RUNTIME_DIR CHANNEL. Exit 0 when the frame is in the
// ring, 1 with a message otherwise. Built out of tree against an installed
// shmlane (tests/deploy/install_test.sh).
#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/producer.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s RUNTIME_DIR CHANNEL\n", argv[0]);
    return 2;
  }
  shmlane::client::Producer::Options options;
  options.runtime_dir = argv[1];
  options.client_name = "outoftree-cc";
  absl::StatusOr<shmlane::client::Producer> producer =
      shmlane::client::Producer::Attach(argv[2], options);
  if (!producer.ok()) {
    std::fprintf(stderr, "produce_one: attach: %s\n", producer.status().ToString().c_str());
    return 1;
  }
  const std::string frame = "hello from outside the tree";
  const shmlane::client::WriteResult result =
      producer->Write(frame, absl::Now() + absl::Seconds(5));
  if (result != shmlane::client::WriteResult::kOk) {
    std::fprintf(stderr, "produce_one: write: %s\n",
                 shmlane::client::ToStatus(result, "write").ToString().c_str());
    return 1;
  }
  std::printf("produce_one: wrote %zu bytes to %s (max frame %u)\n", frame.size(), argv[2],
              producer->max_frame_bytes());
  producer->Close();
  return 0;
}
