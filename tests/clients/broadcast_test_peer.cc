// The publisher and subscriber processes of the broadcast integration tests,
// reporting on stdout one word per line the test waits for.
//
//   broadcast_test_peer publish   --dir D --channel C --frames N [--wait-subs K] [--hold]
//   broadcast_test_peer subscribe --dir D --channel C [--slow-us U] [--delay-ms M]
//                                 [--stall] [--history N] [--scribble]
//
// --scribble: a hostile subscriber. After attaching it finds its own cursor
// page among its fds (a read-write memfd that starts with the page magic),
// fills every counter with all-ones and prints SCRIBBLED; on SIGUSR1 it
// zeroes the whole page, magic included, and prints ZEROED; then waits to
// be killed. The daemon must clamp what it reads and never go backwards.
//
// Frames: {u64 seq, u32 payload bytes, u32 checksum} then a payload of
// pseudo-random size and content (FNV-1a checksum). A subscriber checks
// each frame's checksum, that its seq is the ring's and that
// seq == previous + 1 + missed, and ends with
// "CLOSED delivered=D missed=M errors=E" once the publisher is gone.
// Exit codes: 0 done; 2 usage; 4 write/read failure; else the attach status code.
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/broadcast.h"
#include "dataplane/broadcast_layout.h"

namespace {

using shmlane::client::BroadcastReadResult;
using shmlane::client::WriteResult;

std::string Flag(int argc, char** argv, std::string_view name, std::string fallback = "") {
  const std::string flag = "--" + std::string(name);
  for (int i = 2; i < argc; ++i) {
    if (argv[i] == flag) return i + 1 < argc && argv[i + 1][0] != '-' ? argv[i + 1] : "1";
  }
  return fallback;
}

void Say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

struct Header {
  uint64_t seq;
  uint32_t bytes;
  uint32_t checksum;
};

uint32_t Fnv(const std::byte* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(p[i])) * 16777619u;
  return h;
}

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

int Publish(int argc, char** argv, shmlane::client::AttachOptions options) {
  const uint64_t frames = std::stoull(Flag(argc, argv, "frames", "1000"));
  const size_t wait_subs = std::stoul(Flag(argc, argv, "wait-subs", "0"));
  options.client_name = "publisher";
  auto pub = shmlane::client::Publisher::Attach(Flag(argc, argv, "channel"), options);
  if (!pub.ok()) {
    Say(absl::StrCat("STATUS ", static_cast<int>(pub.status().code()), " ",
                     pub.status().message()));
    return static_cast<int>(pub.status().code());
  }
  Say("ATTACHED");
  const absl::Time ready_by = absl::Now() + absl::Seconds(10);
  while (pub->subscribers() < wait_subs && absl::Now() < ready_by) {
    (void)pub->Poll();
    absl::SleepFor(absl::Milliseconds(2));
  }
  Say(absl::StrCat("READY ", pub->subscribers()));
  const size_t max_payload = std::min<size_t>(pub->max_frame_bytes() - sizeof(Header), 1000);
  std::vector<std::byte> frame(sizeof(Header) + max_payload);
  for (uint64_t seq = 0; seq < frames; ++seq) {
    const uint64_t r = Mix(seq + 1);
    const size_t payload = r % (max_payload + 1);
    for (size_t i = 0; i < payload; ++i) {
      frame[sizeof(Header) + i] = static_cast<std::byte>(Mix(r + i));
    }
    Header h{seq, static_cast<uint32_t>(payload), Fnv(frame.data() + sizeof(Header), payload)};
    std::memcpy(frame.data(), &h, sizeof(h));
    const WriteResult w = pub->Write(std::span(frame.data(), sizeof(Header) + payload),
                                     absl::Now() + absl::Seconds(20));
    if (w != WriteResult::kOk) {
      Say(absl::StrCat("WRITE_FAILED ", seq, " ", pub->status().ToString()));
      return 4;
    }
  }
  Say(absl::StrCat("DONE ", frames));
  if (!Flag(argc, argv, "hold").empty()) {
    for (;;) ::pause();  // until killed
  }
  pub->Close();
  return 0;
}

// This process's own cursor page, mapped read-write (see --scribble), or null.
std::byte* FindOwnPage() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return nullptr;
  std::byte* found = nullptr;
  while (const dirent* e = ::readdir(d)) {
    const int fd = std::atoi(e->d_name);
    struct stat st {};
    if (fd <= 2 || ::fstat(fd, &st) != 0 || st.st_size != shmlane::dataplane::kReaderPageBytes ||
        (::fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR) {
      continue;
    }
    void* m = ::mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) continue;
    uint64_t magic = 0;
    std::memcpy(&magic, m, sizeof(magic));
    if (magic == shmlane::dataplane::kReaderPageMagic) {
      found = static_cast<std::byte*>(m);
      break;
    }
    ::munmap(m, st.st_size);
  }
  ::closedir(d);
  return found;
}

int Scribble() {
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
  std::byte* page = FindOwnPage();
  if (page == nullptr) {
    Say("NO_PAGE");
    return 4;
  }
  auto* p = reinterpret_cast<shmlane::dataplane::ReaderPage*>(page);
  std::memset(&p->counters, 0xff, sizeof(p->counters));
  Say("SCRIBBLED");
  int sig = 0;
  sigwait(&usr1, &sig);
  std::memset(page, 0, shmlane::dataplane::kReaderPageBytes);
  Say("ZEROED");
  for (;;) ::pause();  // until killed
}

int Subscribe(int argc, char** argv, shmlane::client::AttachOptions options) {
  const int64_t slow_us = std::stoll(Flag(argc, argv, "slow-us", "0"));
  const int64_t delay_ms = std::stoll(Flag(argc, argv, "delay-ms", "0"));
  const std::string history = Flag(argc, argv, "history");
  shmlane::client::ReaderStart start;
  start.mode = shmlane::client::ReaderStart::Mode::kLiveTail;
  if (!history.empty()) {
    start.mode = shmlane::client::ReaderStart::Mode::kHistory;
    start.history_frames = static_cast<uint32_t>(std::stoul(history));
  }
  options.client_name = "subscriber";
  auto sub = shmlane::client::Subscriber::Attach(Flag(argc, argv, "channel"), start, options);
  if (!sub.ok()) {
    Say(absl::StrCat("STATUS ", static_cast<int>(sub.status().code()), " ",
                     sub.status().message()));
    return static_cast<int>(sub.status().code());
  }
  Say("ATTACHED");
  if (!Flag(argc, argv, "scribble").empty()) return Scribble();
  if (!Flag(argc, argv, "stall").empty()) {
    for (;;) ::pause();  // never reads: until killed
  }
  if (delay_ms > 0) absl::SleepFor(absl::Milliseconds(delay_ms));
  std::vector<std::byte> buf(sub->max_frame_bytes());
  uint64_t delivered = 0, missed = 0, errors = 0;
  bool have_last = false;
  uint64_t last = 0;
  for (;;) {
    size_t n = 0;
    shmlane::client::FrameInfo info;
    const BroadcastReadResult r = sub->Read(buf, &n, absl::Now() + absl::Seconds(20), &info);
    if (r == BroadcastReadResult::kClosed) break;
    if (r != BroadcastReadResult::kOk) {
      Say(absl::StrCat("READ_FAILED ", shmlane::dataplane::ToString(r), " ",
                       sub->status().ToString()));
      return 4;
    }
    Header h{};
    if (n < sizeof(h)) {
      ++errors;
      continue;
    }
    std::memcpy(&h, buf.data(), sizeof(h));
    if (h.bytes != n - sizeof(h) || h.checksum != Fnv(buf.data() + sizeof(h), h.bytes) ||
        h.seq != info.seq) {
      ++errors;
    }
    // Every frame is either delivered or counted missed, in order.
    if (have_last ? h.seq != last + 1 + info.missed : h.seq != info.missed) ++errors;
    missed += info.missed;
    last = h.seq;
    have_last = true;
    ++delivered;
    if (slow_us > 0) absl::SleepFor(absl::Microseconds(slow_us));
  }
  Say(absl::StrCat("CLOSED delivered=", delivered, " missed=", missed, " errors=", errors,
                   " reader_missed=", sub->missed_frames()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  shmlane::client::AttachOptions options;
  options.runtime_dir = Flag(argc, argv, "dir");
  const std::string_view mode = argv[1];
  if (mode == "publish") return Publish(argc, argv, options);
  if (mode == "subscribe") return Subscribe(argc, argv, options);
  return 2;
}
