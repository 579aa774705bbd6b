#include "bench/loadgen/grpc_transport.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/loadgen/bench.grpc.pb.h"
#include "bench/loadgen/sys.h"

namespace shmlane::bench {
namespace {

using ::shmlane::bench::v1::Frame;
using ::shmlane::bench::v1::LoadGen;
using ::shmlane::bench::v1::SubscribeRequest;

class GrpcServer final : public ServerEndpoint, public LoadGen::CallbackService {
 public:
  explicit GrpcServer(int expected) : expected_(expected) {}

  absl::Status Start(const std::string& address) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr)
      return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
    return absl::OkStatus();
  }

  ~GrpcServer() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  absl::Status Serve(ServerSink& sink, int64_t deadline_ns) override {
    absl::MutexLock lock(&mu_);
    sink_ = &sink;
    absl::Status result = absl::OkStatus();
    while (true) {
      const int64_t now = NowNs();
      sink.Tick(now);
      if (finished_ == expected_) break;
      if (now >= deadline_ns) {
        result = absl::DeadlineExceededError(
            absl::StrCat(expected_ - finished_, " stream(s) still open at the server's deadline"));
        break;
      }
      const int64_t next = std::min(sink.NextBoundaryNs(), deadline_ns);
      mu_.AwaitWithTimeout(absl::Condition(this, &GrpcServer::AllFinished),
                           absl::Nanoseconds(next - now));
    }
    sink.Tick(NowNs());
    sink_ = nullptr;
    return result;
  }

 private:
  class Reactor final : public grpc::ServerBidiReactor<Frame, Frame> {
   public:
    explicit Reactor(GrpcServer* server) : server_(server) { StartRead(&in_); }

    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status::OK);
        return;
      }
      bool echo;
      {
        absl::MutexLock lock(&server_->mu_);
        // Frames can only arrive after the start barrier, but the server's
        // main thread may not have installed the sink yet.
        server_->mu_.Await(absl::Condition(server_, &GrpcServer::HasSink));
        const auto& data = in_.data();
        echo = server_->sink_->OnFrame(std::span<const std::byte>(
            reinterpret_cast<const std::byte*>(data.data()), data.size()));
      }
      if (echo) {
        out_.Swap(&in_);
        StartWrite(&out_);
      } else {
        StartRead(&in_);
      }
    }

    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status::OK);
        return;
      }
      StartRead(&in_);
    }

    void OnDone() override {
      {
        absl::MutexLock lock(&server_->mu_);
        ++server_->finished_;
      }
      delete this;
    }

   private:
    GrpcServer* server_;
    Frame in_;
    Frame out_;
  };

  grpc::ServerBidiReactor<Frame, Frame>* Exchange(grpc::CallbackServerContext*) override {
    return new Reactor(this);
  }

  bool AllFinished() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_ == expected_; }
  bool HasSink() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return sink_ != nullptr; }

  const int expected_;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  ServerSink* sink_ ABSL_GUARDED_BY(mu_) = nullptr;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
};

class GrpcClient final : public ClientEndpoint {
 public:
  explicit GrpcClient(const RunSpec& spec)
      : batch_(spec.pattern == Pattern::kPingPong ? 1 : spec.batch),
        batch_bytes_(spec.batch_bytes) {}

  absl::Status Open(const std::string& address) {
    channel_ = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
    }
    stub_ = LoadGen::NewStub(channel_);
    stream_ = stub_->Exchange(&context_);
    return absl::OkStatus();
  }

  // gRPC writes one message per Write(); what its API offers for batching
  // is the buffer hint: a hinted write may stay in gRPC's buffer until the
  // next unhinted one, which flushes them together. A batch of N is N - 1
  // hinted writes and one plain write (gRPC may still send earlier: the hint
  // is a permission, not a promise).
  absl::Status Send(std::span<const std::byte> frame, bool more) override {
    out_.set_data(reinterpret_cast<const char*>(frame.data()), frame.size());
    ++pending_;
    pending_bytes_ += frame.size();
    const bool flush = batch_ == 1 || !more || pending_ >= batch_ || pending_bytes_ >= batch_bytes_;
    grpc::WriteOptions options;
    if (!flush) options.set_buffer_hint();
    if (!stream_->Write(out_, options)) {
      return absl::UnavailableError("gRPC stream closed by the server");
    }
    if (flush) {
      ++flushes_;
      pending_ = 0;
      pending_bytes_ = 0;
    }
    return absl::OkStatus();
  }

  uint64_t flushes() const override { return flushes_ + (pending_ > 0 ? 1 : 0); }

  absl::Status Receive(std::span<std::byte> buffer, size_t* length) override {
    if (!stream_->Read(&in_)) return absl::UnavailableError("gRPC stream ended");
    const std::string& data = in_.data();
    if (data.size() > buffer.size()) return absl::DataLossError("reply larger than the frame");
    std::memcpy(buffer.data(), data.data(), data.size());
    *length = data.size();
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (stream_ == nullptr) return absl::OkStatus();
    stream_->WritesDone();  // also flushes hinted writes
    const grpc::Status s = stream_->Finish();
    stream_.reset();
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("gRPC Finish: ", s.error_message()));
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<LoadGen::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<Frame, Frame>> stream_;
  Frame out_;
  Frame in_;
  int batch_;
  uint64_t batch_bytes_;
  int pending_ = 0;
  uint64_t pending_bytes_ = 0;
  uint64_t flushes_ = 0;
};

// Fanout: a gRPC server with one server-streaming call per subscriber. Each
// frame becomes one message shared by every stream's queue; gRPC serializes
// it into each stream. A stream writes one message at a time (the callback
// API's rule); while more are queued it writes them with the buffer hint, and
// flushes every `batch` messages or when its queue runs dry. The publisher
// waits while a subscriber's queue is full, i.e. for the slowest subscriber.
class GrpcPublisher final : public FanoutPublisher, public LoadGen::CallbackService {
 public:
  explicit GrpcPublisher(const RunSpec& spec)
      : expected_(static_cast<size_t>(spec.clients)),
        batch_(spec.batch),
        queue_cap_(static_cast<size_t>(std::max(16, 2 * spec.batch))) {}

  ~GrpcPublisher() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    // Shutdown returned: every stream's OnDone has run.
  }

  absl::Status Start(const std::string& address) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr)
      return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
    return absl::OkStatus();
  }

  absl::Status AwaitSubscribers(int64_t deadline_ns) override {
    absl::MutexLock lock(&mu_);
    auto all = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.size() >= expected_; };
    mu_.AwaitWithTimeout(absl::Condition(&all), absl::Nanoseconds(deadline_ns - NowNs()));
    if (streams_.size() < expected_) {
      return absl::DeadlineExceededError(absl::StrCat(streams_.size(), " of ", expected_,
                                                      " subscribers connected by the deadline"));
    }
    for (const auto& s : streams_) linked_.push_back(s.get());
    return absl::OkStatus();
  }

  absl::Status Send(std::span<const std::byte> frame, bool more) override {
    (void)more;  // each stream flushes when its queue runs dry
    auto message = std::make_shared<Frame>();
    message->set_data(reinterpret_cast<const char*>(frame.data()), frame.size());
    for (Stream* s : linked_) {
      if (absl::Status st = s->Push(message, queue_cap_); !st.ok()) return st;
      copied_ += frame.size();
    }
    return absl::OkStatus();
  }

  absl::Status Close() override {
    for (Stream* s : linked_) s->RequestFinish();
    absl::Status result = absl::OkStatus();
    for (Stream* s : linked_) {
      if (absl::Status st = s->AwaitDone(absl::Seconds(30)); !st.ok() && result.ok()) result = st;
    }
    return result;
  }

  // Flushing (unhinted) writes per stream, averaged over the streams.
  uint64_t flushes() const override {
    uint64_t sum = 0;
    for (Stream* s : linked_) sum += s->flushes();
    return linked_.empty() ? 0 : sum / linked_.size();
  }
  uint64_t copied_bytes() const override { return copied_; }

 private:
  class Stream final : public grpc::ServerWriteReactor<Frame> {
   public:
    explicit Stream(int batch) : batch_(batch) {}

    // The publisher's thread: queues a message, waiting while the queue is full.
    absl::Status Push(std::shared_ptr<const Frame> message, size_t cap) {
      {
        absl::MutexLock lock(&mu_);
        auto room = [this, cap]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return queue_.size() < cap || failed_ || done_;
        };
        mu_.Await(absl::Condition(&room));
        if (failed_ || done_) return absl::UnavailableError("a subscriber's stream failed");
        queue_.push_back(std::move(message));
      }
      MaybeWrite();
      return absl::OkStatus();
    }

    void RequestFinish() {
      {
        absl::MutexLock lock(&mu_);
        finish_requested_ = true;
      }
      MaybeWrite();
    }

    absl::Status AwaitDone(absl::Duration timeout) {
      absl::MutexLock lock(&mu_);
      auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; };
      if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
        return absl::DeadlineExceededError("a subscriber's stream did not finish");
      }
      return failed_ ? absl::UnavailableError("a subscriber's stream failed") : absl::OkStatus();
    }

    void OnWriteDone(bool ok) override {
      {
        absl::MutexLock lock(&mu_);
        writing_ = false;
        current_.reset();
        if (!ok) failed_ = true;
      }
      MaybeWrite();
    }

    void OnDone() override {
      absl::MutexLock lock(&mu_);
      done_ = true;  // the publisher owns this object
    }

    uint64_t flushes() {
      absl::MutexLock lock(&mu_);
      return flushes_;
    }

   private:
    // Starts the next write, or the finish, outside the lock (a reaction
    // may run on the calling thread).
    void MaybeWrite() {
      const Frame* next = nullptr;
      grpc::WriteOptions options;
      bool finish = false;
      {
        absl::MutexLock lock(&mu_);
        if (writing_ || finished_) return;
        if (failed_) {
          finished_ = true;
          finish = true;
        } else if (!queue_.empty()) {
          current_ = std::move(queue_.front());
          queue_.pop_front();
          writing_ = true;
          next = current_.get();
          if (!queue_.empty() && ++since_flush_ < batch_) {
            options.set_buffer_hint();
          } else {
            since_flush_ = 0;
            ++flushes_;
          }
        } else if (finish_requested_) {
          finished_ = true;
          finish = true;
        }
      }
      if (next != nullptr) StartWrite(next, options);
      if (finish) Finish(grpc::Status::OK);
    }

    const int batch_;
    absl::Mutex mu_;
    std::deque<std::shared_ptr<const Frame>> queue_ ABSL_GUARDED_BY(mu_);
    std::shared_ptr<const Frame> current_ ABSL_GUARDED_BY(mu_);  // being written
    int since_flush_ ABSL_GUARDED_BY(mu_) = 0;
    uint64_t flushes_ ABSL_GUARDED_BY(mu_) = 0;
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
    bool failed_ ABSL_GUARDED_BY(mu_) = false;
    bool done_ ABSL_GUARDED_BY(mu_) = false;
  };

  grpc::ServerWriteReactor<Frame>* Subscribe(grpc::CallbackServerContext*,
                                             const SubscribeRequest*) override {
    auto stream = std::make_unique<Stream>(batch_);
    Stream* raw = stream.get();
    absl::MutexLock lock(&mu_);
    streams_.push_back(std::move(stream));
    return raw;
  }

  const size_t expected_;
  const int batch_;
  const size_t queue_cap_;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  std::vector<Stream*> linked_;  // the publisher's thread only
  uint64_t copied_ = 0;
};

class GrpcSubscriber final : public FanoutSubscriber {
 public:
  absl::Status Open(const std::string& address, int index, const RunSpec& spec) {
    channel_ = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
    }
    stub_ = LoadGen::NewStub(channel_);
    // A bound on the whole call, so that a hung publisher cannot hang us.
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::nanoseconds(absl::ToInt64Nanoseconds(
                              spec.duration + spec.warmup + absl::Seconds(120))));
    SubscribeRequest request;
    request.set_subscriber(index);
    reader_ = stub_->Subscribe(&context_, request);
    return absl::OkStatus();
  }

  absl::Status Receive(ServerSink& sink, int64_t deadline_ns) override {
    (void)deadline_ns;  // the call's deadline bounds the reads
    for (uint64_t n = 0; reader_->Read(&in_); ++n) {
      const std::string& data = in_.data();
      sink.OnFrame(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size()));
      if (n % 16 == 0) sink.Tick(NowNs());
    }
    const grpc::Status s = reader_->Finish();
    sink.Tick(NowNs());
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("gRPC Subscribe: ", s.error_message()));
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<LoadGen::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<Frame>> reader_;
  Frame in_;
};

class GrpcTransport final : public Transport {
 public:
  absl::Status Prepare(const RunSpec& spec, const std::string& workdir) override {
    spec_ = spec;
    clients_ = spec.clients;
    path_ = workdir + "/grpc.sock";
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<ServerEndpoint>> StartServer() override {
    auto server = std::make_unique<GrpcServer>(clients_);
    if (absl::Status s = server->Start(address()); !s.ok()) return s;
    return std::unique_ptr<ServerEndpoint>(std::move(server));
  }

  absl::StatusOr<std::unique_ptr<ClientEndpoint>> Connect(int) override {
    auto client = std::make_unique<GrpcClient>(spec_);
    if (absl::Status s = client->Open(address()); !s.ok()) return s;
    return std::unique_ptr<ClientEndpoint>(std::move(client));
  }

  absl::StatusOr<std::unique_ptr<FanoutPublisher>> StartPublisher() override {
    auto pub = std::make_unique<GrpcPublisher>(spec_);
    if (absl::Status s = pub->Start(address()); !s.ok()) return s;
    return std::unique_ptr<FanoutPublisher>(std::move(pub));
  }

  absl::StatusOr<std::unique_ptr<FanoutSubscriber>> Subscribe(int index) override {
    auto sub = std::make_unique<GrpcSubscriber>();
    if (absl::Status s = sub->Open(address(), index, spec_); !s.ok()) return s;
    return std::unique_ptr<FanoutSubscriber>(std::move(sub));
  }

  void Cleanup() override { unlink(path_.c_str()); }

 private:
  std::string address() const { return "unix:" + path_; }

  RunSpec spec_;
  int clients_ = 1;
  std::string path_;
};

}  // namespace

std::unique_ptr<Transport> MakeGrpcTransport() { return std::make_unique<GrpcTransport>(); }

}  // namespace shmlane::bench
