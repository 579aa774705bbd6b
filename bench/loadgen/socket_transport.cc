#include "bench/loadgen/socket_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/loadgen/socket_io.h"
#include "bench/loadgen/sys.h"
#include "dataplane/unique_fd.h"

namespace shmlane::bench {
namespace {

using ::shmlane::dataplane::UniqueFd;

using internal::Errno;
using internal::kLengthBytes;
using internal::SetNoDelay;
using internal::SetNonBlocking;
using internal::WriteAll;

class FdClient final : public ClientEndpoint {
 public:
  // `write_fd` and `read_fd` may be the same socket.
  FdClient(UniqueFd write_fd, UniqueFd read_fd, const RunSpec& spec)
      : write_fd_(std::move(write_fd)),
        read_fd_(std::move(read_fd)),
        mode_(spec.wait),
        spin_ns_(absl::ToInt64Nanoseconds(spec.spin)),
        batch_(spec.pattern == Pattern::kPingPong ? 1 : spec.batch),
        batch_bytes_(spec.batch_bytes),
        buffer_(2 * (spec.frame_bytes + kLengthBytes)) {
    const bool nonblocking = mode_ != WaitMode::kPark;
    SetNonBlocking(wfd(), nonblocking);
    SetNonBlocking(rfd(), nonblocking);
    if (batch_ > 1) {
      const uint64_t record = spec.frame_bytes + kLengthBytes;
      out_.reserve(static_cast<size_t>(
          std::max(record, std::min(record * static_cast<uint64_t>(batch_), batch_bytes_))));
    }
  }

  absl::Status Send(std::span<const std::byte> frame, bool more) override {
    uint32_t length = static_cast<uint32_t>(frame.size());
    if (batch_ == 1) {
      // One writev per frame, straight from the sender's buffer.
      iovec iov[2] = {{&length, kLengthBytes},
                      {const_cast<std::byte*>(frame.data()), frame.size()}};
      ++flushes_;
      return WriteAll(wfd(), iov, 2, mode_, spin_ns_);
    }
    // Batched: length + payload appended to one user-space buffer, written
    // with one call when the batch is full or the sender has nothing more.
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

  absl::Status Receive(std::span<std::byte> out, size_t* length) override {
    int64_t spin_started = 0;
    while (true) {
      if (have_ >= kLengthBytes) {
        uint32_t n;
        std::memcpy(&n, buffer_.data(), kLengthBytes);
        if (n > out.size() || n + kLengthBytes > buffer_.size()) {
          return absl::DataLossError(absl::StrCat("reply of ", n, " bytes is too large"));
        }
        if (have_ >= kLengthBytes + n) {
          std::memcpy(out.data(), buffer_.data() + kLengthBytes, n);
          *length = n;
          have_ -= kLengthBytes + n;
          std::memmove(buffer_.data(), buffer_.data() + kLengthBytes + n, have_);
          return absl::OkStatus();
        }
      }
      const ssize_t r = read(rfd(), buffer_.data() + have_, buffer_.size() - have_);
      if (r > 0) {
        have_ += static_cast<size_t>(r);
        continue;
      }
      if (r == 0) return absl::UnavailableError("server closed the connection");
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return Errno("read");
      if (absl::Status s = WaitFd(rfd(), POLLIN, mode_, spin_ns_, &spin_started); !s.ok()) {
        return s;
      }
    }
  }

  absl::Status Close() override {
    absl::Status s = pending_ > 0 ? Flush() : absl::OkStatus();
    write_fd_.Reset();
    read_fd_.Reset();
    return s;
  }

  uint64_t flushes() const override { return flushes_; }

 private:
  absl::Status Flush() {
    iovec iov[1] = {{out_.data(), out_.size()}};
    ++flushes_;
    absl::Status s = WriteAll(wfd(), iov, 1, mode_, spin_ns_);
    out_.clear();
    pending_ = 0;
    return s;
  }

  int wfd() const { return write_fd_.get(); }
  int rfd() const { return read_fd_.valid() ? read_fd_.get() : write_fd_.get(); }

  UniqueFd write_fd_;
  UniqueFd read_fd_;  // invalid: read from write_fd_ (a socket)
  WaitMode mode_;
  int64_t spin_ns_;
  int batch_;
  uint64_t batch_bytes_;
  std::vector<std::byte> buffer_;  // replies being read
  size_t have_ = 0;
  std::vector<std::byte> out_;  // the batch being built
  int pending_ = 0;             // frames in out_
  uint64_t flushes_ = 0;
};

class FdServer final : public ServerEndpoint {
 public:
  struct Conn {
    UniqueFd read_fd;
    UniqueFd reply_fd;  // invalid: reply on read_fd (a socket)
    std::vector<std::byte> leftover;
    bool open = true;
  };

  FdServer(UniqueFd listen_fd, std::vector<Conn> conns, int expected, bool tcp, const RunSpec& spec)
      : listen_fd_(std::move(listen_fd)),
        conns_(std::move(conns)),
        expected_(expected),
        tcp_(tcp),
        spec_(spec),
        buffer_(std::max<size_t>(size_t{1} << 20, 2 * (spec.frame_bytes + kLengthBytes))) {}

  absl::Status Serve(ServerSink& sink, int64_t deadline_ns) override {
    UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll.valid()) return Errno("epoll_create1");
    if (listen_fd_.valid()) {
      SetNonBlocking(listen_fd_.get(), true);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = UINT64_MAX;
      if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listen_fd_.get(), &ev) != 0) {
        return Errno("epoll_ctl");
      }
    }
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (absl::Status s = Watch(epoll.get(), i); !s.ok()) return s;
    }
    open_ = static_cast<int>(conns_.size());
    const int64_t spin_ns = absl::ToInt64Nanoseconds(spec_.spin);
    int64_t last_activity = NowNs();
    std::vector<epoll_event> events(512);
    while (true) {
      const int64_t now = NowNs();
      sink.Tick(now);
      if (static_cast<int>(conns_.size()) == expected_ && open_ == 0) break;
      if (now >= deadline_ns) {
        return absl::DeadlineExceededError(
            absl::StrCat(open_, " connection(s) still open at the server's deadline"));
      }
      int timeout_ms = 0;
      const bool spinning = spec_.wait == WaitMode::kSpin ||
                            (spec_.wait == WaitMode::kAdaptive && now - last_activity < spin_ns);
      if (!spinning) {
        const int64_t next = std::min(sink.NextBoundaryNs(), deadline_ns);
        timeout_ms = static_cast<int>(std::min<int64_t>((next - now + 999999) / 1000000, INT_MAX));
      }
      const int n =
          epoll_wait(epoll.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Errno("epoll_wait");
      }
      if (n > 0) last_activity = now;
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id == UINT64_MAX) {
          if (absl::Status s = AcceptAll(epoll.get()); !s.ok()) return s;
          continue;
        }
        if (absl::Status s = ReadConn(conns_[id], sink); !s.ok()) return s;
      }
    }
    sink.Tick(NowNs());
    return absl::OkStatus();
  }

 private:
  absl::Status Watch(int epoll, size_t index) {
    SetNonBlocking(conns_[index].read_fd.get(), true);
    if (conns_[index].reply_fd.valid()) SetNonBlocking(conns_[index].reply_fd.get(), true);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = index;
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, conns_[index].read_fd.get(), &ev) != 0) {
      return Errno("epoll_ctl");
    }
    return absl::OkStatus();
  }

  absl::Status AcceptAll(int epoll) {
    while (true) {
      const int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EINTR) return absl::OkStatus();
        return Errno("accept4");
      }
      if (tcp_) SetNoDelay(fd);
      conns_.push_back(Conn{UniqueFd(fd), UniqueFd(), {}, true});
      ++open_;
      if (absl::Status s = Watch(epoll, conns_.size() - 1); !s.ok()) return s;
    }
  }

  // One read per readiness event, so a busy connection cannot starve others.
  absl::Status ReadConn(Conn& conn, ServerSink& sink) {
    if (!conn.open) return absl::OkStatus();
    size_t have = conn.leftover.size();
    std::memcpy(buffer_.data(), conn.leftover.data(), have);
    const ssize_t r = read(conn.read_fd.get(), buffer_.data() + have, buffer_.size() - have);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) return absl::OkStatus();
      if (errno != ECONNRESET) return Errno("read");
    }
    if (r <= 0) {  // end of stream: the client is done
      conn.open = false;
      conn.read_fd.Reset();
      conn.reply_fd.Reset();
      --open_;
      return absl::OkStatus();
    }
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
      const std::span<const std::byte> frame(buffer_.data() + off + kLengthBytes, n);
      if (sink.OnFrame(frame)) {
        iovec iov[1] = {{buffer_.data() + off, kLengthBytes + n}};
        const int fd = conn.reply_fd.valid() ? conn.reply_fd.get() : conn.read_fd.get();
        if (absl::Status s = WriteAll(fd, iov, 1, WaitMode::kPark, 0); !s.ok()) {
          // The client may have closed while its last reply was in flight.
          if (!NowPastWindow(sink)) return s;
        }
      }
      off += kLengthBytes + n;
    }
    conn.leftover.assign(buffer_.begin() + static_cast<std::ptrdiff_t>(off),
                         buffer_.begin() + static_cast<std::ptrdiff_t>(have));
    return absl::OkStatus();
  }

  static bool NowPastWindow(const ServerSink& sink) { return sink.window_closed(); }

  UniqueFd listen_fd_;
  std::vector<Conn> conns_;
  int expected_;
  bool tcp_;
  RunSpec spec_;
  std::vector<std::byte> buffer_;
  int open_ = 0;
};

class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(TransportKind kind) : kind_(kind) {}

  absl::Status Prepare(const RunSpec& spec, const std::string& workdir) override {
    spec_ = spec;
    if (kind_ == TransportKind::kPipe) return MakePipes();
    if (kind_ == TransportKind::kUds) {
      listen_fd_ = UniqueFd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!listen_fd_.valid()) return Errno("socket");
      path_ = workdir + "/bench.sock";
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (path_.size() >= sizeof(addr.sun_path)) {
        return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", path_));
      }
      std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
      if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        return Errno(absl::StrCat("bind ", path_));
      }
    } else {
      listen_fd_ = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!listen_fd_.valid()) return Errno("socket");
      int one = 1;
      setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = 0;
      if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        return Errno("bind 127.0.0.1:0");
      }
      socklen_t len = sizeof(addr);
      getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
      port_ = ntohs(addr.sin_port);
    }
    // The kernel queues every client's connect until the server accepts.
    if (listen(listen_fd_.get(), 4096) != 0) return Errno("listen");
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<ServerEndpoint>> StartServer() override {
    std::vector<FdServer::Conn> conns;
    if (kind_ == TransportKind::kPipe) {
      for (auto& p : pipes_) {
        p.request_write.Reset();
        p.reply_read.Reset();
        conns.push_back(
            FdServer::Conn{std::move(p.request_read), std::move(p.reply_write), {}, true});
      }
    }
    return std::unique_ptr<ServerEndpoint>(new FdServer(std::move(listen_fd_), std::move(conns),
                                                        spec_.clients, kind_ == TransportKind::kTcp,
                                                        spec_));
  }

  absl::StatusOr<std::unique_ptr<ClientEndpoint>> Connect(int index) override {
    if (kind_ == TransportKind::kPipe) {
      UniqueFd write_fd = std::move(pipes_[index].request_write);
      UniqueFd read_fd = std::move(pipes_[index].reply_read);
      pipes_.clear();  // closes every other end this process inherited
      if (!read_fd.valid()) {
        // Stream and openloop have no reply pipe; reads come from nowhere.
        return std::unique_ptr<ClientEndpoint>(
            new FdClient(std::move(write_fd), UniqueFd(-1), spec_));
      }
      return std::unique_ptr<ClientEndpoint>(
          new FdClient(std::move(write_fd), std::move(read_fd), spec_));
    }
    absl::StatusOr<UniqueFd> fd = ConnectSocket();
    if (!fd.ok()) return fd.status();
    return std::unique_ptr<ClientEndpoint>(new FdClient(std::move(*fd), UniqueFd(), spec_));
  }

  absl::StatusOr<std::unique_ptr<FanoutPublisher>> StartPublisher() override {
    std::vector<UniqueFd> conns;
    if (kind_ == TransportKind::kPipe) {
      for (auto& p : pipes_) {
        p.request_read.Reset();
        conns.push_back(std::move(p.request_write));
      }
      pipes_.clear();
    }
    return internal::MakeFdPublisher(std::move(listen_fd_), std::move(conns),
                                     kind_ == TransportKind::kTcp, spec_);
  }

  absl::StatusOr<std::unique_ptr<FanoutSubscriber>> Subscribe(int index) override {
    if (kind_ == TransportKind::kPipe) {
      UniqueFd read_fd = std::move(pipes_[index].request_read);
      pipes_.clear();  // closes every other end this process inherited
      return internal::MakeFdSubscriber(std::move(read_fd), spec_);
    }
    absl::StatusOr<UniqueFd> fd = ConnectSocket();
    if (!fd.ok()) return fd.status();
    return internal::MakeFdSubscriber(std::move(*fd), spec_);
  }

  void AfterFork() override {
    listen_fd_.Reset();
    pipes_.clear();
  }

  void Cleanup() override {
    AfterFork();
    if (!path_.empty()) unlink(path_.c_str());
  }

 private:
  // A client process: drops the inherited listener and connects to it.
  absl::StatusOr<UniqueFd> ConnectSocket() {
    listen_fd_.Reset();
    UniqueFd fd;
    int rc;
    if (kind_ == TransportKind::kUds) {
      fd = UniqueFd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
      rc = connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    } else {
      fd = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      SetNoDelay(fd.get());
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(port_);
      rc = connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    }
    if (rc != 0) return Errno("connect");
    return fd;
  }

  struct PipeSet {
    UniqueFd request_read, request_write, reply_read, reply_write;
  };

  absl::Status MakePipes() {
    pipes_.resize(static_cast<size_t>(spec_.clients));
    for (auto& p : pipes_) {
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) != 0) return Errno("pipe2");
      p.request_read.Reset(fds[0]);
      p.request_write.Reset(fds[1]);
      if (spec_.pattern != Pattern::kPingPong) continue;
      if (pipe2(fds, O_CLOEXEC) != 0) return Errno("pipe2");
      p.reply_read.Reset(fds[0]);
      p.reply_write.Reset(fds[1]);
    }
    return absl::OkStatus();
  }

  TransportKind kind_;
  RunSpec spec_;
  UniqueFd listen_fd_;
  std::string path_;
  uint16_t port_ = 0;
  std::vector<PipeSet> pipes_;
};

}  // namespace

std::unique_ptr<Transport> MakeSocketTransport(TransportKind kind) {
  return std::make_unique<SocketTransport>(kind);
}

}  // namespace shmlane::bench
