// python_bench_sink: the receiving end of bench/python/python_bench.py.
// Reads exactly --frames frames from a shmlane STREAM channel or from a Unix
// socket (SOCK_SEQPACKET: one frame per message; SOCK_STREAM: frames framed
// by a 4-byte little-endian length), and does the same work for either:
// every payload byte goes into a checksum (the sum over frames of FNV-1a 64
// of each frame) that the sender checks. Prints "ready" once it can
// receive, then one JSON line: frames, bytes, checksum, seconds from the
// first frame to the last, the monotonic time of the last, and its own CPU
// seconds from the first frame to the last.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/time/clock.h"
#include "clients/consumer.h"

namespace {

uint64_t Fnv1a(const std::byte* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Tally {
  uint64_t frames = 0;
  uint64_t bytes = 0;
  uint64_t checksum = 0;
  std::chrono::steady_clock::time_point first, last;
  double first_cpu = 0;
  void Add(const std::byte* p, size_t n) {
    if (frames == 0) {
      first = std::chrono::steady_clock::now();
      first_cpu = CpuSeconds();
    }
    ++frames;
    bytes += n;
    checksum += Fnv1a(p, n);
  }
};

int Listen(const std::string& path, int type) {
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (fd < 0 || path.size() >= sizeof(addr.sun_path)) return -1;
  std::memcpy(addr.sun_path, path.data(), path.size());
  unlink(path.c_str());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1) != 0) {
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Receiver of the Python benchmark (bench/python/python_bench.py)",
               "python_bench_sink");
  std::string mode = "shmlane", channel = "pybench", socket_path, runtime_dir;
  uint64_t frames = 0;
  app.add_option("--mode", mode, "shmlane, seqpacket or stream")->required();
  app.add_option("--channel", channel, "STREAM channel (mode shmlane)");
  app.add_option("--socket", socket_path, "Unix socket path to listen on (socket modes)");
  app.add_option("--runtime-dir", runtime_dir, "the daemon's runtime directory");
  app.add_option("--frames", frames, "frames to receive")->required();
  CLI11_PARSE(app, argc, argv);

  Tally t;
  if (mode == "shmlane") {
    shmlane::client::Consumer::Options options;
    options.runtime_dir = runtime_dir;
    options.client_name = "python_bench_sink";
    auto consumer = shmlane::client::Consumer::Attach(channel, options);
    if (!consumer.ok()) {
      std::fprintf(stderr, "python_bench_sink: %s\n", consumer.status().ToString().c_str());
      return 1;
    }
    std::printf("ready\n");
    std::fflush(stdout);
    while (t.frames < frames) {
      auto n = consumer->Wait([&](const shmlane::client::Peer&,
                                  std::span<const std::byte> d) { t.Add(d.data(), d.size()); },
                              absl::Now() + absl::Seconds(30));
      if (!n.ok() || *n == 0) {
        std::fprintf(stderr, "python_bench_sink: after %lu frames: %s\n",
                     static_cast<unsigned long>(t.frames),
                     n.ok() ? "30 s without a frame" : n.status().ToString().c_str());
        return 1;
      }
    }
  } else if (mode == "seqpacket" || mode == "stream") {
    const bool seqpacket = mode == "seqpacket";
    int lfd = Listen(socket_path, seqpacket ? SOCK_SEQPACKET : SOCK_STREAM);
    if (lfd < 0) {
      std::perror("python_bench_sink: listen");
      return 1;
    }
    std::printf("ready\n");
    std::fflush(stdout);
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      std::perror("python_bench_sink: accept");
      return 1;
    }
    if (seqpacket) {
      // recvmmsg: up to 256 messages per system call, as a receiver that
      // cares about throughput would.
      constexpr int kBatch = 256;
      constexpr size_t kSlot = 4096;
      std::vector<std::byte> buf(kBatch * kSlot);
      std::vector<iovec> iov(kBatch);
      std::vector<mmsghdr> msgs(kBatch);
      while (t.frames < frames) {
        for (int i = 0; i < kBatch; ++i) {
          iov[i] = {buf.data() + i * kSlot, kSlot};
          msgs[i] = {};
          msgs[i].msg_hdr.msg_iov = &iov[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs.data(), kBatch, MSG_WAITFORONE, nullptr);
        if (n <= 0) break;
        for (int i = 0; i < n; ++i) t.Add(buf.data() + i * kSlot, msgs[i].msg_len);
      }
    } else {
      std::vector<std::byte> buf(1 << 20);
      size_t have = 0;
      while (t.frames < frames) {
        ssize_t n = read(fd, buf.data() + have, buf.size() - have);
        if (n <= 0) break;
        have += static_cast<size_t>(n);
        size_t pos = 0;
        while (have - pos >= 4) {
          uint32_t len;
          std::memcpy(&len, buf.data() + pos, 4);
          if (have - pos - 4 < len) break;
          t.Add(buf.data() + pos + 4, len);
          pos += 4 + len;
        }
        std::memmove(buf.data(), buf.data() + pos, have - pos);
        have -= pos;
      }
    }
    close(fd);
    close(lfd);
    unlink(socket_path.c_str());
  } else {
    std::fprintf(stderr, "python_bench_sink: unknown --mode %s\n", mode.c_str());
    return 2;
  }
  t.last = std::chrono::steady_clock::now();
  const double cpu = CpuSeconds() - t.first_cpu;
  // last_monotonic: CLOCK_MONOTONIC seconds (Python's time.monotonic()) at
  // the last frame, so the sender can time first send to last receipt.
  std::printf(
      "{\"frames\": %lu, \"bytes\": %lu, \"checksum\": %lu, \"seconds\": %.6f, "
      "\"last_monotonic\": %.9f, \"cpu_seconds\": %.6f}\n",
      static_cast<unsigned long>(t.frames), static_cast<unsigned long>(t.bytes),
      static_cast<unsigned long>(t.checksum),
      std::chrono::duration<double>(t.last - t.first).count(),
      std::chrono::duration<double>(t.last.time_since_epoch()).count(), cpu);
  return t.frames == frames ? 0 : 1;
}
