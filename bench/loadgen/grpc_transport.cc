#include "bench/loadgen/grpc_transport.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/loadgen/bench.grpc.pb.h"
#include "bench/loadgen/sys.h"

namespace shmlane::bench {
namespace {

using ::shmlane::bench::v1::Frame;
using ::shmlane::bench::v1::LoadGen;

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
