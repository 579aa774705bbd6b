// The shm transport's fanout endpoints (shm_fanout.h).
#include "bench/loadgen/shm_fanout.h"

#include <algorithm>
#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/loadgen/sys.h"
#include "clients/producer.h"

namespace shmlane::bench::internal {
namespace {

// Fanout: the BROADCAST channel's publisher. Frames are copied once into the
// one ring (Reserve, Commit), whatever the number of subscribers.
class ShmPublisher final : public FanoutPublisher {
 public:
  ShmPublisher(client::Publisher pub, const RunSpec& spec)
      : pub_(std::move(pub)),
        expected_(static_cast<size_t>(spec.clients)),
        mode_(spec.wait),
        batch_(spec.batch),
        batch_bytes_(spec.batch_bytes) {}

  absl::Status AwaitSubscribers(int64_t deadline_ns) override {
    // Every subscriber's Attach returned before the barrier opened; the
    // daemon's SubscriberAdded messages are normally already queued, and a
    // late one comes within milliseconds (the library offers no fd to wait on).
    while (true) {
      if (absl::Status s = pub_.Poll(); !s.ok()) return s;
      if (pub_.subscribers() >= expected_) return absl::OkStatus();
      if (NowNs() >= deadline_ns) {
        return absl::DeadlineExceededError(absl::StrCat(pub_.subscribers(), " of ", expected_,
                                                        " subscribers linked by the deadline"));
      }
      WaitUntil(NowNs() + 1'000'000, WaitMode::kPark, 0);
    }
  }

  absl::Status Send(std::span<const std::byte> frame, bool more) override {
    copied_ += frame.size();
    if (batch_ == 1) {
      ++flushes_;
      return WriteNow(frame);
    }
    // Batched: copy into the ring and publish the batch with its last
    // frame (Commit kNow: one release store); a full ring publishes what
    // is pending (Reserve does) and the frame then waits for room.
    const client::Reservation r = pub_.Reserve(frame.size());
    if (r.result == client::WriteResult::kFull) {
      if (pending_ > 0) ++flushes_;
      pending_ = 0;
      pending_bytes_ = 0;
      ++flushes_;
      return WriteNow(frame);
    }
    if (r.result != client::WriteResult::kOk) return client::ToStatus(r.result, "Reserve");
    std::memcpy(r.data.data(), frame.data(), frame.size());
    ++pending_;
    pending_bytes_ += frame.size();
    // The batch ends here when it is full or the next frame of this size
    // would pass batch_bytes.
    const bool flush = !more || pending_ >= batch_ || pending_bytes_ + frame.size() > batch_bytes_;
    pub_.Commit(frame.size(), flush ? client::PublishMode::kNow : client::PublishMode::kDefer);
    if (flush) {
      ++flushes_;
      pending_ = 0;
      pending_bytes_ = 0;
    }
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (pending_ > 0) ++flushes_;  // Close publishes what was committed
    pending_ = 0;
    absl::Status s = pub_.status();
    pub_.Close();
    return s;
  }

  uint64_t flushes() const override { return flushes_; }
  uint64_t copied_bytes() const override { return copied_; }

 private:
  absl::Status WriteNow(std::span<const std::byte> frame) {
    if (mode_ == WaitMode::kSpin) {
      while (true) {
        const client::WriteResult r = pub_.TryWrite(frame);
        if (r == client::WriteResult::kOk) return absl::OkStatus();
        if (r != client::WriteResult::kFull) return client::ToStatus(r, "TryWrite");
        CpuRelax();
      }
    }
    const client::WriteResult r = pub_.Write(frame);
    if (r == client::WriteResult::kOk) return absl::OkStatus();
    return client::ToStatus(r, "Write");
  }

  client::Publisher pub_;
  size_t expected_;
  WaitMode mode_;
  int batch_;
  uint64_t batch_bytes_;
  int pending_ = 0;
  uint64_t pending_bytes_ = 0;
  uint64_t flushes_ = 0;
  uint64_t copied_ = 0;
};

// Fanout: one subscriber, reading every frame in place (Peek, Release).
class ShmSubscriber final : public FanoutSubscriber {
 public:
  ShmSubscriber(client::Subscriber sub, const RunSpec& spec) : sub_(std::move(sub)), spec_(spec) {}

  absl::Status Receive(ServerSink& sink, int64_t deadline_ns) override {
    while (true) {
      const int64_t now = NowNs();
      sink.Tick(now);
      if (now >= deadline_ns) {
        return absl::DeadlineExceededError("the publisher had not closed by the deadline");
      }
      // Up to 64 frames between clock readings (a socket subscriber reads
      // the clock once per read(), which returns many frames).
      client::BroadcastPeek p;
      int taken = 0;
      while ((p = sub_.Peek()).result == client::BroadcastReadResult::kOk) {
        sink.OnFrame(p.data);
        if (sub_.Release() != client::ReleaseResult::kOk || p.missed != 0) {
          return absl::DataLossError("a frame was overwritten under the BLOCK policy");
        }
        if (++taken == 64) break;
      }
      if (taken > 0) continue;
      if (p.result == client::BroadcastReadResult::kClosed) break;
      if (p.result != client::BroadcastReadResult::kEmpty) {
        return absl::UnavailableError(
            absl::StrCat("Peek: ", dataplane::ToString(p.result), ": ", sub_.status().ToString()));
      }
      if (spec_.wait == WaitMode::kSpin) {
        CpuRelax();
        continue;
      }
      const int64_t next = std::min(sink.NextBoundaryNs(), deadline_ns);
      const client::BroadcastReadResult w =
          sub_.WaitReadable(absl::Now() + absl::Nanoseconds(next - now));
      if (w != client::BroadcastReadResult::kOk && w != client::BroadcastReadResult::kTimeout &&
          w != client::BroadcastReadResult::kClosed) {
        return absl::UnavailableError(
            absl::StrCat("WaitReadable: ", dataplane::ToString(w), ": ", sub_.status().ToString()));
      }
    }
    if (sub_.missed_frames() != 0) {
      return absl::DataLossError(absl::StrCat(sub_.missed_frames(), " frames missed"));
    }
    sink.Tick(NowNs());
    sub_.Close();
    return absl::OkStatus();
  }

 private:
  client::Subscriber sub_;
  RunSpec spec_;
};

}  // namespace

std::unique_ptr<FanoutPublisher> MakeShmPublisher(client::Publisher pub, const RunSpec& spec) {
  return std::make_unique<ShmPublisher>(std::move(pub), spec);
}

std::unique_ptr<FanoutSubscriber> MakeShmSubscriber(client::Subscriber sub, const RunSpec& spec) {
  return std::make_unique<ShmSubscriber>(std::move(sub), spec);
}

}  // namespace shmlane::bench::internal
