// The kernel baselines' shared helpers and their fanout endpoints
// (socket_io.h).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "bench/loadgen/socket_io.h"
#include "bench/loadgen/sys.h"

namespace shmlane::bench::internal {

using ::shmlane::dataplane::UniqueFd;

absl::Status Errno(std::string_view what) {
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", strerror(errno)));
}

void SetNonBlocking(int fd, bool on) {
  const int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

absl::Status WriteAll(int fd, iovec* iov, int count, WaitMode mode, int64_t spin_ns) {
  int64_t spin_started = 0;
  while (count > 0) {
    const ssize_t n = writev(fd, iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (absl::Status s = WaitFd(fd, POLLOUT, mode, spin_ns, &spin_started); !s.ok()) return s;
        continue;
      }
      return Errno("write");
    }
    size_t done = static_cast<size_t>(n);
    while (count > 0 && done >= iov[0].iov_len) {
      done -= iov[0].iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov[0].iov_base = static_cast<char*>(iov[0].iov_base) + done;
      iov[0].iov_len -= done;
    }
  }
  return absl::OkStatus();
}

namespace {

class FdPublisher final : public FanoutPublisher {
 public:
  FdPublisher(UniqueFd listen_fd, std::vector<UniqueFd> conns, bool tcp, const RunSpec& spec)
      : listen_fd_(std::move(listen_fd)),
        conns_(std::move(conns)),
        tcp_(tcp),
        expected_(static_cast<size_t>(spec.clients)),
        mode_(spec.wait),
        spin_ns_(absl::ToInt64Nanoseconds(spec.spin)),
        batch_(spec.batch),
        batch_bytes_(spec.batch_bytes) {
    for (const UniqueFd& fd : conns_) SetNonBlocking(fd.get(), mode_ != WaitMode::kPark);
    if (listen_fd_.valid()) SetNonBlocking(listen_fd_.get(), true);
    if (batch_ > 1) {
      const uint64_t record = spec.frame_bytes + kLengthBytes;
      out_.reserve(static_cast<size_t>(
          std::max(record, std::min(record * static_cast<uint64_t>(batch_), batch_bytes_))));
    }
  }

  bool ServiceControl(int64_t until_ns) override {
    if (!listen_fd_.valid() || conns_.size() >= expected_) return false;
    pollfd p{listen_fd_.get(), POLLIN, 0};
    const int64_t left_ms = std::max<int64_t>(0, (until_ns - NowNs()) / 1'000'000);
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, INT_MAX))) > 0) (void)AcceptAll();
    return true;
  }

  absl::Status AwaitSubscribers(int64_t deadline_ns) override {
    while (conns_.size() < expected_) {
      if (NowNs() >= deadline_ns) {
        return absl::DeadlineExceededError(absl::StrCat(conns_.size(), " of ", expected_,
                                                        " subscribers connected by the deadline"));
      }
      if (absl::Status s = AcceptAll(); !s.ok()) return s;
      if (conns_.size() < expected_) ServiceControl(std::min(deadline_ns, NowNs() + 10'000'000));
    }
    listen_fd_.Reset();
    return absl::OkStatus();
  }

  absl::Status Send(std::span<const std::byte> frame, bool more) override {
    uint32_t length = static_cast<uint32_t>(frame.size());
    if (batch_ == 1) {
      // One writev per frame and subscriber, straight from the frame.
      ++flushes_;
      for (const UniqueFd& fd : conns_) {
        iovec iov[2] = {{&length, kLengthBytes},
                        {const_cast<std::byte*>(frame.data()), frame.size()}};
        if (absl::Status s = WriteAll(fd.get(), iov, 2, mode_, spin_ns_); !s.ok()) return s;
        copied_ += kLengthBytes + frame.size();
      }
      return absl::OkStatus();
    }
    // Batched: the batch is built once and written to every subscriber.
    const size_t record = kLengthBytes + frame.size();
    if (pending_ > 0 && out_.size() + record > batch_bytes_) {
      if (absl::Status s = Flush(); !s.ok()) return s;
    }
    const size_t at = out_.size();
    out_.resize(at + record);
    std::memcpy(out_.data() + at, &length, kLengthBytes);
    std::memcpy(out_.data() + at + kLengthBytes, frame.data(), frame.size());
    ++pending_;
    if (!more || pending_ >= batch_ || out_.size() >= batch_bytes_) return Flush();
    return absl::OkStatus();
  }

  absl::Status Close() override {
    absl::Status s = pending_ > 0 ? Flush() : absl::OkStatus();
    conns_.clear();  // end of stream for every subscriber
    listen_fd_.Reset();
    return s;
  }

  uint64_t flushes() const override { return flushes_; }
  uint64_t copied_bytes() const override { return copied_; }

 private:
  absl::Status AcceptAll() {
    while (listen_fd_.valid() && conns_.size() < expected_) {
      const int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EINTR) return absl::OkStatus();
        return Errno("accept4");
      }
      if (tcp_) SetNoDelay(fd);
      SetNonBlocking(fd, mode_ != WaitMode::kPark);
      conns_.emplace_back(fd);
    }
    return absl::OkStatus();
  }

  absl::Status Flush() {
    ++flushes_;
    for (const UniqueFd& fd : conns_) {
      iovec iov[1] = {{out_.data(), out_.size()}};
      if (absl::Status s = WriteAll(fd.get(), iov, 1, mode_, spin_ns_); !s.ok()) return s;
      copied_ += out_.size();
    }
    out_.clear();
    pending_ = 0;
    return absl::OkStatus();
  }

  UniqueFd listen_fd_;
  std::vector<UniqueFd> conns_;
  bool tcp_;
  size_t expected_;
  WaitMode mode_;
  int64_t spin_ns_;
  int batch_;
  uint64_t batch_bytes_;
  std::vector<std::byte> out_;  // the batch being built
  int pending_ = 0;             // frames in out_
  uint64_t flushes_ = 0;
  uint64_t copied_ = 0;
};

class FdSubscriber final : public FanoutSubscriber {
 public:
  FdSubscriber(UniqueFd fd, const RunSpec& spec)
      : fd_(std::move(fd)),
        spec_(spec),
        buffer_(std::max<size_t>(size_t{1} << 20, 2 * (spec.frame_bytes + kLengthBytes))) {
    SetNonBlocking(fd_.get(), true);
  }

  absl::Status Receive(ServerSink& sink, int64_t deadline_ns) override {
    const int64_t spin_ns = absl::ToInt64Nanoseconds(spec_.spin);
    int64_t last_data = NowNs();
    size_t have = 0;
    while (true) {
      const int64_t now = NowNs();
      sink.Tick(now);
      if (now >= deadline_ns) {
        return absl::DeadlineExceededError("the publisher had not closed by the deadline");
      }
      const ssize_t r = read(fd_.get(), buffer_.data() + have, buffer_.size() - have);
      if (r == 0) break;
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return Errno("read");
        const bool spinning = spec_.wait == WaitMode::kSpin ||
                              (spec_.wait == WaitMode::kAdaptive && now - last_data < spin_ns);
        if (spinning) {
          CpuRelax();
          continue;
        }
        const int64_t next = std::min(sink.NextBoundaryNs(), deadline_ns);
        pollfd p{fd_.get(), POLLIN, 0};
        const int timeout_ms =
            static_cast<int>(std::min<int64_t>((next - now + 999999) / 1000000, INT_MAX));
        if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR) return Errno("poll");
        continue;
      }
      last_data = now;
      have += static_cast<size_t>(r);
      size_t off = 0;
      while (have - off >= kLengthBytes) {
        uint32_t n;
        std::memcpy(&n, buffer_.data() + off, kLengthBytes);
        if (n > spec_.frame_bytes) {
          return absl::DataLossError(
              absl::StrCat("frame of ", n, " bytes exceeds ", spec_.frame_bytes));
        }
        if (have - off < kLengthBytes + n) break;
        sink.OnFrame(std::span<const std::byte>(buffer_.data() + off + kLengthBytes, n));
        off += kLengthBytes + n;
      }
      have -= off;
      if (have > 0 && off > 0) std::memmove(buffer_.data(), buffer_.data() + off, have);
    }
    if (have != 0) {
      return absl::DataLossError(absl::StrCat("stream ended inside a frame (", have, " bytes)"));
    }
    sink.Tick(NowNs());
    return absl::OkStatus();
  }

 private:
  UniqueFd fd_;
  RunSpec spec_;
  std::vector<std::byte> buffer_;
};

}  // namespace

std::unique_ptr<FanoutPublisher> MakeFdPublisher(UniqueFd listen_fd, std::vector<UniqueFd> conns,
                                                 bool tcp, const RunSpec& spec) {
  return std::make_unique<FdPublisher>(std::move(listen_fd), std::move(conns), tcp, spec);
}

std::unique_ptr<FanoutSubscriber> MakeFdSubscriber(UniqueFd fd, const RunSpec& spec) {
  return std::make_unique<FdSubscriber>(std::move(fd), spec);
}

}  // namespace shmlane::bench::internal
