#include "bench/loadgen/sys.h"

#include <dirent.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace shmlane::bench {

namespace {

timespec ToTimespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}

int64_t TimevalNs(const timeval& tv) {
  return int64_t{tv.tv_sec} * 1000000000 + int64_t{tv.tv_usec} * 1000;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The value of "Key:   123 kB" style lines.
int64_t FieldOf(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, key)) continue;
    if (!absl::ConsumePrefix(&line, ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    int64_t v = 0;
    if (absl::SimpleAtoi(line, &v)) return v;
  }
  return 0;
}

}  // namespace

void FutexWait(const std::atomic<uint32_t>* word, uint32_t expected, int64_t deadline_ns) {
  while (word->load(std::memory_order_acquire) == expected) {
    timespec* timeout = nullptr;
    timespec rel;
    if (deadline_ns != INT64_MAX) {
      const int64_t left = deadline_ns - NowNs();
      if (left <= 0) return;
      rel = ToTimespec(left);
      timeout = &rel;
    }
    // Not FUTEX_PRIVATE_FLAG: the word is in a mapping shared by processes.
    syscall(SYS_futex, reinterpret_cast<const uint32_t*>(word), FUTEX_WAIT, expected, timeout,
            nullptr, 0);
  }
}

void FutexWakeAll(const std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<const uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr,
          0);
}

int OnlineCpus() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

absl::Status PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % OnlineCpus(), &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return absl::InternalError(absl::StrCat("sched_setaffinity(", cpu, "): ", strerror(errno)));
  }
  return absl::OkStatus();
}

CpuUsage SelfUsage() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  CpuUsage u;
  u.user_ns = TimevalNs(ru.ru_utime);
  u.sys_ns = TimevalNs(ru.ru_stime);
  u.voluntary_switches = ru.ru_nvcsw;
  u.involuntary_switches = ru.ru_nivcsw;
  return u;
}

CpuUsage Diff(const CpuUsage& later, const CpuUsage& earlier) {
  CpuUsage d;
  d.user_ns = later.user_ns - earlier.user_ns;
  d.sys_ns = later.sys_ns - earlier.sys_ns;
  d.voluntary_switches = later.voluntary_switches - earlier.voluntary_switches;
  d.involuntary_switches = later.involuntary_switches - earlier.involuntary_switches;
  return d;
}

CpuUsage ProcessUsage(pid_t pid) {
  CpuUsage u;
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  // The command name may hold spaces; fields after it start past the last ')'.
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return u;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
  // utime and stime are fields 14 and 15 of the file, 12 and 13 after ')'.
  if (fields.size() > 12) {
    const int64_t tick_ns = 1000000000 / sysconf(_SC_CLK_TCK);
    int64_t utime = 0, stime = 0;
    if (absl::SimpleAtoi(fields[11], &utime)) u.user_ns = utime * tick_ns;
    if (absl::SimpleAtoi(fields[12], &stime)) u.sys_ns = stime * tick_ns;
  }
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  u.voluntary_switches = FieldOf(status, "voluntary_ctxt_switches");
  u.involuntary_switches = FieldOf(status, "nonvoluntary_ctxt_switches");
  return u;
}

int64_t ProcessRssKb(pid_t pid) {
  return FieldOf(ReadFile(absl::StrCat("/proc/", pid, "/status")), "VmRSS");
}

int64_t ProcessMemfdBytes(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  int64_t total = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = absl::StrCat(dir, "/", e->d_name);
    char target[PATH_MAX];
    const ssize_t n = readlink(path.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (strncmp(target, "/memfd:", 7) != 0) continue;
    struct stat st;
    if (stat(path.c_str(), &st) == 0) total += st.st_size;
  }
  closedir(d);
  return total;
}

int64_t SystemShmemKb() { return FieldOf(ReadFile("/proc/meminfo"), "Shmem"); }

MachineInfo GetMachineInfo() {
  MachineInfo m;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  m.host = host;
  const std::string cpuinfo = ReadFile("/proc/cpuinfo");
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    if (absl::ConsumePrefix(&line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != absl::string_view::npos) {
        m.cpu_model = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
      break;
    }
  }
  m.cpus = OnlineCpus();
  utsname u;
  if (uname(&u) == 0) m.kernel = absl::StrCat(u.sysname, " ", u.release);
  return m;
}

void WaitUntil(int64_t t_ns, WaitMode mode, int64_t spin_ns) {
  if (mode == WaitMode::kBalanced) mode = WaitMode::kPark;  // a sleep has nothing to learn
  if (mode != WaitMode::kSpin) {
    const int64_t sleep_until = mode == WaitMode::kPark ? t_ns : t_ns - spin_ns;
    if (NowNs() < sleep_until) {
      const timespec ts = ToTimespec(sleep_until);
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      }
    }
    if (mode == WaitMode::kPark) return;
  }
  while (NowNs() < t_ns) {
    CpuRelax();
  }
}

absl::Status WaitFd(int fd, short events, WaitMode mode, int64_t spin_ns,
                    int64_t* spin_started_ns) {
  if (mode == WaitMode::kSpin) return absl::OkStatus();
  if (mode == WaitMode::kAdaptive) {
    const int64_t now = NowNs();
    if (*spin_started_ns == 0) *spin_started_ns = now;
    if (now - *spin_started_ns < spin_ns) return absl::OkStatus();
  }
  pollfd p{fd, events, 0};
  while (poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
  }
  *spin_started_ns = 0;
  return absl::OkStatus();
}

void RaiseFdLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

IoBytes SelfIo() {
  IoBytes io;
  std::FILE* f = std::fopen("/proc/self/io", "r");
  if (f == nullptr) return io;
  char key[32];
  unsigned long long value;
  while (std::fscanf(f, "%31s %llu", key, &value) == 2) {
    if (std::strcmp(key, "rchar:") == 0) io.read = value;
    if (std::strcmp(key, "wchar:") == 0) io.written = value;
  }
  std::fclose(f);
  return io;
}

}  // namespace shmlane::bench
