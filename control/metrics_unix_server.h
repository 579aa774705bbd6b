// MetricsUnixServer: /metrics on a Unix socket (--metrics-listen unix:PATH),
// for nodes where channel names must not be visible to every local user (a
// loopback TCP port is). The socket file's mode is the wall: 0600 (the
// daemon's user) or 0660 with --metrics-group. Prometheus scrapes it through
// a sidecar or node agent that can reach the file, or `curl --unix-socket`.
//
// A deliberately small HTTP/1.1 server: GET /metrics only (404 for other
// paths, 405 for other methods), one request per connection (Connection:
// close), requests bounded to kMaxRequestBytes, every connection bounded to
// kConnectionTimeout from accept to the last byte sent, one connection at a
// time on one thread. A slow client therefore delays the next scrape by at
// most kConnectionTimeout and never touches the attach or control planes.
//
// Thread safety: Start() and Stop() from one owner thread; requests are
// served on the server's own thread, which calls the collectable's Collect().
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "control/runtime_dir.h"
#include "dataplane/unique_fd.h"
#include "prometheus/collectable.h"

namespace shmlane::control {

inline constexpr size_t kMaxMetricsRequestBytes = 8192;
inline constexpr absl::Duration kMetricsConnectionTimeout = absl::Seconds(5);

struct MetricsUnixServerOptions {
  std::string path;  // absolute socket path
  uint32_t mode = 0600;
  int gid = -1;  // chown group, -1 = keep
  // Where the path is inside the runtime directory, the daemon's checked fd
  // (see runtime_dir.h); else the socket's own directory is opened by path.
  int runtime_dir_fd = -1;
  std::string runtime_dir;
};

class MetricsUnixServer {
 public:
  MetricsUnixServer(MetricsUnixServerOptions options,
                    std::shared_ptr<prometheus::Collectable> collectable)
      : options_(std::move(options)), collectable_(std::move(collectable)) {}
  ~MetricsUnixServer() { Stop(); }
  MetricsUnixServer(const MetricsUnixServer&) = delete;
  MetricsUnixServer& operator=(const MetricsUnixServer&) = delete;

  // Removes a stale socket at the path (refusing anything that is not a
  // socket), binds, sets group and mode, and starts serving.
  absl::Status Start();
  // Stops serving and removes the socket file.
  void Stop();

 private:
  void Loop();
  void Serve(int fd);

  const MetricsUnixServerOptions options_;
  const std::shared_ptr<prometheus::Collectable> collectable_;
  FileInDir socket_;
  dataplane::UniqueFd listen_fd_;
  dataplane::UniqueFd wake_fd_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace shmlane::control
