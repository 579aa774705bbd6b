#include "tests/dataplane/watchdog.h"

#include <dirent.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace shmlane::testing {
namespace {

// The signal a hung test's threads receive so that each prints its own stack.
const int kDumpSignal = SIGRTMIN + 3;
std::atomic<int> g_dumped{0};

void DumpOwnStack(int) {
  // backtrace() was called once at install time, so it does not allocate here.
  void* frames[64];
  const int n = backtrace(frames, 64);
  char line[64];
  const int len = std::snprintf(line, sizeof(line), "--- thread %ld ---\n",
                                static_cast<long>(syscall(SYS_gettid)));
  (void)!write(STDERR_FILENO, line, static_cast<size_t>(len));
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  g_dumped.fetch_add(1, std::memory_order_release);
}

void DumpAllThreads() {
  const pid_t pid = getpid();
  const long self = syscall(SYS_gettid);
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    const long tid = std::strtol(e->d_name, nullptr, 10);
    if (tid <= 0 || tid == self) continue;
    const int before = g_dumped.load(std::memory_order_acquire);
    if (syscall(SYS_tgkill, pid, tid, kDumpSignal) != 0) continue;
    // One thread at a time so that stacks do not interleave; a thread that
    // cannot run its handler (stopped in the kernel) gets one second.
    for (int i = 0; i < 1000 && g_dumped.load(std::memory_order_acquire) == before; ++i) {
      usleep(1000);
    }
  }
  closedir(dir);
}

// Prints one line of a /proc file (or "?") after `label`.
void PrintProcLine(const std::string& path, const char* label, bool cut_after_state = false) {
  char buf[512] = "?";
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    if (std::fgets(buf, sizeof(buf), f) == nullptr) std::snprintf(buf, sizeof(buf), "?");
    std::fclose(f);
  }
  const size_t n = std::strlen(buf);
  if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = '\0';
  if (cut_after_state) {
    // "pid (comm) S ppid ...": keep "pid (comm) S" (comm may hold spaces).
    if (char* close = std::strrchr(buf, ')'); close != nullptr && close[1] != '\0') close[3] = '\0';
  }
  std::fprintf(stderr, "  %s: %s\n", label, buf);
}

// The children of this process (any thread's), from /proc/*/stat.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    const long pid = std::strtol(e->d_name, nullptr, 10);
    if (pid <= 0) continue;
    char buf[512];
    FILE* f = std::fopen(("/proc/" + std::string(e->d_name) + "/stat").c_str(), "r");
    if (f == nullptr) continue;
    const bool got = std::fgets(buf, sizeof(buf), f) != nullptr;
    std::fclose(f);
    if (!got) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
    const char* close = std::strrchr(buf, ')');
    if (close == nullptr) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(close + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent) {
      out.push_back(static_cast<pid_t>(pid));
    }
  }
  closedir(dir);
  return out;
}

void DumpChildren() {
  for (pid_t child : ChildrenOf(getpid())) DumpProcess(child);
}

// Never destroyed: its thread runs until the process exits.
class Watchdog {
 public:
  Watchdog() {
    const char* s = std::getenv("SHMLANE_TEST_TIMEOUT_S");
    default_limit_ = absl::Seconds(s != nullptr && std::atof(s) > 0 ? std::atof(s) : 120.0);
    thread_ = std::thread([this] { Run(); });
    thread_.detach();  // lives until exit; never joined
    // Return only once the thread is parked on cv_. Tests fork() right
    // away, and a thread still starting up inside the sanitizer runtime
    // (ASan takes allocator locks there) leaves the child a locked copy:
    // its first allocation of that size then waits forever (seen as a
    // consumer child stuck in operator new from the first test's first
    // wait, under ASan, about one run in 25 on a busy 2-CPU machine).
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return started_; });
  }

  void Start(const ::testing::TestInfo& info) {
    std::lock_guard<std::mutex> lock(mu_);
    name_ = std::string(info.test_suite_name()) + "." + info.name();
    Arm(default_limit_);
  }
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = false;
    cv_.notify_all();
  }
  void SetLimit(absl::Duration limit) {
    std::lock_guard<std::mutex> lock(mu_);
    Arm(limit);
  }

 private:
  // REQUIRES: mu_ held.
  void Arm(absl::Duration limit) {
    armed_ = true;
    limit_ = limit;
    deadline_ = std::chrono::steady_clock::now() +
                std::chrono::nanoseconds(absl::ToInt64Nanoseconds(limit));
    cv_.notify_all();
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    started_ = true;
    cv_.notify_all();  // the constructor returns once we wait below (mu_ released)
    for (;;) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      const auto deadline = deadline_;
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && armed_ &&
          deadline_ == deadline) {
        std::fprintf(stderr,
                     "\n[watchdog] %s did not finish within %s: failing it with the stacks of "
                     "all threads, then aborting\n",
                     name_.c_str(), absl::FormatDuration(limit_).c_str());
        std::fflush(stderr);
        DumpAllThreads();
        DumpChildren();
        std::fprintf(stderr, "[watchdog] %s: TIMED OUT\n", name_.c_str());
        std::fflush(stderr);
        std::abort();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool armed_ = false;
  std::string name_;
  absl::Duration default_limit_;
  absl::Duration limit_;
  std::chrono::steady_clock::time_point deadline_;
  std::thread thread_;
};

Watchdog* g_watchdog = nullptr;

// Owned (and deleted at exit) by GoogleTest; forwards to the watchdog.
class Listener : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo& info) override {
    if (g_watchdog != nullptr) g_watchdog->Start(info);
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    if (g_watchdog != nullptr) g_watchdog->Stop();
  }
};

}  // namespace

void SetTestTimeLimit(absl::Duration limit) {
  if (g_watchdog != nullptr) g_watchdog->SetLimit(limit);
}

void InstallTestWatchdog() {
  void* warm[1];
  (void)backtrace(warm, 1);  // loads libgcc now, not inside a signal handler
  struct sigaction sa {};
  sa.sa_handler = DumpOwnStack;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(kDumpSignal, &sa, nullptr);
  g_watchdog = new Watchdog();  // leaked on purpose: its thread outlives main
  ::testing::UnitTest::GetInstance()->listeners().Append(new Listener());
}

void DumpProcess(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::fprintf(stderr, "--- process %d ---\n", static_cast<int>(pid));
  PrintProcLine(proc + "/stat", "stat", true);
  PrintProcLine(proc + "/wchan", "wchan");
  PrintProcLine(proc + "/syscall", "syscall");
  std::fflush(stderr);
  // Each of its threads prints its own user-space stack (the handler was
  // inherited across fork()); it writes to the stderr we share.
  DIR* dir = opendir((proc + "/task").c_str());
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    const long tid = std::strtol(e->d_name, nullptr, 10);
    if (tid <= 0) continue;
    PrintProcLine(proc + "/task/" + e->d_name + "/stat", "thread", true);
    if (syscall(SYS_tgkill, pid, tid, kDumpSignal) == 0) usleep(300'000);
  }
  closedir(dir);
}

void DieWithParent() {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The watchdog thread did not survive fork(); the child is bounded by its
  // parent's watchdog (and dies with it).
  g_watchdog = nullptr;
}

}  // namespace shmlane::testing
