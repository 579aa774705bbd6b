// ClientProcess: a client of the daemon in a real process for integration
// tests. `body` runs in a forked child (the library's clients, not the test's
// threads, so a SIGKILL of it is a real peer death); the child reports lines
// on a pipe and reads one-byte commands ("go") from another. The child is
// killed when the ClientProcess is destroyed, and alarm(`alarm_seconds`) is
// its own safety net should the test itself hang.
//
// OwnedChild owns any other child pid the same way. Also: MonotonicNs() (CLOCK_MONOTONIC,
// comparable across the processes) and ClientOptions() (attach options for a TestDaemon).
//
// Thread safety: test-thread only.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {

inline int64_t MonotonicNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline client::AttachOptions ClientOptions(const TestDaemon& d, const std::string& name) {
  client::AttachOptions o;
  o.runtime_dir = d.runtime_dir();
  o.client_name = name;
  return o;
}

// A child process this test owns: waited for with a deadline, killed (and
// reaped) at destruction if it is still there.
class OwnedChild {
 public:
  explicit OwnedChild(pid_t pid = -1) : pid_(pid) {}
  ~OwnedChild() { Kill(); }
  OwnedChild(const OwnedChild&) = delete;
  OwnedChild& operator=(const OwnedChild&) = delete;

  // Takes over `pid` (killing the one owned before, if any).
  void Adopt(pid_t pid) {
    Kill();
    pid_ = pid;
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  // The exit code (128+signal if killed), or nullopt if still running at the
  // timeout (or not ours to wait for).
  std::optional<int> Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (r < 0 || absl::Now() >= deadline) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return std::nullopt;
  }
  // Still running (neither exited nor killed).
  bool Alive() {
    int status = 0;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

class ClientProcess {
 public:
  struct Io {
    int report_fd;
    int command_fd;
    void Say(const std::string& line) const {
      const std::string text = line + "\n";
      (void)!::write(report_fd, text.data(), text.size());
    }
    // Blocks until the parent sends a byte (or closes the pipe).
    void AwaitGo() const {
      char c;
      (void)!::read(command_fd, &c, 1);
    }
    // True once the parent sent a byte (does not consume it).
    bool GoPending() const {
      pollfd p{command_fd, POLLIN, 0};
      return ::poll(&p, 1, 0) == 1;
    }
  };

  explicit ClientProcess(const std::function<int(const Io&)>& body, unsigned alarm_seconds = 90) {
    int report[2], command[2];
    if (::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(command, O_CLOEXEC) != 0) std::abort();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(alarm_seconds);
      ::close(report[0]);
      ::close(command[1]);
      std::_Exit(body(Io{report[1], command[0]}));
    }
    child_.Adopt(pid);
    ::close(report[1]);
    ::close(command[0]);
    report_fd_ = report[0];
    command_fd_ = command[1];
  }
  ~ClientProcess() {
    Kill();
    ::close(report_fd_);
    ::close(command_fd_);
  }
  ClientProcess(const ClientProcess&) = delete;
  ClientProcess& operator=(const ClientProcess&) = delete;

  // The next line the child reports; an error on timeout or EOF.
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError("the client process reported nothing in time");
      }
      pollfd p{report_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char chunk[512];
      const ssize_t n = ::read(report_fd_, chunk, sizeof(chunk));
      if (n <= 0) return absl::UnavailableError("the client process exited without a report");
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }
  // The next line that starts with `prefix` (others are skipped).
  absl::StatusOr<std::string> ReadLineStartingWith(const std::string& prefix,
                                                   absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      absl::StatusOr<std::string> line = ReadLine(deadline - absl::Now());
      if (!line.ok() || absl::StartsWith(*line, prefix)) return line;
    }
  }
  void Go() { (void)!::write(command_fd_, "g", 1); }
  void Kill() { child_.Kill(); }
  pid_t pid() const { return child_.pid(); }
  // The exit code (128+signal if killed), or nullopt if still running at the
  // timeout.
  std::optional<int> Wait(absl::Duration timeout) { return child_.Wait(timeout); }

 private:
  OwnedChild child_;
  int report_fd_ = -1;
  int command_fd_ = -1;
  std::string buffer_;
};

}  // namespace shmlane::testing
