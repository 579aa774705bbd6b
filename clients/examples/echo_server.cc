// Request/reply example, server side: answers every client's request with
// the same bytes. Clients may attach and leave at any time.
//
//   echo_server [--channel echo] [--runtime-dir DIR]
//
// (`--flag=value` works as well; --help lists the flags.)
//
// Stops cleanly on SIGINT/SIGTERM (a signal thread calls Server::Stop()).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "clients/examples/example_flags.h"
#include "clients/request_reply.h"

int main(int argc, char** argv) {
  CLI::App app(
      "Request/reply example, server side: answers every client's request with the same bytes "
      "until SIGINT or SIGTERM.",
      "echo_server");
  shmlane::examples::InitApp(app);
  std::string channel = "echo";
  shmlane::client::Server::Options options;
  app.add_option("--channel", channel, "The REQUEST_REPLY channel to serve")->type_name("NAME");
  shmlane::examples::AddRuntimeDirFlag(app, &options.runtime_dir);
  if (std::optional<int> exit = shmlane::examples::ParseFlags(app, argc, argv)) return *exit;

  // Block the signals here so that only the watcher thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // from main: Serve ended on its own
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  options.on_peer_event = [](const shmlane::client::PeerEvent& e) {
    std::printf("%s client '%s'\n",
                e.kind == shmlane::client::PeerEvent::Kind::kAttached ? "+" : "-",
                e.peer.name.c_str());
    std::fflush(stdout);
  };
  auto server = shmlane::client::Server::Attach(channel, options);
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
