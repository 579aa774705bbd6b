#include "bench/loadgen/harness.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <new>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/loadgen/frame.h"
#include "bench/loadgen/harness_internal.h"
#include "bench/loadgen/transport.h"

namespace shmlane::bench {
namespace {

using internal::ChildInit;
using internal::Fail;
using internal::Publish;
using internal::SharedControl;
using internal::WorkerSlot;

constexpr int kConnectWave = 32;

template <typename T>
T* MapShared(size_t count) {
  void* p =
      mmap(nullptr, sizeof(T) * count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  T* t = static_cast<T*>(p);
  for (size_t i = 0; i < count; ++i) new (t + i) T();
  return t;
}

// Openloop: a client's send schedule. Client i sends at
// start + phase_i + k * interval, so that the clients' sends interleave.
struct Schedule {
  int64_t interval_ns;
  int64_t phase_ns;
};

[[noreturn]] void ServerMain(Transport& transport, const RunSpec& spec, SharedControl* ctl,
                             Histogram* hist) {
  ChildInit(0, spec.pin);
  WorkerSlot* slot = &ctl->server;
  auto server = transport.StartServer();
  if (!server.ok()) {
    Fail(slot, server.status());
    Publish(slot);
    ctl->server_ready.store(2, std::memory_order_release);
    FutexWakeAll(&ctl->server_ready);
    _exit(1);
  }
  ctl->server_ready.store(1, std::memory_order_release);
  FutexWakeAll(&ctl->server_ready);
  // Clients attach meanwhile; a server that must answer them (shm: the daemon
  // hands it one lane per client) keeps doing so until the barrier opens.
  while (ctl->go.load(std::memory_order_acquire) == 0) {
    if (!(*server)->ServiceControl(NowNs() + 10'000'000)) FutexWait(&ctl->go, 0, INT64_MAX);
  }
  if (ctl->go.load(std::memory_order_acquire) != 1) _exit(0);
  const RunClock clock = ctl->clock;

  const bool openloop = spec.pattern == Pattern::kOpenLoop;
  auto intended = std::make_unique<Histogram>();
  auto actual = std::make_unique<Histogram>();
  ServerSink sink(spec, clock, openloop ? intended.get() : nullptr,
                  openloop ? actual.get() : nullptr);
  // Clients stop at end_ns; they get generous time to drain and close.
  const int64_t deadline = clock.end_ns + 10'000'000'000 + int64_t{spec.clients} * 20'000'000;
  absl::Status status = (*server)->Serve(sink, deadline);
  if (status.ok() && sink.bad_frames() > 0) {
    status = absl::DataLossError(
        absl::StrCat(sink.bad_frames(), " of ", sink.total_frames(),
                     " frames failed the payload checksum; the first: ", sink.first_bad_frame()));
  }
  if (!status.ok()) Fail(slot, status);
  if (status.ok() && !sink.window_closed()) {
    // Every client left before the end: the window still lasts until then.
    WaitUntil(clock.end_ns, WaitMode::kPark, 0);
    sink.Tick(NowNs());
  }
  slot->window_frames = sink.window_frames();
  slot->window_bytes = sink.window_bytes();
  slot->window_ns = sink.window_closed() ? sink.window_ns() : 0;
  slot->total_frames = sink.total_frames();
  slot->usage = CpuUsage{sink.cpu_user_ns(), sink.cpu_sys_ns(), sink.voluntary_switches(),
                         sink.involuntary_switches()};
  hist[0] = *intended;
  hist[1] = *actual;
  Publish(slot);
  std::fflush(nullptr);
  _exit(status.ok() ? 0 : 1);
}

// The client's measured part; returns the first transport error.
absl::Status ClientLoop(ClientEndpoint& conn, const RunSpec& spec, const RunClock& clock, int index,
                        WorkerSlot* slot, Histogram* rtt) {
  std::vector<std::byte> frame(spec.frame_bytes, std::byte{0x5a});
  std::vector<std::byte> reply(spec.frame_bytes);
  // Touch::kRead: a per-client pattern, and per frame stamps, sequence
  // number and checksum (frame.h); otherwise a constant fill and stamps.
  std::optional<FrameSealer> sealer;
  if (spec.touch == Touch::kRead) sealer.emplace(frame, static_cast<uint64_t>(index) + 1);
  uint64_t sequence = 0;
  auto seal = [&](const FrameStamps& stamps) {
    if (sealer) {
      sealer->Seal(stamps, sequence++);
    } else {
      WriteStamps(frame, stamps);
    }
  };
  const int64_t spin_ns = absl::ToInt64Nanoseconds(spec.spin);
  CpuUsage at_open;
  int64_t opened_at = 0;
  uint64_t frames = 0, at_open_frames = 0;
  auto open_window = [&](int64_t now) {
    opened_at = now;
    at_open = SelfUsage();
    at_open_frames = frames;
  };
  auto close_window = [&](int64_t now) {
    if (opened_at == 0) return;
    slot->usage = Diff(SelfUsage(), at_open);
    slot->window_ns = now - opened_at;
    slot->window_frames = frames - at_open_frames;
    slot->window_bytes = slot->window_frames * spec.frame_bytes;
  };

  WaitUntil(clock.start_ns, WaitMode::kPark, 0);
  switch (spec.pattern) {
    case Pattern::kStream: {
      const FrameStamps stamps{clock.start_ns, clock.start_ns};
      seal(stamps);
      while (true) {
        // Reading the clock every 16 frames keeps it off the profile.
        if ((frames & 15) == 0) {
          const int64_t now = NowNs();
          if (opened_at == 0 && now >= clock.measure_ns) open_window(now);
          if (now >= clock.end_ns) {
            close_window(now);
            break;
          }
        }
        if (sealer) seal(stamps);
        // A streaming sender always has more to send: batches fill up.
        if (absl::Status s = conn.Send(frame, /*more=*/true); !s.ok()) return s;
        ++frames;
      }
      break;
    }
    case Pattern::kPingPong: {
      // One frame per call: a round trip cannot be batched.
      while (true) {
        const int64_t t0 = NowNs();
        if (opened_at == 0 && t0 >= clock.measure_ns) open_window(t0);
        if (t0 >= clock.end_ns) {
          close_window(t0);
          break;
        }
        seal({t0, t0});
        size_t n = 0;
        if (absl::Status s = conn.Call(frame, reply, &n); !s.ok()) return s;
        if (n != frame.size()) return absl::DataLossError("echo has the wrong size");
        if (sealer && !VerifyFrame(std::span<const std::byte>(reply.data(), n))) {
          return absl::DataLossError("echo does not match its checksum");
        }
        const int64_t t1 = NowNs();
        if (opened_at != 0) rtt->Record(static_cast<uint64_t>(t1 - t0));
        ++frames;
      }
      break;
    }
    case Pattern::kOpenLoop: {
      const double per_client = spec.rate / spec.clients;
      const Schedule schedule{std::max<int64_t>(1, static_cast<int64_t>(1e9 / per_client)),
                              static_cast<int64_t>(1e9 / per_client * index / spec.clients)};
      for (int64_t k = 0;; ++k) {
        const int64_t intended = clock.start_ns + schedule.phase_ns + k * schedule.interval_ns;
        if (opened_at == 0 && intended >= clock.measure_ns) open_window(NowNs());
        if (intended >= clock.end_ns) {
          // The last send may come up to one interval before the end; stay
          // attached until the window closes.
          WaitUntil(clock.end_ns, WaitMode::kPark, 0);
          close_window(NowNs());
          break;
        }
        int64_t now = NowNs();
        if (now < intended) {
          // kSleep: clock_nanosleep to the send time, whatever the transport
          // (equal client cost); kWait: as the run's wait mode says.
          WaitUntil(intended,
                    spec.client_timing == ClientTiming::kSleep ? WaitMode::kPark : spec.wait,
                    spin_ns);
          now = NowNs();
        }
        if (now >= clock.end_ns) {
          // Behind schedule at the end: count what was never sent.
          for (int64_t j = k;; ++j) {
            const int64_t t = clock.start_ns + schedule.phase_ns + j * schedule.interval_ns;
            if (t >= clock.end_ns) break;
            if (t >= clock.measure_ns) ++slot->unsent;
          }
          close_window(now);
          break;
        }
        seal({intended, now});
        // More to send only when the next frame is already due (behind
        // schedule): a sender on schedule flushes every frame.
        const bool more = intended + schedule.interval_ns <= now;
        if (absl::Status s = conn.Send(frame, more); !s.ok()) return s;
        ++frames;
      }
      break;
    }
    case Pattern::kFanout:
      return absl::InternalError("fanout clients are subscribers (harness_fanout.cc)");
  }
  slot->total_frames = frames;
  return absl::OkStatus();
}

[[noreturn]] void ClientMain(Transport& transport, const RunSpec& spec, SharedControl* ctl,
                             int index, Histogram* rtt_slot) {
  ChildInit(1 + index, spec.pin);
  WorkerSlot* slot = &ctl->clients[index];
  auto conn = transport.Connect(index);
  if (!conn.ok()) {
    Fail(slot, conn.status());
    Publish(slot);
  }
  ctl->clients_ready.fetch_add(1, std::memory_order_acq_rel);
  FutexWakeAll(&ctl->clients_ready);
  if (!conn.ok()) _exit(1);
  FutexWait(&ctl->go, 0, INT64_MAX);
  if (ctl->go.load(std::memory_order_acquire) != 1) _exit(0);
  const RunClock clock = ctl->clock;

  auto rtt = std::make_unique<Histogram>();
  absl::Status status = ClientLoop(**conn, spec, clock, index, slot, rtt.get());
  if (absl::Status s = (*conn)->Close(); status.ok() && !s.ok()) status = s;
  slot->flushes = (*conn)->flushes();
  if (!status.ok()) Fail(slot, status);
  *rtt_slot = *rtt;
  Publish(slot);
  std::fflush(nullptr);
  _exit(status.ok() ? 0 : 1);
}

// Reaps `pids` until none is left or `deadline_ns` passes, then kills the
// rest. SIGCHLD is blocked in the parent, so sigtimedwait sleeps until one
// exits. Other children (a daemon) are left alone. Returns how many failed.
// When `abort_on` fails, the others get at most two more seconds. With
// `peak_rss_kb`, records each reaped child's peak RSS (wait4's ru_maxrss).
int ReapAll(std::vector<pid_t>* pids, int64_t deadline_ns, pid_t abort_on = 0,
            std::map<pid_t, int64_t>* peak_rss_kb = nullptr) {
  int failures = 0;
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  while (!pids->empty()) {
    bool reaped = false;
    for (size_t i = 0; i < pids->size();) {
      int status = 0;
      rusage usage{};
      const pid_t pid = wait4((*pids)[i], &status, WNOHANG, &usage);
      if (pid == 0) {
        ++i;
        continue;
      }
      if (pid > 0 && peak_rss_kb != nullptr) (*peak_rss_kb)[pid] = usage.ru_maxrss;
      if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ++failures;
        // Without its server a run cannot finish: give the rest a moment.
        if ((*pids)[i] == abort_on) deadline_ns = std::min(deadline_ns, NowNs() + 2'000'000'000);
      }
      (*pids)[i] = pids->back();
      pids->pop_back();
      reaped = true;
    }
    if (reaped || pids->empty()) continue;
    const int64_t left = deadline_ns - NowNs();
    if (left <= 0) break;
    timespec ts{left / 1000000000, left % 1000000000};
    sigtimedwait(&chld, nullptr, &ts);
  }
  for (pid_t pid : *pids) kill(pid, SIGKILL);
  for (pid_t pid : *pids) waitpid(pid, nullptr, 0);
  failures += static_cast<int>(pids->size());
  pids->clear();
  return failures;
}

// Waits until *word != expected, or a child died, or the deadline passed.
bool AwaitWord(const std::atomic<uint32_t>* word, uint32_t expected_or_below, bool count,
               int64_t deadline_ns) {
  while (true) {
    const uint32_t v = word->load(std::memory_order_acquire);
    if (count ? v >= expected_or_below : v != 0) return true;
    if (NowNs() >= deadline_ns) return false;
    // Wake every 100 ms to notice a child that died before reporting
    // (WNOWAIT: it stays a zombie for ReapAll to account).
    siginfo_t info{};
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0) {
      return false;
    }
    FutexWait(word, v, std::min(deadline_ns, NowNs() + 100'000'000));
  }
}

class RunGuard {
 public:
  RunGuard(Transport* t, std::string workdir) : transport_(t), workdir_(std::move(workdir)) {}
  ~RunGuard() {
    if (transport_ != nullptr) transport_->Cleanup();
    std::error_code ec;
    std::filesystem::remove_all(workdir_, ec);
  }

 private:
  Transport* transport_;
  std::string workdir_;
};

}  // namespace

namespace internal {

void Fail(WorkerSlot* slot, const absl::Status& status) {
  slot->failed = 1;
  std::snprintf(slot->error, sizeof(slot->error), "%s", status.ToString().c_str());
}

void ChildInit(int cpu, bool pin) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  if (pin) (void)PinToCpu(cpu);
  // A sleeping openloop client must wake at its send time, not up to the
  // default 50 us timer slack later (which would add the same delay to
  // every transport's latency from the intended send time).
  prctl(PR_SET_TIMERSLACK, 1UL);
}

}  // namespace internal

absl::Status ValidateSpec(const RunSpec& spec) {
  if (spec.clients < 1 || spec.clients > kMaxClients) {
    return absl::InvalidArgumentError(
        absl::StrCat("--clients must be in [1, ", kMaxClients, "], got ", spec.clients));
  }
  if (spec.frame_bytes < 1 || spec.frame_bytes > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--frame-bytes must be in [1, ", kMaxFrameBytes, "]"));
  }
  if (spec.pattern == Pattern::kOpenLoop && spec.frame_bytes < kFrameStampBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "openloop frames carry two timestamps: --frame-bytes must be >= ", kFrameStampBytes));
  }
  if (spec.pattern == Pattern::kFanout && spec.frame_bytes < kFrameStampBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fanout frames carry their send time: --frame-bytes must be >= ", kFrameStampBytes));
  }
  if (spec.touch == Touch::kRead && spec.frame_bytes < kFrameMinTouchBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--touch read puts stamps and a checksum in every frame: --frame-bytes must "
                     "be >= ",
                     kFrameMinTouchBytes, " (or use --touch none)"));
  }
  if (spec.batch < 1 || spec.batch > kMaxBatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch must be in [1, ", kMaxBatch, "], got ", spec.batch));
  }
  if (spec.batch_bytes < 1) return absl::InvalidArgumentError("--batch-bytes must be >= 1");
  if (spec.pattern == Pattern::kOpenLoop && !(spec.rate > 0 && spec.rate <= 1e9)) {
    return absl::InvalidArgumentError("--rate must be in (0, 1e9] frames/s for openloop");
  }
  if (spec.duration <= absl::ZeroDuration() || spec.warmup < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration must be > 0 and --warmup >= 0");
  }
  if (spec.wait == WaitMode::kBalanced && spec.transport != TransportKind::kShm) {
    return absl::InvalidArgumentError(
        "--wait balanced is the shm library's default strategy; the other transports have spin, "
        "park and adaptive");
  }
  if (spec.cpu_limit < 0 || spec.cpu_limit > 4096) {
    return absl::InvalidArgumentError("--cpu-limit must be a number of CPUs in (0, 4096]");
  }
  return absl::OkStatus();
}

absl::StatusOr<RunResult> RunOne(const RunSpec& spec) {
  if (absl::Status s = ValidateSpec(spec); !s.ok()) return s;
  auto transport = MakeTransport(spec.transport);
  if (!transport.ok()) return transport.status();
  RaiseFdLimit();
  signal(SIGPIPE, SIG_IGN);

  // Before anything is forked (the daemon included), so that every process
  // of the run shares the quota; destroyed after the guard has stopped them.
  std::unique_ptr<CpuLimit> cpu_limit;
  if (spec.cpu_limit > 0) {
    absl::StatusOr<std::unique_ptr<CpuLimit>> made = CpuLimit::Create(spec.cpu_limit);
    if (!made.ok()) return made.status();
    cpu_limit = std::move(*made);
  }
  char dir_template[] = "/tmp/shmlane-bench-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  RunGuard guard(transport->get(), dir_template);
  const int64_t setup_started = NowNs();

  SharedControl* ctl = MapShared<SharedControl>(1);
  // Histogram slots: one per client (round trips), then the server's two.
  Histogram* hists = MapShared<Histogram>(static_cast<size_t>(spec.clients) + 2);
  if (ctl == nullptr || hists == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("mmap: ", strerror(errno)));
  }
  struct Unmap {
    SharedControl* c;
    Histogram* h;
    size_t n;
    ~Unmap() {
      munmap(c, sizeof(SharedControl));
      munmap(h, sizeof(Histogram) * n);
    }
  } unmap{ctl, hists, static_cast<size_t>(spec.clients) + 2};
  // After the harness's own mapping, so that only the transport's shows.
  const int64_t shmem_before = SystemShmemKb();
  if (absl::Status s = (*transport)->Prepare(spec, dir_template); !s.ok()) return s;

  sigset_t chld, old_mask;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old_mask);
  struct RestoreMask {
    sigset_t mask;
    ~RestoreMask() { sigprocmask(SIG_SETMASK, &mask, nullptr); }
  } restore{old_mask};

  std::vector<pid_t> children;
  auto abort_run = [&](absl::Status why) {
    ctl->go.store(2, std::memory_order_release);
    FutexWakeAll(&ctl->go);
    ReapAll(&children, NowNs() + 5'000'000'000);
    return why;
  };

  std::fflush(nullptr);
  const pid_t server_pid = fork();
  if (server_pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  const bool fanout = spec.pattern == Pattern::kFanout;
  if (server_pid == 0) {
    if (fanout) internal::PublisherMain(**transport, spec, ctl);
    ServerMain(**transport, spec, ctl, hists + spec.clients);
  }
  children.push_back(server_pid);
  if (!AwaitWord(&ctl->server_ready, 0, false, NowNs() + 30'000'000'000) ||
      ctl->server_ready.load() != 1) {
    return abort_run(absl::UnavailableError(absl::StrCat(
        "server did not start: ", ctl->server.failed ? ctl->server.error : "no report")));
  }
  std::vector<pid_t> client_pids;
  for (int i = 0; i < spec.clients; ++i) {
    const pid_t pid = fork();
    if (pid < 0) return abort_run(absl::InternalError(absl::StrCat("fork: ", strerror(errno))));
    if (pid == 0) {
      if (fanout) internal::SubscriberMain(**transport, spec, ctl, i, hists + i);
      ClientMain(**transport, spec, ctl, i, hists + i);
    }
    children.push_back(pid);
    client_pids.push_back(pid);
    // Clients connect in waves of kConnectWave: a burst of hundreds of
    // simultaneous attaches overflows the daemon's attach socket towards the
    // server (shmlaned then drops the server), and accept queues elsewhere.
    const int forked = i + 1;
    if (forked % kConnectWave == 0 && forked < spec.clients &&
        !AwaitWord(&ctl->clients_ready, static_cast<uint32_t>(forked), true,
                   NowNs() + 60'000'000'000)) {
      return abort_run(absl::UnavailableError("clients did not connect in time (or one died)"));
    }
  }
  (*transport)->AfterFork();
  const int64_t ready_deadline = NowNs() + 60'000'000'000 + int64_t{spec.clients} * 100'000'000;
  if (!AwaitWord(&ctl->clients_ready, static_cast<uint32_t>(spec.clients), true, ready_deadline)) {
    return abort_run(absl::UnavailableError("clients did not connect in time (or one died)"));
  }
  for (int i = 0; i < spec.clients; ++i) {
    if (ctl->clients[i].failed) {
      return abort_run(absl::UnavailableError(
          absl::StrCat("client ", i, " could not connect: ", ctl->clients[i].error)));
    }
  }

  RunResult result;
  result.spec = spec;
  result.setup_s = (NowNs() - setup_started) / 1e9;
  RunClock clock;
  clock.start_ns = NowNs() + 50'000'000;
  clock.measure_ns = clock.start_ns + absl::ToInt64Nanoseconds(spec.warmup);
  clock.end_ns = clock.measure_ns + absl::ToInt64Nanoseconds(spec.duration);
  ctl->clock = clock;
  ctl->go.store(1, std::memory_order_release);
  FutexWakeAll(&ctl->go);

  const pid_t daemon = (*transport)->daemon_pid();
  WaitUntil(clock.measure_ns, WaitMode::kPark, 0);
  const CpuUsage daemon_open = daemon > 0 ? ProcessUsage(daemon) : CpuUsage{};
  absl::StatusOr<ThrottleStats> throttle_open =
      cpu_limit ? cpu_limit->Stats() : absl::StatusOr<ThrottleStats>(ThrottleStats{});
  // Sample memory a little before the end, while every process still runs.
  WaitUntil(
      clock.end_ns - std::min<int64_t>(absl::ToInt64Nanoseconds(spec.duration) / 10, 100'000'000),
      WaitMode::kPark, 0);
  Resources& res = result.resources;
  res.server_rss_kb = ProcessRssKb(server_pid);
  res.client_rss_kb = ProcessRssKb(client_pids[0]);
  res.shmem_delta_kb = SystemShmemKb() - shmem_before;
  if (daemon > 0) {
    res.daemon_rss_kb = ProcessRssKb(daemon);
    res.daemon_memfd_bytes = ProcessMemfdBytes(daemon);
  }
  WaitUntil(clock.end_ns, WaitMode::kPark, 0);
  if (daemon > 0) res.daemon = Diff(ProcessUsage(daemon), daemon_open);
  if (cpu_limit) {
    absl::StatusOr<ThrottleStats> throttle_close = cpu_limit->Stats();
    if (!throttle_open.ok() || !throttle_close.ok()) {
      return abort_run(!throttle_open.ok() ? throttle_open.status() : throttle_close.status());
    }
    res.cpu_limited = true;
    res.cgroup_version = cpu_limit->version();
    res.throttle = *throttle_close - *throttle_open;
  }

  const int64_t reap_deadline = clock.end_ns + 40'000'000'000 + int64_t{spec.clients} * 50'000'000;
  std::map<pid_t, int64_t> peak_rss_kb;
  const int failed_children = ReapAll(&children, reap_deadline, server_pid, &peak_rss_kb);
  // A process that ended before the sample above (a late wake-up of this
  // parent on a loaded machine) reports its peak RSS instead.
  if (res.server_rss_kb == 0) res.server_rss_kb = peak_rss_kb[server_pid];
  if (res.client_rss_kb == 0) res.client_rss_kb = peak_rss_kb[client_pids[0]];

  // The first few errors verbatim, then a count: 512 clients usually fail
  // for one reason.
  std::string errors;
  int error_count = 0;
  auto collect_error = [&](const std::string& who, const WorkerSlot& slot) {
    const bool reported = slot.done.load(std::memory_order_acquire) != 0;
    if (reported && !slot.failed) return;
    if (++error_count > 3) return;
    absl::StrAppend(&errors, who, reported ? absl::StrCat(": ", slot.error) : " did not report",
                    "; ");
  };
  collect_error("server", ctl->server);
  for (int i = 0; i < spec.clients; ++i) collect_error(absl::StrCat("client ", i), ctl->clients[i]);
  if (error_count > 0 || failed_children > 0) {
    if (error_count > 3) absl::StrAppend(&errors, "and ", error_count - 3, " more; ");
    std::string diagnostics = (*transport)->Diagnostics();
    return absl::UnavailableError(absl::StrCat(Label(spec), ": ", errors, failed_children,
                                               " process(es) failed",
                                               diagnostics.empty() ? "" : "; ", diagnostics));
  }

  if (fanout) {
    // Every subscriber got every frame the publisher sent.
    result.total_sent = ctl->server.total_frames;
    result.client_flushes = ctl->server.flushes;
    for (int i = 0; i < spec.clients; ++i) {
      result.total_received += ctl->clients[i].total_frames;
      if (ctl->clients[i].total_frames != ctl->server.total_frames) {
        return absl::DataLossError(absl::StrCat(Label(spec), ": the publisher sent ",
                                                ctl->server.total_frames, " frames but subscriber ",
                                                i, " received ", ctl->clients[i].total_frames));
      }
    }
  } else if (spec.pattern != Pattern::kPingPong) {
    for (int i = 0; i < spec.clients; ++i) {
      result.total_sent += ctl->clients[i].total_frames;
      result.client_flushes += ctl->clients[i].flushes;
    }
    result.total_received = ctl->server.total_frames;
    if (result.total_sent != result.total_received) {
      return absl::DataLossError(absl::StrCat(Label(spec), ": clients sent ", result.total_sent,
                                              " frames but the server received ",
                                              result.total_received));
    }
  }

  res.server = ctl->server.usage;
  for (int i = 0; i < spec.clients; ++i) {
    const CpuUsage& u = ctl->clients[i].usage;
    res.clients.user_ns += u.user_ns;
    res.clients.sys_ns += u.sys_ns;
    res.clients.voluntary_switches += u.voluntary_switches;
    res.clients.involuntary_switches += u.involuntary_switches;
  }
  result.window_s = absl::ToDoubleSeconds(spec.duration);
  if (fanout) {
    // Deliveries: frames summed over the subscribers, each over its own window.
    FanoutResult& f = result.fanout;
    f.subscribers = spec.clients;
    result.latency = std::make_unique<Histogram>();
    double rate = 0;
    f.min_subscriber_frames_per_s = -1;
    for (int i = 0; i < spec.clients; ++i) {
      const WorkerSlot& s = ctl->clients[i];
      result.frames += s.window_frames;
      const double r = s.window_ns > 0 ? s.window_frames * 1e9 / s.window_ns : 0;
      rate += r;
      if (f.min_subscriber_frames_per_s < 0 || r < f.min_subscriber_frames_per_s) {
        f.min_subscriber_frames_per_s = r;
      }
      result.latency->Merge(hists[i]);
      f.subscribers_io_read += s.io.read;
      f.subscribers_io_written += s.io.written;
    }
    result.frames_per_s = rate;
    f.per_subscriber_frames_per_s = rate / spec.clients;
    const WorkerSlot& pub = ctl->server;
    f.published_frames = pub.window_frames;
    f.published_per_s = pub.window_ns > 0 ? pub.window_frames * 1e9 / pub.window_ns : 0;
    f.total_published = pub.total_frames;
    f.publisher_copied_bytes = pub.copied_bytes;
    f.publisher_io_written = pub.io.written;
    f.publisher_io_read = pub.io.read;
  } else if (spec.pattern == Pattern::kPingPong) {
    result.latency = std::make_unique<Histogram>();
    double rate = 0;
    for (int i = 0; i < spec.clients; ++i) {
      const WorkerSlot& s = ctl->clients[i];
      result.frames += s.window_frames;
      if (s.window_ns > 0) rate += s.window_frames * 1e9 / s.window_ns;
      result.latency->Merge(hists[i]);
    }
    result.frames_per_s = rate;
  } else {
    const WorkerSlot& s = ctl->server;
    result.frames = s.window_frames;
    if (s.window_ns > 0) {
      result.window_s = s.window_ns / 1e9;
      result.frames_per_s = s.window_frames / result.window_s;
    }
    if (spec.pattern == Pattern::kOpenLoop) {
      result.latency = std::make_unique<Histogram>(hists[spec.clients]);
      result.latency_actual = std::make_unique<Histogram>(hists[spec.clients + 1]);
      for (int i = 0; i < spec.clients; ++i) result.openloop_unsent += ctl->clients[i].unsent;
    }
  }
  result.mb_per_s = result.frames_per_s * spec.frame_bytes / 1e6;
  return result;
}

}  // namespace shmlane::bench
