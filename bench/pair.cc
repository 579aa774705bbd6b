// shmlane-pair: two processes stream frames through one lane and report
// throughput, eventfd writes per frame and the sampled latency.
//
//   shmlane-pair [--frame-bytes 64] [--duration 5] [--wait spin|park]
//                [--batch 64] [--ring-bytes 1048576] [--json]   (--help)
//
// The parent creates the lane (as the daemon would), forks a consumer, and
// produces. "spin" keeps the consumer busy-polling; "park" lets it spin
// briefly (WaitOptions default) and then sleep on its eventfd.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "bench/cli.h"
#include "bench/result_json.h"
#include "dataplane/lane.h"

namespace {

using shmlane::dataplane::Access;
using shmlane::dataplane::Consumer;
using shmlane::dataplane::Doorbell;
using shmlane::dataplane::LaneBells;
using shmlane::dataplane::LaneOptions;
using shmlane::dataplane::Producer;
using shmlane::dataplane::PublishMode;
using shmlane::dataplane::ReadResult;
using shmlane::dataplane::Segment;
using shmlane::dataplane::WaitOptions;
using shmlane::dataplane::WriteResult;

struct Options {
  uint32_t frame_bytes = 64;
  double duration_s = 5;
  bool spin = false;
  uint32_t batch = 64;
  uint64_t ring_bytes = 1 << 20;
  bool json = false;
};

// Parses argv into `o`; nullopt to go on, else the exit status.
std::optional<int> Parse(int argc, char** argv, Options& o) {
  CLI::App app(
      "Streams frames from this process through one lane to a forked consumer and "
      "reports throughput, eventfd writes per frame and the sampled latency.",
      "shmlane-pair");
  shmlane::bench::ConfigureApp(app);
  std::string wait = "park";
  const std::string lane = "Lane and traffic";
  app.add_option("--frame-bytes", o.frame_bytes, "payload bytes per frame")
      ->check(CLI::PositiveNumber)
      ->type_name("N")
      ->group(lane);
  app.add_option("--duration", o.duration_s, "how long the producer writes: seconds, or e.g. 500ms")
      ->transform(shmlane::bench::Duration())
      ->type_name("SECONDS")
      ->group(lane);
  app.add_option("--wait", wait,
                 "spin: the consumer busy-polls; park: it spins briefly, then sleeps on its "
                 "eventfd")
      ->check(CLI::IsMember({"spin", "park"}))
      ->type_name("W")
      ->group(lane);
  app.add_option("--batch", o.batch, "frames per publish (release store)")
      ->check(CLI::PositiveNumber)
      ->type_name("N")
      ->group(lane);
  app.add_option("--ring-bytes", o.ring_bytes, "ring size of the lane")
      ->check(shmlane::bench::PowerOfTwo())
      ->type_name("N")
      ->group(lane);
  app.add_flag("--json", o.json, "print one JSON object instead of the text")->group("Output");
  if (std::optional<int> exit = shmlane::bench::Parse(app, argc, argv)) return exit;
  o.spin = wait == "spin";
  return std::nullopt;
}

// Consumer process: drains until the producer closes; writes the frame count
// and the time from first to last frame into `result_fd`.
int RunConsumer(Consumer consumer, int result_fd) {
  uint64_t frames = 0, bytes = 0;
  absl::Time first = absl::InfinitePast(), last = absl::InfinitePast();
  for (;;) {
    ReadResult r = ReadResult::kOk;
    const size_t n =
        consumer.Drain([&](std::span<const std::byte> f) { bytes += f.size(); }, 256, &r);
    if (n > 0) {
      if (frames == 0) first = absl::Now();
      frames += n;
      continue;
    }
    if (r == ReadResult::kClosed) break;
    if (r == ReadResult::kBroken) {
      std::fprintf(stderr, "consumer: %s\n", std::string(consumer.status().message()).c_str());
      return 1;
    }
    const ReadResult w = consumer.WaitReadable(absl::InfiniteFuture());
    if (w == ReadResult::kClosed) break;
  }
  last = absl::Now();
  const double seconds = absl::ToDoubleSeconds(last - first);
  const uint64_t out[3] = {frames, bytes, static_cast<uint64_t>(seconds * 1e9)};
  return write(result_fd, out, sizeof(out)) == sizeof(out) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (std::optional<int> exit = Parse(argc, argv, o)) return *exit;
  LaneOptions lo;
  lo.ring_bytes = o.ring_bytes;
  lo.max_frame_bytes = o.frame_bytes;
  if (absl::Status s = shmlane::dataplane::ValidateLaneOptions(lo); !s.ok()) {
    std::fprintf(stderr, "shmlane-pair: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::StatusOr<Segment> seg = shmlane::dataplane::CreateLaneSegment(lo);
  absl::StatusOr<Doorbell> pbell = Doorbell::Create();
  absl::StatusOr<Doorbell> cbell = Doorbell::Create();
  if (!seg.ok() || !pbell.ok() || !cbell.ok()) {
    std::fprintf(stderr, "shmlane-pair: cannot create the lane\n");
    return 1;
  }
  auto producer_bell = std::make_shared<const Doorbell>(std::move(*pbell));
  auto consumer_bell = std::make_shared<const Doorbell>(std::move(*cbell));
  WaitOptions wait;
  if (o.spin) wait.spin = absl::Hours(1);

  int pipefd[2];
  if (pipe(pipefd) != 0) return 1;
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    close(pipefd[0]);
    absl::StatusOr<Segment> mine = Segment::Map(*seg->DupFd(), Access::kReadWrite);
    absl::StatusOr<Consumer> c =
        Consumer::Attach(std::move(*mine), LaneBells{consumer_bell, producer_bell}, wait);
    if (!c.ok()) return 1;
    _exit(RunConsumer(std::move(*c), pipefd[1]));
  }
  close(pipefd[1]);
  absl::StatusOr<Segment> mine = Segment::Map(*seg->DupFd(), Access::kReadWrite);
  absl::StatusOr<Producer> p =
      Producer::Attach(std::move(*mine), LaneBells{producer_bell, consumer_bell}, wait);
  if (!p.ok()) return 1;

  std::vector<std::byte> payload(o.frame_bytes, std::byte{0x5a});
  const absl::Time end = absl::Now() + absl::Seconds(o.duration_s);
  uint64_t sent = 0;
  while (absl::Now() < end) {
    for (uint32_t i = 0; i < o.batch; ++i) {
      shmlane::dataplane::Reservation r = p->Reserve(o.frame_bytes);
      if (r.result == WriteResult::kOk) {
        std::memcpy(r.data.data(), payload.data(), o.frame_bytes);
        p->Commit(o.frame_bytes, PublishMode::kDefer);
      } else if (r.result == WriteResult::kFull) {
        p->Publish();
        if (p->Write(payload, end + absl::Seconds(5)) != WriteResult::kOk) break;
      } else {
        std::fprintf(stderr, "producer: %s\n", shmlane::dataplane::ToString(r.result));
        return 1;
      }
      ++sent;
    }
    p->Publish();
  }
  p->Close();
  uint64_t result[3] = {};
  const bool got = read(pipefd[0], result, sizeof(result)) == sizeof(result);
  int status = 0;
  waitpid(child, &status, 0);
  if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || result[0] != sent) {
    std::fprintf(stderr, "shmlane-pair: consumer failed or lost frames (sent %llu, got %llu)\n",
                 static_cast<unsigned long long>(sent), static_cast<unsigned long long>(result[0]));
    return 1;
  }
  absl::StatusOr<shmlane::dataplane::LaneSnapshot> snap = shmlane::dataplane::Observe(*seg);
  const double seconds = static_cast<double>(result[2]) / 1e9;
  const double fps = static_cast<double>(result[0]) / seconds;
  const double mbps = static_cast<double>(result[1]) / seconds / 1e6;
  const uint64_t eventfd_writes = snap->producer.wakeups_sent + snap->consumer.wakeups_sent;
  const double writes_per_frame = static_cast<double>(eventfd_writes) / static_cast<double>(sent);
  std::span<const uint64_t, shmlane::dataplane::kLatencyBuckets> hist(
      snap->consumer.latency_buckets);
  const double p50 = shmlane::dataplane::LatencyQuantileNs(hist, 0.5);
  const double p99 = shmlane::dataplane::LatencyQuantileNs(hist, 0.99);
  if (o.json) {
    // Counts and rounded rates are integers, the rest floating point (as the
    // printf-made JSON of earlier versions had them).
    using shmlane::bench::JsonNumber;
    shmlane::bench::Json v = shmlane::bench::Json::object();
    v["frame_bytes"] = o.frame_bytes;
    v["duration_s"] = std::round(seconds * 1e3) / 1e3;
    v["wait"] = o.spin ? "spin" : "park";
    v["batch"] = o.batch;
    v["frames"] = sent;
    v["frames_per_s"] = JsonNumber(std::round(fps));
    v["mb_per_s"] = std::round(mbps * 10) / 10;
    v["eventfd_writes"] = eventfd_writes;
    v["eventfd_writes_per_frame"] = std::round(writes_per_frame * 1e6) / 1e6;
    v["consumer_parks"] = snap->consumer.empty_waits;
    v["producer_full_waits"] = snap->producer.full_waits;
    v["latency_samples"] = snap->consumer.latency_count;
    v["latency_ns"] = {{"p50", JsonNumber(std::round(p50))}, {"p99", JsonNumber(std::round(p99))}};
    std::printf("%s\n", shmlane::bench::DumpJson(v).c_str());
  } else {
    std::printf(
        "shmlane-pair: 2 processes, 1 lane (%llu-byte ring), %u-byte frames, batch %u, "
        "wait=%s, %.2f s\n",
        static_cast<unsigned long long>(o.ring_bytes), o.frame_bytes, o.batch,
        o.spin ? "spin" : "park", seconds);
    std::printf("  frames/s                 %.3f M\n", fps / 1e6);
    std::printf("  MB/s                     %.1f\n", mbps);
    std::printf("  eventfd writes/frame     %.6f (%llu writes, %llu consumer parks)\n",
                writes_per_frame, static_cast<unsigned long long>(eventfd_writes),
                static_cast<unsigned long long>(snap->consumer.empty_waits));
    std::printf("  latency (1 in %u sampled, log2 buckets)  p50 %.0f ns  p99 %.0f ns\n",
                lo.sample_every, p50, p99);
  }
  return 0;
}
