#include "tests/integration/daemon_harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/common/executable_copy.h"

namespace shmlane::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> out;
  for (const std::string& a : args) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// waitpid with a deadline (polling: test code only).
std::optional<int> WaitFor(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0) return -1;
    if (absl::Now() > deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace

namespace {

CommandResult Run(const Identity* who, const std::vector<std::string>& argv,
                  absl::Duration timeout) {
  CommandResult result;
  std::string program = argv.empty() ? std::string() : argv[0];
  if (who != nullptr && !argv.empty()) {
    absl::StatusOr<std::string> copy = ExecutableByAnyone(argv[0]);
    if (!copy.ok()) {
      result.err = std::string(copy.status().message());
      return result;
    }
    program = *copy;
  }
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) return result;
  std::vector<char*> args = Argv(argv);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    if (who != nullptr && (::setgroups(who->groups.size(), who->groups.data()) != 0 ||
                           ::setresgid(who->gid, who->gid, who->gid) != 0 ||
                           ::setresuid(who->uid, who->uid, who->uid) != 0)) {
      std::_Exit(126);
    }
    ::execv(program.c_str(), args.data());
    std::_Exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  const absl::Time deadline = absl::Now() + timeout;
  int open = 2;
  while (open > 0 && absl::Now() < deadline) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      } else {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  std::optional<int> code = WaitFor(pid, absl::Seconds(1) + (deadline - absl::Now()));
  if (!code) {
    ::kill(pid, SIGKILL);
    code = WaitFor(pid, absl::Seconds(5));
  }
  result.exit_code = code.value_or(-1);
  return result;
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout) {
  return Run(nullptr, argv, timeout);
}

CommandResult RunCommandAs(const Identity& who, const std::vector<std::string>& argv,
                           absl::Duration timeout) {
  return Run(&who, argv, timeout);
}

TestDaemon::TestDaemon() {
  char tmpl[] = "/tmp/shmlane-it-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  base_ = dir != nullptr ? dir : "/tmp";
  ::chmod(base_.c_str(), 0755);
  runtime_dir_ = base_ + "/rt";
}

TestDaemon::~TestDaemon() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    WaitFor(pid_, absl::Seconds(5));
  }
  if (::getenv("SHMLANE_KEEP_TEST_DIRS") == nullptr) {
    RunCommand({"/bin/rm", "-rf", base_});
  }
}

std::string TestDaemon::stderr_text() const {
  return ReadAll(absl::StrCat(base_, "/stderr.", starts_));
}

std::string TestDaemon::stdout_text() const {
  return ReadAll(absl::StrCat(base_, "/stdout.", starts_));
}

absl::Status TestDaemon::Start(std::vector<std::string> extra, int max_fds) {
  ++starts_;
  const std::string out_path = absl::StrCat(base_, "/stdout.", starts_);
  const std::string err_path = absl::StrCat(base_, "/stderr.", starts_);
  std::vector<std::string> args = {SHMLANED_PATH, "--runtime-dir", runtime_dir_};
  // A test that picks its own metrics listener (unix:PATH) says so in `extra`.
  if (std::find(extra.begin(), extra.end(), "--metrics-listen") == extra.end()) {
    args.insert(args.end(), {"--metrics-listen", "127.0.0.1:0"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (max_fds > 0) {
      rlimit lim{static_cast<rlim_t>(max_fds), static_cast<rlim_t>(max_fds)};
      ::setrlimit(RLIMIT_NOFILE, &lim);
    }
    std::vector<char*> argv = Argv(args);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    const std::string out = ReadAll(out_path);
    const size_t at = out.find("metrics:  http://127.0.0.1:");
    if (out.find("ready") != std::string::npos && out.find("state:") != std::string::npos &&
        at == std::string::npos && out.find("metrics:  unix:") != std::string::npos) {
      metrics_port_ = 0;
      return absl::OkStatus();
    }
    if (out.find("ready") != std::string::npos && at != std::string::npos &&
        out.find("state:") != std::string::npos) {
      const size_t start = at + std::strlen("metrics:  http://127.0.0.1:");
      const size_t end = out.find('/', start);
      int port = 0;
      if (absl::SimpleAtoi(out.substr(start, end - start), &port)) metrics_port_ = port;
      return absl::OkStatus();
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("shmlaned exited during start: ", ReadAll(err_path)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError("shmlaned did not print ready within 15 s");
}

absl::StatusOr<CommandResult> TestDaemon::RunExpectingExit(std::vector<std::string> args,
                                                           absl::Duration timeout) {
  std::vector<std::string> argv = {SHMLANED_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv, timeout);
  if (r.exit_code == -1) return absl::DeadlineExceededError("shmlaned did not exit");
  return r;
}

absl::StatusOr<int> TestDaemon::Stop(int sig, absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  ::kill(pid_, sig);
  std::optional<int> code = WaitFor(pid_, timeout);
  if (!code) return absl::DeadlineExceededError("shmlaned did not exit in time");
  pid_ = -1;
  return *code;
}

CommandResult TestDaemon::Ctl(std::vector<std::string> args) const {
  std::vector<std::string> argv = {SHMLANECTL_PATH, "--runtime-dir", runtime_dir_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

CommandResult TestDaemon::CtlAs(const Identity& who, std::vector<std::string> args) const {
  std::vector<std::string> argv = {SHMLANECTL_PATH, "--runtime-dir", runtime_dir_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommandAs(who, argv);
}

absl::StatusOr<RawAttach> RawAttach::Connect(const std::string& socket_path) {
  dataplane::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::InternalError(std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect ", socket_path, ": ", std::strerror(errno)));
  }
  return RawAttach(std::move(fd));
}

absl::Status RawAttach::SendBytes(const std::string& bytes) {
  if (::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) < 0) {
    return absl::UnavailableError(std::strerror(errno));
  }
  return absl::OkStatus();
}

absl::Status RawAttach::Send(const shmlane::v1::AttachMessage& message) {
  return SendBytes(message.SerializeAsString());
}

absl::Status RawAttach::SendRequest(const std::string& channel, shmlane::v1::Role role,
                                    uint32_t version, const std::string& name) {
  shmlane::v1::AttachMessage m;
  m.mutable_attach_request()->set_protocol_version(version);
  m.mutable_attach_request()->set_channel(channel);
  m.mutable_attach_request()->set_role(role);
  m.mutable_attach_request()->set_client_name(name);
  return Send(m);
}

absl::StatusOr<Packet> RawAttach::Receive(absl::Duration timeout) {
  pollfd pfd{fd_.get(), POLLIN, 0};
  const int r = ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  if (r == 0) return absl::DeadlineExceededError("no packet");
  if (r < 0) return absl::InternalError(std::strerror(errno));
  std::string buf(70000, '\0');
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return absl::UnavailableError(std::strerror(errno));
  Packet p;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      p.fds.emplace_back(fd);
    }
  }
  if (n == 0) return absl::UnavailableError("closed");
  if (!p.message.ParseFromArray(buf.data(), static_cast<int>(n))) {
    return absl::DataLossError("unparsable packet from the daemon");
  }
  return p;
}

bool RawAttach::WaitClosed(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    absl::StatusOr<Packet> p = Receive(deadline - absl::Now());
    if (absl::IsUnavailable(p.status())) return true;
    if (absl::IsDeadlineExceeded(p.status())) return false;
  }
  return false;
}

absl::StatusOr<Attached> AttachTo(const std::string& socket_path, const std::string& channel,
                                  shmlane::v1::Role role, const std::string& name) {
  absl::StatusOr<RawAttach> conn = RawAttach::Connect(socket_path);
  if (!conn.ok()) return conn.status();
  if (absl::Status s = conn->SendRequest(channel, role, 1, name); !s.ok()) return s;
  absl::StatusOr<Packet> reply = conn->Receive();
  if (!reply.ok()) return reply.status();
  return Attached{*std::move(conn), *std::move(reply)};
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  dataplane::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect 127.0.0.1:", port, ": ", std::strerror(errno)));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) {
    return absl::UnavailableError(std::strerror(errno));
  }
  std::string response;
  char buf[8192];
  while (true) {
    pollfd pfd{fd.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 5000) <= 0) return absl::DeadlineExceededError("HTTP read timed out");
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) return absl::UnavailableError(std::strerror(errno));
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return absl::DataLossError("not an HTTP response");
  }
  if (response.find(" 200 ") > body) {
    return absl::UnavailableError(response.substr(0, response.find("\r\n")));
  }
  return response.substr(body + 4);
}

std::optional<double> MetricValue(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.size() > series.size() && line.substr(0, series.size()) == series &&
        line[series.size()] == ' ') {
      double v;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return std::nullopt;
}

int RunAsIdentity(const Identity& who, int (*fn)(const std::string&), const std::string& arg) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(who.groups.size(), who.groups.data()) != 0 ||
        ::setresgid(who.gid, who.gid, who.gid) != 0 ||
        ::setresuid(who.uid, who.uid, who.uid) != 0) {
      std::_Exit(254);
    }
    std::_Exit(fn(arg));
  }
  std::optional<int> code = WaitFor(pid, absl::Seconds(20));
  return code.value_or(-1);
}

int RunAsUser(uid_t uid, gid_t gid, int (*fn)(const std::string&), const std::string& arg) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      std::_Exit(254);
    }
    std::_Exit(fn(arg));
  }
  std::optional<int> code = WaitFor(pid, absl::Seconds(20));
  return code.value_or(-1);
}

size_t CountDevShm() {
  size_t n = 0;
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
  }
  ::closedir(d);
  return n;
}

dataplane::UniqueFd DupFd(const Packet& packet, uint32_t index) {
  if (index >= packet.fds.size()) return dataplane::UniqueFd();
  return dataplane::UniqueFd(::fcntl(packet.fds[index].get(), F_DUPFD_CLOEXEC, 0));
}

}  // namespace shmlane::testing
