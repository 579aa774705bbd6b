#include "tests/clients/test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "tests/common/executable_copy.h"

namespace shmlane::testing {
namespace {

int Remove(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

int PollTimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(absl::ToInt64Milliseconds(left + absl::Milliseconds(1)));
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace

uint64_t Scaled(uint64_t n, uint64_t min) {
  double scale = 1.0;
  if (const char* env = std::getenv("SHMLANE_TEST_SCALE"); env != nullptr && *env != '\0') {
    scale = std::strtod(env, nullptr);
    if (!(scale > 0)) scale = 1.0;
  }
  const auto scaled = static_cast<uint64_t>(static_cast<double>(n) * scale);
  return scaled < min ? min : scaled;
}

// ------------------------------- TempDir ----------------------------------

absl::StatusOr<TempDir> TempDir::Make() {
  std::string tmpl = "/tmp/shmlane-client-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  // 0755: the daemon refuses group/world-writable runtime directories, and
  // a test child running as another uid must reach the attach socket.
  if (::chmod(tmpl.c_str(), 0755) != 0) {
    return absl::InternalError(absl::StrCat("chmod: ", strerror(errno)));
  }
  return TempDir(tmpl);
}

TempDir::~TempDir() {
  if (!path_.empty()) ::nftw(path_.c_str(), Remove, 16, FTW_DEPTH | FTW_PHYS);
}

// -------------------------------- Child -----------------------------------

absl::StatusOr<Child> Child::Spawn(const std::vector<std::string>& argv, std::optional<uid_t> uid) {
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls until exec (the parent may have threads).
  std::string program = argv.empty() ? std::string() : argv[0];
  if (uid.has_value() && !argv.empty()) {
    absl::StatusOr<std::string> copy = ExecutableByAnyone(argv[0]);
    if (!copy.ok()) return copy.status();
    program = *std::move(copy);
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    if (uid.has_value()) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(*uid, *uid, *uid) != 0 ||
          ::setresuid(*uid, *uid, *uid) != 0) {
        ::_exit(126);
      }
    }
    ::execv(program.c_str(), args.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  Child child(pid, pipe_fds[0]);
  child.pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      out_fd_(std::exchange(other.out_fd_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      buffered_(std::move(other.buffered_)),
      reaped_(other.reaped_),
      exit_code_(other.exit_code_) {}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
  if (pidfd_ >= 0) ::close(pidfd_);
}

absl::StatusOr<std::string> Child::ReadLine(absl::Time deadline) {
  for (;;) {
    const size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    pollfd p{.fd = out_fd_, .events = POLLIN, .revents = 0};
    const int n = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("child ", pid_, " printed no full line in time; so far: '", buffered_, "'"));
    }
    char buf[4096];
    const ssize_t got = ::read(out_fd_, buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return absl::NotFoundError(
          absl::StrCat("child ", pid_, " closed its output; rest: '", buffered_, "'"));
    }
    buffered_.append(buf, static_cast<size_t>(got));
  }
}

absl::StatusOr<std::string> Child::ExpectLine(const std::string& prefix, absl::Time deadline) {
  for (;;) {
    auto line = ReadLine(deadline);
    if (!line.ok()) return line.status();
    if (line->rfind(prefix, 0) == 0) return line;
  }
}

std::string Child::RestOfOutput(absl::Time deadline) {
  std::string out;
  for (;;) {
    auto line = ReadLine(deadline);
    if (!line.ok()) break;
    absl::StrAppend(&out, *line, "\n");
  }
  absl::StrAppend(&out, buffered_);
  buffered_.clear();
  return out;
}

void Child::Signal(int sig) const {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

absl::StatusOr<int> Child::Wait(absl::Time deadline) {
  if (reaped_) return exit_code_;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("child ", pid_, " still running"));
    }
    if (pidfd_ >= 0) {
      // Readable when the child exits: no sleep-polling.
      pollfd p{.fd = pidfd_, .events = POLLIN, .revents = 0};
      ::poll(&p, 1, PollTimeoutMs(deadline));
    } else {
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
}

// -------------------------------- Daemon ----------------------------------

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const StartOptions& options) {
  auto dir = TempDir::Make();
  if (!dir.ok()) return dir.status();
  std::vector<std::string> argv = {
      SHMLANED_PATH, "--runtime-dir", dir->path(), "--metrics-listen",
      options.metrics ? "unix:" + dir->path() + "/metrics.sock" : std::string("none")};
  if (options.per_lane_metrics) argv.push_back("--per-lane-metrics");
  auto child = Child::Spawn(argv);
  if (!child.ok()) return child.status();
  std::unique_ptr<Daemon> daemon(new Daemon(std::move(*dir), std::move(*child)));
  // Wait for both sockets; the daemon creates them once it is ready.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  const std::string attach = daemon->dir() + "/attach.sock";
  const std::string control = daemon->dir() + "/control.sock";
  while (::access(attach.c_str(), F_OK) != 0 || ::access(control.c_str(), F_OK) != 0) {
    if (auto done = daemon->child_.Wait(absl::Now()); done.ok()) {
      return absl::InternalError(absl::StrCat("shmlaned exited with ", *done, ": ",
                                              daemon->child_.RestOfOutput(absl::Now())));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError("shmlaned did not create its sockets within 20 s");
    }
    absl::SleepFor(absl::Milliseconds(5));  // start-up only
  }
  // The control socket may exist a moment before gRPC serves on it.
  auto channel = grpc::CreateChannel("unix:" + control, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return absl::DeadlineExceededError("shmlaned's control socket did not accept gRPC");
  }
  return daemon;
}

Daemon::~Daemon() {
  if (!killed_) {
    child_.Signal(SIGTERM);
    if (!child_.Wait(absl::Now() + absl::Seconds(5)).ok()) Kill();
  }
}

void Daemon::Kill() {
  child_.Signal(SIGKILL);
  (void)child_.Wait(absl::InfiniteFuture());
  killed_ = true;
}

absl::Status Daemon::CreateChannel(const std::string& name, v1::ChannelPattern pattern,
                                   uint64_t ring_bytes, uint32_t max_frame_bytes,
                                   v1::BackpressurePolicy policy, v1::WaitPreference wait) {
  auto channel =
      grpc::CreateChannel("unix:" + dir() + "/control.sock", grpc::InsecureChannelCredentials());
  auto stub = v1::ChannelService::NewStub(channel);
  v1::CreateChannelRequest req;
  req.mutable_spec()->set_name(name);
  req.mutable_spec()->set_pattern(pattern);
  req.mutable_spec()->set_ring_bytes(ring_bytes);
  req.mutable_spec()->set_max_frame_bytes(max_frame_bytes);
  req.mutable_spec()->set_backpressure(policy);
  req.mutable_spec()->set_wait_preference(wait);
  // BROADCAST has exactly one publisher (max_producers must stay unset).
  if (pattern != v1::CHANNEL_PATTERN_BROADCAST) req.mutable_spec()->set_max_producers(64);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::Channel out;
  return FromGrpc(stub->CreateChannel(&ctx, req, &out));
}

absl::Status Daemon::DeleteChannel(const std::string& name, bool force) {
  auto channel =
      grpc::CreateChannel("unix:" + dir() + "/control.sock", grpc::InsecureChannelCredentials());
  auto stub = v1::ChannelService::NewStub(channel);
  v1::DeleteChannelRequest req;
  req.set_name(name);
  req.set_force(force);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::DeleteChannelResponse out;
  return FromGrpc(stub->DeleteChannel(&ctx, req, &out));
}

absl::Status Daemon::GrantUid(const std::string& channel_name, uint32_t uid, v1::GrantRole role) {
  auto channel =
      grpc::CreateChannel("unix:" + dir() + "/control.sock", grpc::InsecureChannelCredentials());
  auto stub = v1::AccessService::NewStub(channel);
  v1::AddGrantRequest req;
  req.set_channel(channel_name);
  req.mutable_grant()->mutable_principal()->set_uid(uid);
  req.mutable_grant()->set_role(role);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GrantResponse out;
  return FromGrpc(stub->AddGrant(&ctx, req, &out));
}

absl::StatusOr<v1::ChannelStats> Daemon::Stats(const std::string& channel_name,
                                               bool include_lanes) {
  auto channel =
      grpc::CreateChannel("unix:" + dir() + "/control.sock", grpc::InsecureChannelCredentials());
  auto stub = v1::ChannelService::NewStub(channel);
  v1::GetChannelStatsRequest req;
  req.set_name(channel_name);
  req.set_include_lanes(include_lanes);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ChannelStats out;
  if (absl::Status s = FromGrpc(stub->GetChannelStats(&ctx, req, &out)); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::string> Daemon::Metrics() {
  const std::string path = dir() + "/metrics.sock";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError("path too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::ErrnoToStatus(errno, "connect " + path);
  }
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return absl::ErrnoToStatus(errno, "send");
  }
  // The server closes after one response (Connection: close).
  std::string response;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) return absl::DeadlineExceededError("no /metrics response within 10 s");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left_ms)) < 0 && errno != EINTR) {
      return absl::ErrnoToStatus(errno, "poll");
    }
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "recv");
    }
    response.append(buf, static_cast<size_t>(n));
  }
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos) {
    return absl::InternalError("bad /metrics response: " + response.substr(0, 200));
  }
  return response.substr(body + 4);
}

std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) continue;
    double v = 0;
    if (!absl::SimpleAtod(line.substr(space + 1), &v)) continue;
    out[std::string(line.substr(0, space))] = v;
  }
  return out;
}

}  // namespace shmlane::testing
