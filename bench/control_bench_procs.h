// The processes and measurements shmlane-control-bench (control_bench.cc)
// is built from: forked child processes that report figures over a pipe
// (Child, RunChild), a real shmlaned in its own runtime directory (Daemon),
// a gRPC control client (Control), attach options and a frame stream for
// client processes, and /proc readings (RSS, PSS, CPU, memfds) of a pid.
// Internal to bench/.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "bench/cli.h"
#include "bench/result_json.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::bench::cbench {

using dataplane::UniqueFd;
// Figures by name ("attach.p50_us"), as the JSON result writes them.
using Results = std::map<std::string, double>;

inline int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}
inline double Median(const std::vector<double>& v) { return Pct(v, 0.5); }

inline void PutPercentiles(Results& r, const std::string& key, const std::vector<double>& us) {
  r[key + ".p50_us"] = Pct(us, 0.50);
  r[key + ".p90_us"] = Pct(us, 0.90);
  r[key + ".p99_us"] = Pct(us, 0.99);
  r[key + ".max_us"] = Pct(us, 1.0);
}

// The file system under `path` (the state file is fsynced there).
inline std::string FsName(const std::string& path) {
  struct statfs fs;
  if (statfs(path.c_str(), &fs) != 0) return "unknown";
  if (fs.f_type == 0x01021994) return "tmpfs";
  if (fs.f_type == 0xEF53) return "ext4";
  return absl::StrCat("0x", absl::Hex(fs.f_type));
}

inline std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

// A line "Key:   123 kB" of /proc/PID/FILE, in kB.
inline double ProcKb(pid_t pid, const std::string& key, const char* file = "status") {
  std::ifstream in(absl::StrCat("/proc/", pid, "/", file));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) != 0) continue;
    double kb = 0;
    std::istringstream(line.substr(key.size() + 1)) >> kb;
    return kb;
  }
  return 0;
}

// The daemon's memory at one point: VmRSS (what `ps` shows, mostly shared
// library pages), RssAnon (its own heap, stacks and written library data:
// what it costs), RssFile, RssShmem (the lane headers it touched) and Pss
// (its proportional share of everything it maps).
inline void PutRss(Results& r, pid_t pid, const std::string& key) {
  r[key + ".rss_kb"] = ProcKb(pid, "VmRSS");
  r[key + ".rss_anon_kb"] = ProcKb(pid, "RssAnon");
  r[key + ".rss_file_kb"] = ProcKb(pid, "RssFile");
  r[key + ".rss_shmem_kb"] = ProcKb(pid, "RssShmem");
  r[key + ".pss_kb"] = ProcKb(pid, "Pss", "smaps_rollup");
}

// The `top` mappings (file basename, or "[anon]") with the most resident kB.
inline void PutTopMappings(Results& r, pid_t pid, const std::string& key, size_t top) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/smaps"));
  std::map<std::string, double> by_name;
  std::string name;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    double kb = 0;
    if (f.size() >= 2 && f[0] == "Rss:" && absl::SimpleAtod(f[1], &kb)) {
      by_name[name] += kb;
    } else if (!f.empty() && f[0].back() != ':' && absl::StrContains(f[0], "-")) {
      name = f.size() >= 6 ? std::filesystem::path(f[5]).filename().string() : "[anon]";
    }
  }
  std::vector<std::pair<double, std::string>> sorted;
  for (const auto& [n, kb] : by_name) sorted.emplace_back(kb, n);
  std::sort(sorted.rbegin(), sorted.rend());
  for (size_t i = 0; i < std::min(top, sorted.size()); ++i) {
    r[absl::StrCat(key, ".map.", sorted[i].second, "_kb")] = sorted[i].first;
  }
}

// CPU seconds (user + system) of a process.
inline double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> f = absl::StrSplit(text.substr(paren + 2), ' ');
  double utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtod(f[11], &utime) || !absl::SimpleAtod(f[12], &stime))
    return 0;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The memfds a process holds: count and total size.
inline std::pair<int, double> Memfds(pid_t pid) {
  int count = 0;
  double bytes = 0;
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    struct stat st;
    if (ec || target.rfind("/memfd:", 0) != 0 || stat(e.path().c_str(), &st) != 0) continue;
    ++count;
    bytes += static_cast<double>(st.st_size);
  }
  return {count, bytes};
}

// ---------------------------------------------------------------------------
// Child processes: a body runs in a fork and reports "key value" lines, marks
// ("@name") and an error ("!message") through a pipe; the parent answers
// marks through a second pipe (one byte = go).

struct ChildIo {
  void Put(const std::string& key, double v) { Send(absl::StrCat(key, " ", v, "\n")); }
  void Mark(const std::string& name) { Send(absl::StrCat("@", name, "\n")); }
  bool WaitGo() { return read(go, buf, 1) == 1; }
  void Send(const std::string& s) { (void)!write(out, s.data(), s.size()); }
  int out, go;
  char buf[1];
};

class Child {
 public:
  using Body = std::function<absl::Status(ChildIo&)>;

  static absl::StatusOr<std::unique_ptr<Child>> Spawn(const Body& body) {
    int out[2], go[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(go, O_CLOEXEC) != 0) return absl::InternalError("pipe");
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(out[0]);
      close(go[1]);
      ChildIo io{out[1], go[0], {}};
      const absl::Status s = body(io);
      if (!s.ok()) io.Send(absl::StrCat("!", s.ToString(), "\n"));
      _exit(s.ok() ? 0 : 1);
    }
    close(out[1]);
    close(go[0]);
    auto c = std::unique_ptr<Child>(new Child());
    c->pid_ = pid;
    c->out_.Reset(out[0]);
    c->go_.Reset(go[1]);
    return c;
  }

  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }
  void Go() { (void)!write(go_.get(), "g", 1); }
  void Signal(int sig) { kill(pid_, sig); }

  // Reads lines until the mark `name` (or EOF with name empty).
  absl::Status Await(const std::string& name, double timeout_s = 120) {
    const int64_t deadline = NowNs() + static_cast<int64_t>(timeout_s * 1e9);
    while (true) {
      size_t nl;
      while ((nl = buf_.find('\n')) != std::string::npos) {
        const std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (line.empty()) continue;
        if (line[0] == '@' && line.substr(1) == name) return absl::OkStatus();
        if (line[0] == '!') error_ = line.substr(1);
        std::vector<std::string> kv = absl::StrSplit(line, ' ');
        double v;
        if (kv.size() == 2 && absl::SimpleAtod(kv[1], &v)) results_[kv[0]] = v;
      }
      pollfd p{out_.get(), POLLIN, 0};
      const int64_t left_ms = (deadline - NowNs()) / 1'000'000;
      if (left_ms <= 0 || poll(&p, 1, static_cast<int>(left_ms)) <= 0) {
        return absl::DeadlineExceededError(
            absl::StrCat("child ", pid_, " timed out waiting for '", name, "' ", error_));
      }
      char chunk[4096];
      const ssize_t n = read(out_.get(), chunk, sizeof chunk);
      if (n <= 0) break;
      buf_.append(chunk, static_cast<size_t>(n));
    }
    if (!error_.empty()) return absl::InternalError(error_);
    if (!name.empty()) return absl::InternalError(absl::StrCat("child exited before '", name, "'"));
    return absl::OkStatus();
  }

  absl::StatusOr<Results> Finish(double timeout_s = 120) {
    absl::Status s = Await("", timeout_s);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    if (!s.ok()) return s;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrCat("child failed (status ", status, ")"));
    }
    return results_;
  }

 private:
  Child() = default;
  pid_t pid_ = 0;
  UniqueFd out_, go_;
  std::string buf_, error_;
  Results results_;
};

inline absl::StatusOr<Results> RunChild(const Child::Body& body) {
  auto c = Child::Spawn(body);
  if (!c.ok()) return c.status();
  return (*c)->Finish();
}

// ---------------------------------------------------------------------------
// The daemon.

class Daemon {
 public:
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const std::string& shmlaned,
                                                       const std::string& base, bool metrics) {
    static int serial = 0;
    auto d = std::unique_ptr<Daemon>(new Daemon());
    d->dir_ = absl::StrCat(base, "/rt", serial++);
    const std::string log = d->dir_ + ".log";
    if (mkdir(d->dir_.c_str(), 0755) != 0 || chmod(d->dir_.c_str(), 0755) != 0) {
      return absl::InternalError(absl::StrCat("mkdir ", d->dir_, ": ", strerror(errno)));
    }
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe2");
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(out[1], STDOUT_FILENO);
      if (fd >= 0) dup2(fd, STDERR_FILENO);
      execl(shmlaned.c_str(), shmlaned.c_str(), "--runtime-dir", d->dir_.c_str(),
            "--metrics-listen", metrics ? "127.0.0.1:0" : "none", static_cast<char*>(nullptr));
      std::fprintf(stderr, "exec %s: %s\n", shmlaned.c_str(), strerror(errno));
      _exit(127);
    }
    close(out[1]);
    d->out_.Reset(out[0]);
    if (pid < 0) return absl::InternalError("fork");
    d->pid_ = pid;
    // The banner ends with the "state:" line; "metrics:" has the bound port.
    std::string banner;
    const int64_t deadline = NowNs() + 15'000'000'000;
    while (true) {
      const size_t state = banner.find("state:");
      if (state != std::string::npos && banner.find('\n', state) != std::string::npos) break;
      pollfd p{d->out_.get(), POLLIN, 0};
      char buf[512];
      ssize_t n = 0;
      if (poll(&p, 1, static_cast<int>((deadline - NowNs()) / 1'000'000)) <= 0 ||
          (n = read(d->out_.get(), buf, sizeof buf)) <= 0) {
        std::ifstream in(log);
        std::stringstream ss;
        ss << in.rdbuf();
        return absl::UnavailableError(
            absl::StrCat(shmlaned, " did not start (try --shmlaned PATH): ", ss.str()));
      }
      banner.append(buf, static_cast<size_t>(n));
    }
    if (metrics) {
      const size_t at = banner.find("http://");
      const size_t end = banner.find("/metrics", at);
      const size_t colon = banner.rfind(':', end);
      if (at == std::string::npos || end == std::string::npos ||
          !absl::SimpleAtoi(banner.substr(colon + 1, end - colon - 1), &d->metrics_port_)) {
        return absl::InternalError(absl::StrCat("no metrics URL in: ", banner));
      }
    }
    return d;
  }

  ~Daemon() { Stop(); }

  // SIGTERM (SIGKILL after 5 s); returns the CPU seconds of its whole life
  // (wait4's rusage: microseconds, unlike /proc's clock ticks).
  double Stop() {
    if (pid_ <= 0) return 0;
    kill(pid_, SIGTERM);
    rusage ru{};
    pid_t r = 0;
    for (int i = 0; i < 500 && (r = wait4(pid_, nullptr, WNOHANG, &ru)) == 0; ++i) usleep(10'000);
    if (r == 0) {
      kill(pid_, SIGKILL);
      wait4(pid_, nullptr, 0, &ru);
    }
    pid_ = 0;
    auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return sec(ru.ru_utime) + sec(ru.ru_stime);
  }

  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  int metrics_port() const { return metrics_port_; }

 private:
  Daemon() = default;
  pid_t pid_ = 0;
  std::string dir_;
  int metrics_port_ = 0;
  UniqueFd out_;  // kept open: the daemon never writes to a closed pipe
};

// One plain-socket HTTP/1.0 GET /metrics; returns bytes read (-1 on error).
inline double Scrape(int port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd.get(), req.data(), req.size()) != static_cast<ssize_t>(req.size())) return -1;
  double total = 0;
  char buf[16384];
  for (ssize_t n; (n = read(fd.get(), buf, sizeof buf)) > 0;) total += static_cast<double>(n);
  return total;
}

// ---------------------------------------------------------------------------
// Control calls (only ever inside a forked helper).

struct Control {
  explicit Control(const std::string& dir) {
    channel = grpc::CreateChannel(absl::StrCat("unix:", dir, "/control.sock"),
                                  grpc::InsecureChannelCredentials());
    channels = v1::ChannelService::NewStub(channel);
    access = v1::AccessService::NewStub(channel);
  }
  // Connects, and lifts the daemon uid's quotas above what the bench needs.
  absl::Status Prepare() {
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError("cannot connect to control.sock");
    }
    grpc::ClientContext ctx;
    v1::SetQuotaRequest req;
    req.set_uid(getuid());
    req.mutable_limits()->set_max_channels(100000);
    req.mutable_limits()->set_max_attachments(100000);
    req.mutable_limits()->set_max_shm_bytes(uint64_t{64} << 30);
    v1::Quota q;
    return Check(access->SetQuota(&ctx, req, &q), "SetQuota");
  }
  absl::Status Create(const std::string& name, uint32_t max_producers, v1::Channel* out) {
    grpc::ClientContext ctx;
    v1::CreateChannelRequest req;
    req.mutable_spec()->set_name(name);
    req.mutable_spec()->set_pattern(v1::CHANNEL_PATTERN_STREAM);
    req.mutable_spec()->set_max_producers(max_producers);
    return Check(channels->CreateChannel(&ctx, req, out), "CreateChannel " + name);
  }
  static absl::Status Check(const grpc::Status& s, const std::string& what) {
    if (s.ok()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(what, ": ", s.error_message()));
  }
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ChannelService::Stub> channels;
  std::unique_ptr<v1::AccessService::Stub> access;
};

// Creates STREAM channels `names` (max_producers each); puts ring_bytes.
inline absl::StatusOr<Results> CreateChannels(const std::string& dir,
                                              const std::vector<std::string>& names,
                                              uint32_t max_producers) {
  auto r = RunChild([&](ChildIo& io) {
    Control c(dir);
    if (absl::Status s = c.Prepare(); !s.ok()) return s;
    for (const std::string& n : names) {
      v1::Channel ch;
      if (absl::Status s = c.Create(n, max_producers, &ch); !s.ok()) return s;
      io.Put("ring_bytes", static_cast<double>(ch.spec().ring_bytes()));
    }
    return absl::OkStatus();
  });
  return r;
}

inline client::AttachOptions ClientOptions(const std::string& dir, const std::string& name) {
  client::AttachOptions o;
  o.runtime_dir = dir;
  o.client_name = name;
  o.attach_timeout = absl::Seconds(30);
  return o;
}

volatile sig_atomic_t g_stop = 0;

// A consumer process: marks "ready", counts frames, marks "received" once
// `expect` frames arrived, and ends when `producers` have detached (or on
// SIGTERM). Puts frames and the first-to-last-frame span.
inline absl::StatusOr<std::unique_ptr<Child>> SpawnConsumer(const std::string& dir,
                                                            const std::string& channel,
                                                            int producers, uint64_t expect) {
  return Child::Spawn([=](ChildIo& io) {
    signal(SIGTERM, [](int) { g_stop = 1; });
    int detached = 0;
    client::Consumer::Options o;
    static_cast<client::AttachOptions&>(o) = ClientOptions(dir, "cbench-consumer");
    o.on_peer_event = [&](const client::PeerEvent& e) {
      if (e.kind == client::PeerEvent::Kind::kDetached && e.peer.lane_id != 0) ++detached;
    };
    auto c = client::Consumer::Attach(channel, o);
    if (!c.ok()) return c.status();
    io.Mark("ready");
    uint64_t frames = 0;
    int64_t first = 0, last = 0;
    bool marked = false;
    while (!g_stop && (producers == 0 || detached < producers)) {
      auto n = c->Wait([](const client::Peer&, std::span<const std::byte>) {},
                       absl::Now() + absl::Milliseconds(20));
      if (!n.ok() && !absl::IsCancelled(n.status())) return n.status();
      if (!n.ok() || *n == 0) continue;
      last = NowNs();
      if (frames == 0) first = last;
      frames += *n;
      if (!marked && expect != 0 && frames >= expect) {
        io.Mark("received");
        marked = true;
      }
    }
    io.Put("frames", static_cast<double>(frames));
    io.Put("span_s", static_cast<double>(last - first) / 1e9);
    c->Close();
    return absl::OkStatus();
  });
}

// Writes `frames` 64-byte frames into `p` in batches of 64 (or until
// `until_ns`); a full ring blocks on one frame. Returns frames written.
inline absl::StatusOr<uint64_t> Stream(client::Producer& p, uint64_t frames, int64_t until_ns) {
  static const std::array<std::byte, 64> payload{};
  std::array<std::span<const std::byte>, 64> batch;
  batch.fill(std::span<const std::byte>(payload));
  uint64_t sent = 0;
  while (sent < frames && (until_ns == 0 || NowNs() < until_ns)) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(batch.size(), frames - sent));
    client::WriteResult r = client::WriteResult::kOk;
    const size_t n = p.TryWriteBatch(std::span(batch.data(), want), &r);
    sent += n;
    if (n == want) continue;
    if (r != client::WriteResult::kFull) return client::ToStatus(r, "TryWriteBatch");
    if (client::WriteResult w = p.Write(batch[0]); w != client::WriteResult::kOk) {
      return client::ToStatus(w, "Write");
    }
    ++sent;
  }
  return sent;
}

}  // namespace shmlane::bench::cbench
