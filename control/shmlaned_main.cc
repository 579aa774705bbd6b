// shmlaned: the shmlane daemon. See `shmlaned --help` and docs/operations.md.
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "control/config.h"
#include "control/daemon.h"
#include "shmlane/version.h"

int main(int argc, char** argv) {
  // Signals are taken synchronously by the main thread: block them before any
  // thread starts so that every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);  // re-read --declare
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Every producer costs the daemon three fds (its connection, its lane's
  // memfd, its doorbell): take the whole hard limit, as most daemons do, so a
  // default soft limit of 1024 does not cap a node at ~300 producers.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  std::vector<std::string> args(argv, argv + argc);
  absl::StatusOr<shmlane::control::ParsedCommandLine> parsed =
      shmlane::control::ParseCommandLine(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "shmlaned: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->show_help) {
    std::fputs(shmlane::control::HelpText().c_str(), stdout);
    return 0;
  }
  if (parsed->show_version) {
    std::printf("shmlaned %s\n", SHMLANE_VERSION);
    return 0;
  }
  if (parsed->print_config) {
    std::fputs(shmlane::control::FormatConfig(parsed->effective).c_str(), stdout);
    return 0;
  }
  absl::StatusOr<std::unique_ptr<shmlane::control::Daemon>> daemon =
      shmlane::control::Daemon::Start(parsed->config);
  if (!daemon.ok()) {
    std::fprintf(stderr, "shmlaned: %s\n", std::string(daemon.status().message()).c_str());
    const absl::StatusCode code = daemon.status().code();
    return code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kFailedPrecondition
               ? 2
               : 1;
  }
  std::fputs((*daemon)->Describe().c_str(), stdout);
  std::fflush(stdout);

  int signal_number = 0;
  while (true) {
    if (sigwait(&stop_signals, &signal_number) != 0) continue;
    if (signal_number != SIGHUP) break;
    (*daemon)->Reload();
  }
  std::fprintf(stderr, "shmlaned: %s received, shutting down\n",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  const absl::Time start = absl::Now();
  absl::Status saved = (*daemon)->Shutdown();
  if (!saved.ok()) {
    std::fprintf(stderr, "shmlaned: %s\n", std::string(saved.message()).c_str());
  }
  std::fprintf(stderr, "shmlaned: stopped in %lld ms\n",
               static_cast<long long>(absl::ToInt64Milliseconds(absl::Now() - start)));
  std::fflush(stdout);
  std::fflush(stderr);
  // Everything that matters is done (clients told, state saved, sockets
  // gone); skip the slow teardown of the metrics web server.
  std::_Exit(saved.ok() ? 0 : 1);
}
