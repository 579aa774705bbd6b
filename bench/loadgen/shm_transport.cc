#include "bench/loadgen/shm_transport.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/loadgen/shm_fanout.h"
#include "bench/loadgen/sys.h"
#include "clients/broadcast.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/request_reply.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::bench {
namespace {

using ::shmlane::dataplane::UniqueFd;
constexpr char kChannel[] = "bench";

// The channel's wait preference for a wait mode (spec.h): the clients take
// it from the daemon at attach, as applications do.
v1::WaitPreference PreferenceFor(WaitMode mode) {
  switch (mode) {
    case WaitMode::kSpin:
    case WaitMode::kAdaptive:
      return v1::WAIT_PREFERENCE_LATENCY;
    case WaitMode::kPark:
      return v1::WAIT_PREFERENCE_EFFICIENCY;
    case WaitMode::kBalanced:
      return v1::WAIT_PREFERENCE_BALANCED;
  }
  return v1::WAIT_PREFERENCE_BALANCED;
}

// The endpoints' spin budget; kSpin (the bench polls the endpoint itself)
// also overrides the channel's preference, as an application may.
void FillWait(const RunSpec& spec, client::AttachOptions* options) {
  options->wait.spin = spec.spin;
  if (spec.wait == WaitMode::kSpin) {
    options->wait.spin = absl::InfiniteDuration();
    options->wait_preference = dataplane::WaitPreference::kLatency;
  }
}

uint64_t RingBytesFor(const RunSpec& spec, uint32_t max_frame) {
  if (spec.ring_bytes != 0) return spec.ring_bytes;
  uint64_t ring = uint64_t{256} << 10;
  while (ring < 8 * (uint64_t{max_frame} + 16)) ring <<= 1;
  return ring;
}

// Waits up to `timeout_ms` for a child to exit, through a pidfd (no polling).
// Returns its wait status, or -1 if it is still running.
int WaitChild(pid_t pid, int timeout_ms) {
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.valid()) {
    pollfd p{pidfd.get(), POLLIN, 0};
    while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR) {
    }
  }
  int status = 0;
  const pid_t r = waitpid(pid, &status, pidfd.valid() ? WNOHANG : 0);
  return r == pid ? status : -1;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > 2000) text = text.substr(text.size() - 2000);
  return text;
}

// The helper process: quota and channel through the control API.
[[noreturn]] void ControlHelper(const RunSpec& spec, const std::string& runtime_dir, int error_fd) {
  auto fail = [&](const std::string& what) {
    (void)!write(error_fd, what.data(), what.size());
    _exit(1);
  };
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 10);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 10);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("unix:", runtime_dir, "/control.sock"),
                                           grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    fail("cannot connect to the daemon's control socket");
  }
  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(10); };
  {
    auto access = v1::AccessService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::SetQuotaRequest req;
    req.set_uid(getuid());
    req.mutable_limits()->set_max_attachments(4096);
    req.mutable_limits()->set_max_shm_bytes(uint64_t{64} << 30);
    v1::Quota quota;
    const grpc::Status s = access->SetQuota(&ctx, req, &quota);
    if (!s.ok()) fail(absl::StrCat("SetQuota: ", s.error_message()));
  }
  {
    auto channels = v1::ChannelService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    v1::CreateChannelRequest req;
    v1::ChannelSpec* cs = req.mutable_spec();
    cs->set_name(kChannel);
    const bool rr = spec.pattern == Pattern::kPingPong;
    const bool fanout = spec.pattern == Pattern::kFanout;
    cs->set_pattern(rr       ? v1::CHANNEL_PATTERN_REQUEST_REPLY
                    : fanout ? v1::CHANNEL_PATTERN_BROADCAST
                             : v1::CHANNEL_PATTERN_STREAM);
    const uint32_t max_frame =
        spec.frame_bytes + (rr ? static_cast<uint32_t>(client::kCallHeaderBytes) : 0);
    cs->set_max_frame_bytes(max_frame);
    cs->set_ring_bytes(RingBytesFor(spec, max_frame));
    if (fanout) {
      // Every subscriber gets every frame: the publisher waits for the
      // slowest, as a blocking socket writer does.
      cs->set_max_subscribers(static_cast<uint32_t>(spec.clients));
      cs->set_slow_subscriber_policy(v1::SLOW_SUBSCRIBER_POLICY_BLOCK);
    } else {
      cs->set_max_producers(static_cast<uint32_t>(spec.clients));
      cs->set_backpressure(v1::BACKPRESSURE_POLICY_BLOCK);
    }
    cs->set_wait_preference(PreferenceFor(spec.wait));
    v1::Channel created;
    const grpc::Status s = channels->CreateChannel(&ctx, req, &created);
    if (!s.ok()) fail(absl::StrCat("CreateChannel: ", s.error_message()));
  }
  _exit(0);
}

class ProducerClient final : public ClientEndpoint {
 public:
  ProducerClient(client::Producer producer, const RunSpec& spec)
      : producer_(std::move(producer)),
        mode_(spec.wait),
        batch_(spec.batch),
        batch_bytes_(spec.batch_bytes) {}

  absl::Status Send(std::span<const std::byte> frame, bool more) override {
    if (batch_ == 1) {
      // One publish per frame (TryWrite / Write).
      ++flushes_;
      return WriteNow(frame);
    }
    // Batched: copy into the ring (Reserve, Commit with a deferred publish)
    // and make the batch visible with one release store (Publish).
    if (pending_ > 0 && pending_bytes_ + frame.size() > batch_bytes_) Publish();
    const client::Reservation r = producer_.Reserve(frame.size());
    if (r.result == client::WriteResult::kFull) {
      // The ring is full: publish what is pending (the consumer cannot free
      // space it cannot see), then wait for room as a single write does.
      Publish();
      ++flushes_;
      return WriteNow(frame);
    }
    if (r.result != client::WriteResult::kOk) return client::ToStatus(r.result, "Reserve");
    std::memcpy(r.data.data(), frame.data(), frame.size());
    producer_.Commit(frame.size(), client::PublishMode::kDefer);
    ++pending_;
    pending_bytes_ += frame.size();
    if (!more || pending_ >= batch_ || pending_bytes_ >= batch_bytes_) Publish();
    return absl::OkStatus();
  }

  absl::Status Receive(std::span<std::byte>, size_t*) override {
    return absl::FailedPreconditionError("a STREAM producer receives nothing");
  }

  absl::Status Close() override {
    Publish();
    producer_.Close();
    return absl::OkStatus();
  }

  uint64_t flushes() const override { return flushes_; }

 private:
  absl::Status WriteNow(std::span<const std::byte> frame) {
    if (mode_ == WaitMode::kSpin) {
      while (true) {
        const client::WriteResult r = producer_.TryWrite(frame);
        if (r == client::WriteResult::kOk) return absl::OkStatus();
        if (r != client::WriteResult::kFull) return client::ToStatus(r, "TryWrite");
        CpuRelax();
      }
    }
    const client::WriteResult r = producer_.Write(frame);
    if (r == client::WriteResult::kOk) return absl::OkStatus();
    return client::ToStatus(r, "Write");
  }

  void Publish() {
    if (pending_ == 0) return;
    producer_.Publish();
    ++flushes_;
    pending_ = 0;
    pending_bytes_ = 0;
  }

  client::Producer producer_;
  WaitMode mode_;
  int batch_;
  uint64_t batch_bytes_;
  int pending_ = 0;
  uint64_t pending_bytes_ = 0;
  uint64_t flushes_ = 0;
};

class CallClient final : public ClientEndpoint {
 public:
  explicit CallClient(client::Client c) : client_(std::move(c)) {}

  absl::Status Send(std::span<const std::byte>, bool) override {
    return absl::FailedPreconditionError("request/reply clients use Call");
  }
  absl::Status Receive(std::span<std::byte>, size_t*) override {
    return absl::FailedPreconditionError("request/reply clients use Call");
  }

  absl::Status Call(std::span<const std::byte> request, std::span<std::byte> reply,
                    size_t* length) override {
    if (absl::Status s = client_.Call(request, &reply_, absl::InfiniteFuture()); !s.ok()) return s;
    if (reply_.size() > reply.size()) return absl::DataLossError("reply larger than the frame");
    std::memcpy(reply.data(), reply_.data(), reply_.size());
    *length = reply_.size();
    ++calls_;
    return absl::OkStatus();
  }

  absl::Status Close() override {
    client_.Close();
    return absl::OkStatus();
  }

  uint64_t flushes() const override { return calls_; }

 private:
  client::Client client_;
  std::string reply_;
  uint64_t calls_ = 0;
};

// Attachments seen by the server, updated from the library's peer events.
// The library's Wait/ServeOnce handle a departing peer internally and keep
// waiting (they return for frames, a new peer, the deadline or an
// interrupt), so the event of the last client's departure interrupts the
// wait: otherwise the server would notice only at its deadline, 10 s later.
struct PeerCounts {
  int expected = 0;
  int attached = 0;
  int detached = 0;
  std::function<void()> interrupt;  // set by the server endpoint
  void OnEvent(const client::PeerEvent& e) {
    if (e.kind == client::PeerEvent::Kind::kAttached) ++attached;
    if (e.kind == client::PeerEvent::Kind::kDetached && ++detached >= expected && interrupt) {
      interrupt();
    }
  }
};

class ConsumerServer final : public ServerEndpoint {
 public:
  ConsumerServer(client::Consumer consumer, std::shared_ptr<PeerCounts> counts, const RunSpec& spec)
      : consumer_(std::move(consumer)), counts_(std::move(counts)), spec_(spec) {
    counts_->interrupt = [this] { consumer_.Interrupt(); };
  }
  ~ConsumerServer() override { counts_->interrupt = nullptr; }

  absl::Status Serve(ServerSink& sink, int64_t deadline_ns) override {
    auto on_frame = [&](const client::Peer&, std::span<const std::byte> data) {
      sink.OnFrame(data);
    };
    while (true) {
      const int64_t now = NowNs();
      sink.Tick(now);
      if (counts_->detached >= spec_.clients) break;
      if (now >= deadline_ns) {
        return absl::DeadlineExceededError(absl::StrCat(
            spec_.clients - counts_->detached, " producer(s) still attached at the deadline"));
      }
      if (consumer_.Poll(on_frame) > 0) continue;
      if (spec_.wait == WaitMode::kSpin) {
        CpuRelax();
        continue;
      }
      const int64_t next = std::min(sink.NextBoundaryNs(), deadline_ns);
      absl::StatusOr<size_t> n =
          consumer_.Wait(on_frame, absl::Now() + absl::Nanoseconds(next - now));
      if (!n.ok() && !absl::IsCancelled(n.status())) return n.status();
    }
    sink.Tick(NowNs());
    consumer_.Close();
    return absl::OkStatus();
  }

  bool ServiceControl(int64_t until_ns) override {
    // No frame can come before the barrier; this takes the daemon's
    // LaneAdded messages as the producers attach.
    (void)consumer_.Wait([](const client::Peer&, std::span<const std::byte>) {},
                         absl::Now() + absl::Nanoseconds(until_ns - NowNs()));
    return true;
  }

 private:
  client::Consumer consumer_;
  std::shared_ptr<PeerCounts> counts_;
  RunSpec spec_;
};

class EchoServer final : public ServerEndpoint {
 public:
  EchoServer(client::Server server, std::shared_ptr<PeerCounts> counts, const RunSpec& spec)
      : server_(std::move(server)), counts_(std::move(counts)), spec_(spec) {
    counts_->interrupt = [this] { server_.Stop(); };
  }
  ~EchoServer() override { counts_->interrupt = nullptr; }

  absl::Status Serve(ServerSink& sink, int64_t deadline_ns) override {
    auto handler = [&](const client::Server::Request& request, std::string* reply) {
      if (sink.OnFrame(request.data)) reply->assign(request.data_as_string_view());
      return absl::OkStatus();
    };
    while (true) {
      const int64_t now = NowNs();
      sink.Tick(now);
      if (counts_->detached >= spec_.clients) break;
      if (now >= deadline_ns) {
        return absl::DeadlineExceededError(absl::StrCat(
            spec_.clients - counts_->detached, " client(s) still attached at the deadline"));
      }
      if (server_.ServeReady(handler) > 0) continue;
      if (spec_.wait == WaitMode::kSpin) {
        CpuRelax();
        continue;
      }
      const int64_t next = std::min(sink.NextBoundaryNs(), deadline_ns);
      absl::StatusOr<size_t> n =
          server_.ServeOnce(handler, absl::Now() + absl::Nanoseconds(next - now));
      if (!n.ok() && !absl::IsCancelled(n.status())) return n.status();
    }
    sink.Tick(NowNs());
    server_.Close();
    return absl::OkStatus();
  }

  bool ServiceControl(int64_t until_ns) override {
    auto echo = [](const client::Server::Request& request, std::string* reply) {
      reply->assign(request.data_as_string_view());
      return absl::OkStatus();
    };
    (void)server_.ServeOnce(echo, absl::Now() + absl::Nanoseconds(until_ns - NowNs()));
    return true;
  }

 private:
  client::Server server_;
  std::shared_ptr<PeerCounts> counts_;
  RunSpec spec_;
};

class ShmTransport final : public Transport {
 public:
  ~ShmTransport() override { StopDaemon(); }

  absl::Status Prepare(const RunSpec& spec, const std::string& workdir) override {
    spec_ = spec;
    runtime_dir_ = workdir + "/rt";
    log_path_ = workdir + "/shmlaned.log";
    if (mkdir(runtime_dir_.c_str(), 0755) != 0) {
      return absl::InternalError(absl::StrCat("mkdir ", runtime_dir_, ": ", strerror(errno)));
    }
    if (absl::Status s = StartDaemon(); !s.ok()) return s;
    return CreateChannel();
  }

  absl::StatusOr<std::unique_ptr<ServerEndpoint>> StartServer() override {
    auto counts = std::make_shared<PeerCounts>();
    counts->expected = spec_.clients;
    auto on_event = [counts](const client::PeerEvent& e) { counts->OnEvent(e); };
    if (spec_.pattern == Pattern::kPingPong) {
      client::Server::Options options;
      Fill(&options, "bench-server");
      options.on_peer_event = on_event;
      auto server = client::Server::Attach(kChannel, options);
      if (!server.ok()) return server.status();
      return std::unique_ptr<ServerEndpoint>(new EchoServer(std::move(*server), counts, spec_));
    }
    client::Consumer::Options options;
    Fill(&options, "bench-server");
    options.on_peer_event = on_event;
    auto consumer = client::Consumer::Attach(kChannel, options);
    if (!consumer.ok()) return consumer.status();
    return std::unique_ptr<ServerEndpoint>(new ConsumerServer(std::move(*consumer), counts, spec_));
  }

  absl::StatusOr<std::unique_ptr<ClientEndpoint>> Connect(int index) override {
    daemon_out_.Reset();
    client::AttachOptions options;
    Fill(&options, absl::StrCat("bench-client-", index));
    if (spec_.pattern == Pattern::kPingPong) {
      auto c = client::Client::Attach(kChannel, options);
      if (!c.ok()) return c.status();
      return std::unique_ptr<ClientEndpoint>(new CallClient(std::move(*c)));
    }
    auto producer = client::Producer::Attach(kChannel, options);
    if (!producer.ok()) return producer.status();
    return std::unique_ptr<ClientEndpoint>(new ProducerClient(std::move(*producer), spec_));
  }

  absl::StatusOr<std::unique_ptr<FanoutPublisher>> StartPublisher() override {
    client::AttachOptions options;
    Fill(&options, "bench-publisher");
    auto pub = client::Publisher::Attach(kChannel, options);
    if (!pub.ok()) return pub.status();
    return internal::MakeShmPublisher(std::move(*pub), spec_);
  }

  absl::StatusOr<std::unique_ptr<FanoutSubscriber>> Subscribe(int index) override {
    daemon_out_.Reset();
    client::AttachOptions options;
    Fill(&options, absl::StrCat("bench-subscriber-", index));
    client::ReaderStart start;
    start.mode = client::ReaderStart::Mode::kLiveTail;
    auto sub = client::Subscriber::Attach(kChannel, start, options);
    if (!sub.ok()) return sub.status();
    return internal::MakeShmSubscriber(std::move(*sub), spec_);
  }

  void Cleanup() override { StopDaemon(); }

  std::string Diagnostics() override {
    std::string out;
    int status = 0;
    if (daemon_pid_ > 0 && waitpid(daemon_pid_, &status, WNOHANG) == daemon_pid_) {
      daemon_pid_ = 0;
      out = WIFSIGNALED(status) ? absl::StrCat("shmlaned died of signal ", WTERMSIG(status))
                                : absl::StrCat("shmlaned exited with status ", WEXITSTATUS(status));
    }
    const std::string log = Tail(log_path_);
    if (!log.empty()) absl::StrAppend(&out, out.empty() ? "" : "; ", "shmlaned log (tail): ", log);
    return out;
  }

  pid_t daemon_pid() const override { return daemon_pid_; }

 private:
  void Fill(client::AttachOptions* options, std::string name) const {
    options->runtime_dir = runtime_dir_;
    options->client_name = std::move(name);
    options->attach_timeout = absl::Seconds(30);
    FillWait(spec_, options);
  }

  absl::Status StartDaemon() {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe2");
    UniqueFd read_end(out[0]), write_end(out[1]);
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(write_end.get(), STDOUT_FILENO);
      if (log >= 0) dup2(log, STDERR_FILENO);
      execl(spec_.shmlaned.c_str(), spec_.shmlaned.c_str(), "--runtime-dir", runtime_dir_.c_str(),
            "--metrics-listen", "none", static_cast<char*>(nullptr));
      std::fprintf(stderr, "exec %s: %s\n", spec_.shmlaned.c_str(), strerror(errno));
      _exit(127);
    }
    daemon_pid_ = pid;
    write_end.Reset();
    // shmlaned prints "... ready" on stdout once its sockets listen.
    std::string banner;
    const int64_t deadline = NowNs() + 15'000'000'000;
    while (!absl::StrContains(banner, "ready\n")) {
      const int64_t left_ms = (deadline - NowNs()) / 1'000'000;
      pollfd p{read_end.get(), POLLIN, 0};
      if (left_ms <= 0 || poll(&p, 1, static_cast<int>(left_ms)) <= 0) {
        StopDaemon();
        return absl::UnavailableError(
            absl::StrCat(spec_.shmlaned, " did not report ready within 15 s: ", Tail(log_path_)));
      }
      char buf[512];
      const ssize_t n = read(read_end.get(), buf, sizeof(buf));
      if (n <= 0) {
        StopDaemon();
        return absl::UnavailableError(absl::StrCat(spec_.shmlaned, " exited at start (",
                                                   "try --shmlaned PATH): ", Tail(log_path_)));
      }
      banner.append(buf, static_cast<size_t>(n));
    }
    // Kept open so that the daemon never writes to a closed pipe.
    daemon_out_ = std::move(read_end);
    return absl::OkStatus();
  }

  absl::Status CreateChannel() {
    int err[2];
    if (pipe2(err, O_CLOEXEC) != 0) return absl::InternalError("pipe2");
    UniqueFd read_end(err[0]), write_end(err[1]);
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
    if (pid == 0) {
      read_end.Reset();
      ControlHelper(spec_, runtime_dir_, write_end.get());
    }
    write_end.Reset();
    std::string message;
    char buf[512];
    ssize_t n;
    while ((n = read(read_end.get(), buf, sizeof(buf))) > 0)
      message.append(buf, static_cast<size_t>(n));
    const int status = WaitChild(pid, 30'000);
    if (status == -1) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return absl::UnavailableError("the control helper hung");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::UnavailableError(absl::StrCat("creating the channel failed: ", message));
    }
    return absl::OkStatus();
  }

  void StopDaemon() {
    if (daemon_pid_ <= 0) return;
    kill(daemon_pid_, SIGTERM);
    if (WaitChild(daemon_pid_, 5000) == -1) {
      kill(daemon_pid_, SIGKILL);
      waitpid(daemon_pid_, nullptr, 0);
    }
    daemon_pid_ = 0;
    daemon_out_.Reset();
  }

  RunSpec spec_;
  std::string runtime_dir_;
  std::string log_path_;
  pid_t daemon_pid_ = 0;
  UniqueFd daemon_out_;
};

}  // namespace

std::unique_ptr<Transport> MakeShmTransport() { return std::make_unique<ShmTransport>(); }

}  // namespace shmlane::bench
