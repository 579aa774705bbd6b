// shmlane-control-bench: control-plane figures of a real shmlaned (issue 3).
//
//   attach    Producer::Attach on a STREAM channel (connect, handshake, fds,
//             map), then Close; without and with a consumer attached.
//   create    CreateChannel, GetChannel, DeleteChannel over unix:DIR/control.sock,
//             one call at a time; then --create-threads threads creating
//             together (the daemon batches their state writes).
//   memory    the daemon's VmRSS idle, with 100 channels, with N producer lanes,
//             and after streaming frames through them.
//   exporter  1 producer -> 1 consumer, 64-byte frames in batches, with
//             /metrics scraped every second vs --metrics-listen none.
//
// Every phase starts its own daemon in a fresh 0755 runtime directory. The
// parent never touches gRPC (it forks afterwards); control calls run in
// forked helper processes, clients in forked client processes.
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
#include "bench/control_bench_procs.h"
#include "bench/result_json.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::bench {
namespace {

using namespace cbench;  // NOLINT(build/namespaces): control_bench_procs.h

struct Options {
  std::string shmlaned;
  std::vector<std::string> phases = {"attach", "create", "memory", "exporter"};
  int attach_iterations = 1000;
  int create_channels = 500;
  int create_threads = 16;
  int lanes = 64;
  uint64_t lane_frames = 10'000'000;
  double duration_s = 5;
  int runs = 5;
  bool json = false;
};

// ---------------------------------------------------------------------------
// Phases.

absl::Status PhaseAttach(const Options& opt, const std::string& base, Results& out) {
  auto d = Daemon::Start(opt.shmlaned, base, true);
  if (!d.ok()) return d.status();
  const std::string dir = (*d)->dir();
  if (auto r = CreateChannels(dir, {"attach"}, 4096); !r.ok()) return r.status();
  auto measure = [&](const std::string& key) -> absl::Status {
    auto r = RunChild([&](ChildIo& io) -> absl::Status {
      std::vector<double> attach, close;
      const client::AttachOptions o = ClientOptions(dir, "cbench-attach");
      for (int i = 0; i < opt.attach_iterations + 20; ++i) {  // 20 warm-up rounds
        const int64_t t0 = NowNs();
        auto p = client::Producer::Attach("attach", o);
        const int64_t t1 = NowNs();
        if (!p.ok()) return p.status();
        p->Close();
        const int64_t t2 = NowNs();
        if (i < 20) continue;
        attach.push_back(static_cast<double>(t1 - t0) / 1e3);
        close.push_back(static_cast<double>(t2 - t1) / 1e3);
      }
      Results r;
      PutPercentiles(r, key, attach);
      PutPercentiles(r, key + "_close", close);
      for (const auto& [k, v] : r) io.Put(k, v);
      return absl::OkStatus();
    });
    if (!r.ok()) return r.status();
    out.insert(r->begin(), r->end());
    return absl::OkStatus();
  };
  const double cpu0 = CpuSeconds((*d)->pid());
  if (absl::Status s = measure("attach.no_consumer"); !s.ok()) return s;
  out["attach.no_consumer.daemon_cpu_us_per_attach"] =
      (CpuSeconds((*d)->pid()) - cpu0) * 1e6 / static_cast<double>(opt.attach_iterations);
  auto consumer = SpawnConsumer(dir, "attach", 0, 0);
  if (!consumer.ok()) return consumer.status();
  if (absl::Status s = (*consumer)->Await("ready"); !s.ok()) return s;
  if (absl::Status s = measure("attach.with_consumer"); !s.ok()) return s;
  (*consumer)->Signal(SIGTERM);
  return (*consumer)->Finish().status();
}

absl::Status PhaseCreate(const Options& opt, const std::string& base, Results& out) {
  auto d = Daemon::Start(opt.shmlaned, base, true);
  if (!d.ok()) return d.status();
  const std::string dir = (*d)->dir();
  const int n = opt.create_channels;
  auto r = RunChild([&](ChildIo& io) -> absl::Status {
    Control c(dir);
    if (absl::Status s = c.Prepare(); !s.ok()) return s;
    std::vector<double> create, get, del;
    for (int i = -20; i < n; ++i) {  // 20 warm-up channels
      v1::Channel ch;
      const int64_t t0 = NowNs();
      if (absl::Status s = c.Create(absl::StrCat("cc-", i + 20), 64, &ch); !s.ok()) return s;
      if (i >= 0) create.push_back(static_cast<double>(NowNs() - t0) / 1e3);
    }
    for (int i = 0; i < n + 20; ++i) {
      grpc::ClientContext get_ctx, delete_ctx;
      v1::GetChannelRequest get_req;
      get_req.set_name(absl::StrCat("cc-", i));
      v1::DeleteChannelRequest delete_req;
      delete_req.set_name(get_req.name());
      v1::Channel ch;
      v1::DeleteChannelResponse deleted;
      int64_t t0 = NowNs();
      grpc::Status s = c.channels->GetChannel(&get_ctx, get_req, &ch);
      get.push_back(static_cast<double>(NowNs() - t0) / 1e3);
      if (!s.ok()) return Control::Check(s, "GetChannel");
      t0 = NowNs();
      s = c.channels->DeleteChannel(&delete_ctx, delete_req, &deleted);
      del.push_back(static_cast<double>(NowNs() - t0) / 1e3);
      if (!s.ok()) return Control::Check(s, "DeleteChannel");
    }
    Results res;
    PutPercentiles(res, "create.create", create);
    // The state file is rewritten on every change: does the cost grow?
    const size_t k = std::min<size_t>(100, create.size());
    PutPercentiles(res, "create.create_first100", {create.begin(), create.begin() + k});
    PutPercentiles(res, "create.create_last100", {create.end() - k, create.end()});
    PutPercentiles(res, "create.get", get);
    PutPercentiles(res, "create.delete", del);
    if (opt.create_threads > 1) {
      // Concurrent creates: every thread its own connection, as separate
      // orchestrator clients would be. Latency is per call; per_change is
      // wall time over calls (what the daemon sustains).
      const int threads = opt.create_threads;
      const int each = std::max(1, n / threads);
      std::vector<std::vector<double>> lat(threads);
      std::vector<absl::Status> errors(threads);
      std::vector<std::unique_ptr<Control>> clients;
      for (int t = 0; t < threads; ++t) {
        clients.push_back(std::make_unique<Control>(dir));
        if (!clients.back()->channel->WaitForConnected(std::chrono::system_clock::now() +
                                                       std::chrono::seconds(10))) {
          return absl::UnavailableError("cannot connect to control.sock");
        }
      }
      std::vector<std::thread> workers;
      const int64_t start = NowNs();
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          for (int i = 0; i < each && errors[t].ok(); ++i) {
            v1::Channel ch;
            const int64_t t0 = NowNs();
            errors[t] = clients[t]->Create(absl::StrCat("cc-t", t, "-", i), 64, &ch);
            lat[t].push_back(static_cast<double>(NowNs() - t0) / 1e3);
          }
        });
      }
      for (std::thread& w : workers) w.join();
      const double wall_us = static_cast<double>(NowNs() - start) / 1e3;
      std::vector<double> all;
      for (int t = 0; t < threads; ++t) {
        if (!errors[t].ok()) return errors[t];
        all.insert(all.end(), lat[t].begin(), lat[t].end());
      }
      PutPercentiles(res, "create.concurrent", all);
      res["create.concurrent.threads"] = threads;
      res["create.concurrent.per_change_us"] = wall_us / static_cast<double>(all.size());
      workers.clear();
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          for (int i = 0; i < each; ++i) {
            grpc::ClientContext ctx;
            v1::DeleteChannelRequest req;
            req.set_name(absl::StrCat("cc-t", t, "-", i));
            v1::DeleteChannelResponse deleted;
            (void)clients[t]->channels->DeleteChannel(&ctx, req, &deleted);
          }
        });
      }
      for (std::thread& w : workers) w.join();
    }
    for (const auto& [k, v] : res) io.Put(k, v);
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  out.insert(r->begin(), r->end());
  out["create.daemon_cpu_s"] = CpuSeconds((*d)->pid());
  return absl::OkStatus();
}

absl::Status PhaseMemory(const Options& opt, const std::string& base, Results& out) {
  auto d = Daemon::Start(opt.shmlaned, base, true);
  if (!d.ok()) return d.status();
  const pid_t pid = (*d)->pid();
  const std::string dir = (*d)->dir();
  usleep(100'000);
  PutRss(out, pid, "memory.idle");
  PutTopMappings(out, pid, "memory.idle", 6);
  std::vector<std::string> names;
  for (int i = 0; i < 100; ++i) names.push_back(absl::StrCat("idle-", i));
  names.push_back("lanes");
  auto created = CreateChannels(dir, names, static_cast<uint32_t>(opt.lanes));
  if (!created.ok()) return created.status();
  out["memory.ring_bytes"] = (*created)["ring_bytes"];
  usleep(100'000);
  PutRss(out, pid, "memory.channels_101");
  const uint64_t total = opt.lane_frames;
  const int lanes = opt.lanes;
  auto consumer = SpawnConsumer(dir, "lanes", lanes, total);
  if (!consumer.ok()) return consumer.status();
  if (absl::Status s = (*consumer)->Await("ready"); !s.ok()) return s;
  PutRss(out, pid, "memory.consumer");
  auto producer = Child::Spawn([&](ChildIo& io) -> absl::Status {
    std::vector<client::Producer> ps;
    for (int i = 0; i < lanes; ++i) {
      auto p = client::Producer::Attach("lanes", ClientOptions(dir, absl::StrCat("cbench-p", i)));
      if (!p.ok()) return p.status();
      ps.push_back(std::move(*p));
    }
    io.Mark("attached");
    if (!io.WaitGo()) return absl::CancelledError("no go");
    for (uint64_t sent = 0; sent < total;) {
      for (auto& p : ps) {
        auto n = Stream(p, std::min<uint64_t>(4096, total - sent), 0);
        if (!n.ok()) return n.status();
        sent += *n;
      }
    }
    io.Mark("streamed");
    if (!io.WaitGo()) return absl::CancelledError("no go");
    for (auto& p : ps) p.Close();
    return absl::OkStatus();
  });
  if (!producer.ok()) return producer.status();
  if (absl::Status s = (*producer)->Await("attached"); !s.ok()) return s;
  usleep(200'000);
  PutRss(out, pid, "memory.lanes");
  const auto [memfds, memfd_bytes] = Memfds(pid);
  out["memory.daemon_memfds"] = memfds;
  out["memory.daemon_memfd_bytes"] = memfd_bytes;
  const int64_t t0 = NowNs();
  (*producer)->Go();
  if (absl::Status s = (*consumer)->Await("received", 600); !s.ok()) return s;
  out["memory.stream_s"] = static_cast<double>(NowNs() - t0) / 1e9;
  if (absl::Status s = (*producer)->Await("streamed"); !s.ok()) return s;
  PutRss(out, pid, "memory.after_traffic");
  out["memory.scrape_bytes"] = Scrape((*d)->metrics_port());
  PutRss(out, pid, "memory.after_scrape");
  (*producer)->Go();
  if (auto r = (*producer)->Finish(); !r.ok()) return r.status();
  auto cr = (*consumer)->Finish();
  if (!cr.ok()) return cr.status();
  out["memory.frames_received"] = (*cr)["frames"];
  usleep(200'000);
  PutRss(out, pid, "memory.detached");
  return absl::OkStatus();
}

void PinToCpu(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(pid, sizeof(set), &set);  // best effort: a failure only adds noise
}

// One throughput run; scraping when the daemon has an exporter.
absl::Status ExporterRun(const Options& opt, const std::string& base, bool metrics, Results& out) {
  auto d = Daemon::Start(opt.shmlaned, base, metrics);
  if (!d.ok()) return d.status();
  const std::string dir = (*d)->dir();
  usleep(100'000);
  out["idle_rss_kb"] = ProcKb((*d)->pid(), "VmRSS");
  out["idle_rss_anon_kb"] = ProcKb((*d)->pid(), "RssAnon");
  out["idle_pss_kb"] = ProcKb((*d)->pid(), "Pss", "smaps_rollup");
  if (auto r = CreateChannels(dir, {"tp"}, 4); !r.ok()) return r.status();
  auto consumer = SpawnConsumer(dir, "tp", 1, 0);
  if (!consumer.ok()) return consumer.status();
  if (absl::Status s = (*consumer)->Await("ready"); !s.ok()) return s;
  const double duration = opt.duration_s;
  auto producer = Child::Spawn([&](ChildIo& io) -> absl::Status {
    auto p = client::Producer::Attach("tp", ClientOptions(dir, "cbench-tp"));
    if (!p.ok()) return p.status();
    io.Mark("attached");
    if (!io.WaitGo()) return absl::CancelledError("no go");
    auto n = Stream(*p, UINT64_MAX, NowNs() + static_cast<int64_t>(duration * 1e9));
    if (!n.ok()) return n.status();
    io.Put("sent", static_cast<double>(*n));
    p->Close();
    return absl::OkStatus();
  });
  if (!producer.ok()) return producer.status();
  if (absl::Status s = (*producer)->Await("attached"); !s.ok()) return s;
  // Producer on CPU 0, consumer on CPU 1: otherwise, on a 2-CPU machine, the
  // scheduler now and then puts both on one CPU and the run measures that
  // (throughput is bimodal, 30-50 M vs 110-120 M frames/s), not the exporter.
  // The daemon and the scraper float, so their cost still shows.
  if (std::thread::hardware_concurrency() >= 2) {
    PinToCpu((*producer)->pid(), 0);
    PinToCpu((*consumer)->pid(), 1);
  }
  std::vector<double> scrape_ms, scrape_bytes;
  absl::Notification stop;
  std::thread scraper;
  (*producer)->Go();
  if (metrics) {
    scraper = std::thread([&, port = (*d)->metrics_port()] {
      while (!stop.WaitForNotificationWithTimeout(absl::Seconds(1))) {
        const int64_t t0 = NowNs();
        scrape_bytes.push_back(Scrape(port));
        scrape_ms.push_back(static_cast<double>(NowNs() - t0) / 1e6);
      }
    });
  }
  auto pr = (*producer)->Finish();
  auto cr = (*consumer)->Finish();
  stop.Notify();
  if (scraper.joinable()) scraper.join();
  if (!pr.ok()) return pr.status();
  if (!cr.ok()) return cr.status();
  out["daemon_life_cpu_ms"] = (*d)->Stop() * 1e3;
  out["frames_per_s"] = (*cr)["span_s"] > 0 ? (*cr)["frames"] / (*cr)["span_s"] : 0;
  out["scrapes"] = static_cast<double>(scrape_ms.size());
  out["scrape_ms"] = Median(scrape_ms);
  out["scrape_bytes"] = Median(scrape_bytes);
  return absl::OkStatus();
}

absl::Status PhaseExporter(const Options& opt, const std::string& base, Results& out) {
  std::map<std::string, std::vector<double>> series;
  for (int i = 0; i < 2 * opt.runs; ++i) {
    const bool metrics = i % 2 == 0;
    Results r;
    if (absl::Status s = ExporterRun(opt, base, metrics, r); !s.ok()) return s;
    const std::string mode = metrics ? "scraped" : "none";
    for (const auto& [k, v] : r) series[mode + "." + k].push_back(v);
    std::fprintf(stderr, "  exporter run %d (%s): %.3g frames/s, daemon CPU in its life %.1f ms\n",
                 i + 1, mode.c_str(), r["frames_per_s"], r["daemon_life_cpu_ms"]);
  }
  for (const auto& [k, v] : series) out["exporter." + k] = Median(v);
  const double none = out["exporter.none.frames_per_s"];
  out["exporter.scraped_minus_none_daemon_cpu_ms"] =
      out["exporter.scraped.daemon_life_cpu_ms"] - out["exporter.none.daemon_life_cpu_ms"];
  out["exporter.ratio_scraped_over_none"] =
      none > 0 ? out["exporter.scraped.frames_per_s"] / none : 0;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------

// {"method": {...strings}, "results": {...numbers}}, keys sorted.
std::string ResultJson(const Results& r, const std::map<std::string, std::string>& method) {
  Json doc = Json::object();
  doc["method"] = Json::object();
  for (const auto& [k, v] : method) doc["method"][k] = v;
  doc["results"] = Json::object();
  for (const auto& [k, v] : r) doc["results"][k] = JsonNumber(v);
  return DumpJson(doc);
}

// Parses argv into `opt`; nullopt to go on, else the exit status.
std::optional<int> ParseFlags(int argc, char** argv, Options& opt) {
  CLI::App app(
      "Control-plane figures of a private shmlaned per phase: attach and CreateChannel "
      "latency, the daemon's memory (VmRSS, RssAnon, PSS), exporter overhead "
      "(docs/benchmarks.md, \"Control plane\").",
      "shmlane-control-bench");
  ConfigureApp(app);
  const std::string what = "What to run";
  app.add_option("--phases", opt.phases, "comma-separated phases to run")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(CLI::IsMember(opt.phases))  // the default: every phase
      ->default_str(absl::StrJoin(opt.phases, ","))
      ->type_name("P[,P...]")
      ->group(what);
  app.add_option("--shmlaned", opt.shmlaned, "the daemon to start for each phase")
      ->type_name("PATH")
      ->group(what);
  const std::string sizes = "Sizes";
  app.add_option("--attach-iterations", opt.attach_iterations,
                 "attach: Attach + Close cycles after 20 warm-up")
      ->check(CLI::PositiveNumber)
      ->type_name("N")
      ->group(sizes);
  app.add_option("--create-channels", opt.create_channels,
                 "create: channels created, got and deleted after 20 warm-up")
      ->check(CLI::PositiveNumber)
      ->type_name("N")
      ->group(sizes);
  app.add_option("--create-threads", opt.create_threads,
                 "create: threads (each with its own connection) that then create "
                 "--create-channels channels together, so the daemon can batch their state "
                 "writes; 1 skips this part")
      ->check(CLI::Range(1, 256))
      ->type_name("N")
      ->group(sizes);
  app.add_option("--lanes", opt.lanes, "memory: producer lanes attached")
      ->check(CLI::Range(1, 4096))
      ->type_name("N")
      ->group(sizes);
  app.add_option("--lane-frames", opt.lane_frames, "memory: 64-byte frames streamed")
      ->check(CLI::PositiveNumber)
      ->type_name("N")
      ->group(sizes);
  app.add_option("--duration", opt.duration_s,
                 "exporter: length of each throughput run, seconds or e.g. 500ms")
      ->transform(Duration())
      ->type_name("S")
      ->group(sizes);
  app.add_option("--runs", opt.runs, "exporter: alternating runs per mode (medians)")
      ->check(CLI::PositiveNumber)
      ->type_name("N")
      ->group(sizes);
  app.add_flag("--json", opt.json, "print one JSON object on stdout (text to stderr)")
      ->group("Output");
  return Parse(app, argc, argv);
}

int Main(int argc, char** argv) {
  Options opt;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  opt.shmlaned = std::filesystem::path(self).parent_path().string() + "/../control/shmlaned";
  if (std::optional<int> exit = ParseFlags(argc, argv, opt)) return *exit;
  signal(SIGPIPE, SIG_IGN);
  const char* tmp = std::getenv("TMPDIR");
  std::string base =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/shmlane-cbench-XXXXXX");
  if (mkdtemp(base.data()) == nullptr || chmod(base.c_str(), 0755) != 0) {
    std::fprintf(stderr, "mkdtemp %s: %s\n", base.c_str(), strerror(errno));
    return 1;
  }
  FILE* text = opt.json ? stderr : stdout;
  std::map<std::string, std::string> method = {
      {"shmlaned", opt.shmlaned},
      {"cpus", absl::StrCat(sysconf(_SC_NPROCESSORS_ONLN))},
      {"runtime_dir_fs", FsName(base)},
      {"loadavg_start", LoadAvg()},
      {"attach", absl::StrCat("Producer::Attach + Close on a STREAM channel (1 MiB ring), ",
                              opt.attach_iterations, " iterations after 20 warm-up")},
      {"create", absl::StrCat(opt.create_channels, " CreateChannel (STREAM, defaults), then ",
                              "GetChannel and DeleteChannel of each, unix:DIR/control.sock; then ",
                              opt.create_threads, " threads create as many together")},
      {"memory", absl::StrCat("VmRSS, RssAnon and PSS idle, +101 channels, +", opt.lanes,
                              " producer lanes, after ", opt.lane_frames, " 64-byte frames")},
      {"exporter",
       absl::StrCat("1 producer (CPU 0) -> 1 consumer (CPU 1), 64-byte frames, batches of 64, ",
                    opt.duration_s, " s; scrape /metrics every 1 s vs --metrics-listen ", "none; ",
                    opt.runs, " alternating runs each, medians")},
  };
  std::fprintf(text,
               "shmlane-control-bench: %s, %s CPUs, runtime dirs under %s (%s), load average %s\n",
               opt.shmlaned.c_str(), method["cpus"].c_str(), base.c_str(),
               method["runtime_dir_fs"].c_str(), method["loadavg_start"].c_str());
  Results results;
  int rc = 0;
  const std::vector<
      std::pair<std::string, absl::Status (*)(const Options&, const std::string&, Results&)>>
      phases = {{"memory", PhaseMemory},
                {"attach", PhaseAttach},
                {"create", PhaseCreate},
                {"exporter", PhaseExporter}};
  for (const auto& [name, fn] : phases) {
    if (std::find(opt.phases.begin(), opt.phases.end(), name) == opt.phases.end()) continue;
    std::fprintf(text, "phase %s: %s\n", name.c_str(), method[name].c_str());
    const int64_t t0 = NowNs();
    if (absl::Status s = fn(opt, base, results); !s.ok()) {
      std::fprintf(stderr, "phase %s failed: %s\n", name.c_str(), s.ToString().c_str());
      rc = 1;
    }
    method["loadavg_after_" + name] = LoadAvg();
    std::fprintf(text, "  (%.1f s, load average %s)\n", static_cast<double>(NowNs() - t0) / 1e9,
                 LoadAvg().c_str());
  }
  // Derived figures and targets.
  if (results.count("memory.lanes.rss_kb")) {
    const double lanes = static_cast<double>(opt.lanes);
    results["memory.rss_per_lane_kb"] =
        (results["memory.lanes.rss_kb"] - results["memory.consumer.rss_kb"]) / lanes;
    results["memory.memfd_bytes_per_lane"] = results["memory.daemon_memfd_bytes"] / lanes;
    results["memory.traffic_rss_delta_kb"] =
        results["memory.after_traffic.rss_kb"] - results["memory.lanes.rss_kb"];
    results["memory.rss_anon_per_lane_kb"] =
        (results["memory.lanes.rss_anon_kb"] - results["memory.consumer.rss_anon_kb"]) / lanes;
    results["memory.traffic_rss_anon_delta_kb"] =
        results["memory.after_traffic.rss_anon_kb"] - results["memory.lanes.rss_anon_kb"];
  }
  // The daemon's memory side by side: VmRSS is what `ps` shows, RssAnon what
  // the daemon itself costs, PSS its share of the shared libraries too.
  std::vector<std::pair<std::string, std::string>> points;
  for (const char* p :
       {"idle", "channels_101", "consumer", "lanes", "after_traffic", "after_scrape", "detached"}) {
    points.emplace_back(absl::StrCat("memory ", p), absl::StrCat("memory.", p, "."));
  }
  for (const char* mode : {"scraped", "none"}) {
    points.emplace_back(absl::StrCat("exporter ", mode, " idle"),
                        absl::StrCat("exporter.", mode, ".idle_"));
  }
  bool header = false;
  for (const auto& [label, prefix] : points) {
    if (!results.count(prefix + "rss_kb")) continue;
    if (!header) {
      std::fprintf(text, "\ndaemon memory (KiB):  %-22s %9s %9s %9s\n", "", "VmRSS", "RssAnon",
                   "PSS");
      header = true;
    }
    std::fprintf(text, "  %-42s %9.0f %9.0f %9.0f\n", label.c_str(), results[prefix + "rss_kb"],
                 results[prefix + "rss_anon_kb"], results[prefix + "pss_kb"]);
  }
  std::fprintf(text, "\nresults:\n");
  for (const auto& [k, v] : results) std::fprintf(text, "  %-44s %.6g\n", k.c_str(), v);
  auto target = [&](const char* what, const std::string& key, double limit, bool at_most) {
    if (!results.count(key)) return;
    const double v = results[key];
    const bool pass = at_most ? v <= limit : v >= limit;
    std::fprintf(text, "  target %-34s %-10.4g %s %-8g %s\n", what, v, at_most ? "<=" : ">=", limit,
                 pass ? "PASS" : "FAIL");
  };
  std::fprintf(text, "\ntargets:\n");
  target("attach p50 us (no consumer)", "attach.no_consumer.p50_us", 200, true);
  target("attach p50 us (with consumer)", "attach.with_consumer.p50_us", 200, true);
  target("CreateChannel p50 us", "create.create.p50_us", 1000, true);
  target(absl::StrCat("CreateChannel us/change, ", opt.create_threads, " thr").c_str(),
         "create.concurrent.per_change_us", 1000, true);
  target("idle RssAnon KiB (4 MiB)", "memory.idle.rss_anon_kb", 4096, true);
  target("scraped/none throughput", "exporter.ratio_scraped_over_none", 0.97, false);
  method["loadavg_end"] = LoadAvg();
  if (opt.json) std::printf("%s\n", ResultJson(results, method).c_str());
  std::error_code ec;
  std::filesystem::remove_all(base, ec);
  return rc;
}

}  // namespace
}  // namespace shmlane::bench

int main(int argc, char** argv) { return shmlane::bench::Main(argc, argv); }
