// Request/reply example, server side: answers every client's request with
// the same bytes. Clients may attach and leave at any time.
//
//   echo_server [--channel=echo] [--runtime-dir=DIR]
//
// Stops cleanly on SIGINT/SIGTERM (a signal thread calls Server::Stop()).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>

#include "clients/request_reply.h"

namespace {

std::string Flag(int argc, char** argv, std::string_view name, std::string fallback) {
  const std::string prefix = "--" + std::string(name) + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with(prefix)) return argv[i] + prefix.size();
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the signals here so that only the watcher thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // from main: Serve ended on its own
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  shmlane::client::Server::Options options;
  options.runtime_dir = Flag(argc, argv, "runtime-dir", "");
  options.on_peer_event = [](const shmlane::client::PeerEvent& e) {
    std::printf("%s client '%s'\n",
                e.kind == shmlane::client::PeerEvent::Kind::kAttached ? "+" : "-",
                e.peer.name.c_str());
    std::fflush(stdout);
  };
  auto server = shmlane::client::Server::Attach(Flag(argc, argv, "channel", "echo"), options);
  if (!server.ok()) {
    std::fprintf(stderr, "echo_server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    server->Stop();
  });

  uint64_t served = 0;
  const absl::Status status =
      server->Serve([&](const shmlane::client::Server::Request& request, std::string* reply) {
        reply->assign(request.data_as_string_view());
        ++served;
        return absl::OkStatus();
      });
  std::printf("echo_server: served %lu requests (%lu replies dropped): %s\n",
              static_cast<unsigned long>(served),
              static_cast<unsigned long>(server->dropped_replies()), status.ToString().c_str());
  pthread_kill(watcher.native_handle(), SIGUSR1);  // release the watcher if Serve ended alone
  watcher.join();
  return status.ok() ? 0 : 1;
}
