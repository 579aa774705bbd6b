// Request/reply over a REQUEST_REPLY channel: many Clients, one Server.
//
// Each client gets its own pair of lanes (requests to the server, replies
// back), so a slow or dead client never blocks another. A call is one frame
// each way; the library prefixes both with a 16-byte call header so that a
// reply that arrives after its call timed out is recognised and dropped:
//
//   request: u64 call_id | u32 0        | u32 0 | request bytes
//   reply:   u64 call_id | i32 rpc code | u32 0 | reply bytes (or error text)
//
// (little-endian; the code is a google.rpc.Code value, as absl::StatusCode.)
//
// Both ends hand their lanes back to a restarted daemon by themselves
// (Resume, docs/protocol.md): a Client at the start of a Call once its
// attach connection hung up (looked at without blocking at most every 50 ms
// of CLOCK_MONOTONIC_COARSE), a Server from inside ServeOnce/ServeReady.
//
//   auto client = shmlane::client::Client::Attach("echo");
//   auto reply = client->Call("ping", absl::Now() + absl::Milliseconds(100));
//
//   auto server = shmlane::client::Server::Attach("echo");
//   server->Serve([](const Request& r, std::string* reply) {
//     reply->assign(r.data_as_string_view());
//     return absl::OkStatus();
//   });
//
// Thread safety: a Client is used by one thread at a time (one call in
// flight); use one Client per thread for concurrency. A Server is used by one
// thread at a time, except Stop(), which may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "clients/attach_options.h"
#include "dataplane/lane.h"

namespace shmlane::client {

namespace internal {
class AttachSocket;
class DaemonWatch;
class Inbox;
struct ServerReplies;
}  // namespace internal

// Bytes the library adds in front of every request and reply frame.
inline constexpr size_t kCallHeaderBytes = 16;

class Client {
 public:
  using Options = AttachOptions;

  // Attaches to `channel` as a client. Errors as for Producer::Attach.
  static absl::StatusOr<Client> Attach(std::string_view channel, const Options& options = {});

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // Sends `request` and waits for its reply until `deadline`. Errors:
  // DeadlineExceeded; Unavailable (the server went away or never came and
  // the lane closed); ResourceExhausted (request lane full under a fail-fast
  // policy); InvalidArgument (too large); whatever status the server's
  // handler returned, with its message.
  absl::StatusOr<std::string> Call(std::string_view request, absl::Time deadline);
  // As above into `*reply`, reusing its capacity.
  absl::Status Call(std::span<const std::byte> request, std::string* reply, absl::Time deadline);
  // How often the lanes were handed to a restarted daemon (Resume).
  uint64_t resumes() const { return resumes_; }

  // The server side of the lanes (lane id of the request lane, attachment
  // and name of the server when the daemon knew it).
  const Peer& server() const { return server_; }
  uint64_t attachment_id() const { return attachment_id_; }
  const std::string& channel() const { return channel_; }
  // Largest request payload (the lane's max frame minus the call header).
  size_t max_request_bytes() const;

  // Detaches. Idempotent; the destructor calls it.
  void Close();

 private:
  Client() = default;

  std::string channel_;
  uint64_t attachment_id_ = 0;
  std::unique_ptr<internal::AttachSocket> socket_;
  std::optional<dataplane::Producer> requests_;
  std::optional<dataplane::Consumer> replies_;
  Peer server_;
  uint64_t next_call_id_ = 1;
  std::vector<std::byte> scratch_;  // framing for requests that must wait
  std::vector<std::byte> inbound_;  // reply frames
  // Resume (as Producer: the attach socket is looked at, without blocking,
  // at most every internal::kDaemonCheckIntervalNs (50 ms) of coarse clock
  // at the start of a Call, by internal::DaemonWatch).
  void CheckDaemon(int64_t now_ns);
  void TryResume(int64_t now_ns);
  AttachOptions options_;
  std::string client_name_;
  std::string attach_credential_;
  std::shared_ptr<const dataplane::Doorbell> own_bell_;
  uint64_t request_lane_id_ = 0, reply_lane_id_ = 0;
  std::string request_credential_, reply_credential_;
  std::shared_ptr<const dataplane::Doorbell> request_peer_bell_, reply_peer_bell_;
  int64_t next_daemon_check_ns_ = 0;
  std::unique_ptr<internal::DaemonWatch> daemon_;  // null only when moved-from
  bool resume_refused_ = false;
  uint64_t resumes_ = 0;
};

class Server {
 public:
  struct Options : AttachOptions {
    // Called when a client attaches or goes.
    PeerEventFn on_peer_event;
    // How long a reply may wait for room in a client's full reply lane
    // before it is dropped (and counted).
    absl::Duration reply_timeout = absl::Seconds(1);
  };

  // One request, valid during the handler call. `data` points into shared
  // memory: untrusted input, copy what you keep.
  struct Request {
    const Peer& client;
    uint64_t call_id;
    std::span<const std::byte> data;
    std::string_view data_as_string_view() const {
      return {reinterpret_cast<const char*>(data.data()), data.size()};
    }
  };
  // Fills *reply (empty on entry, capacity reused). A non-OK status is sent
  // to the client instead of the reply, with its message.
  using Handler = absl::FunctionRef<absl::Status(const Request& request, std::string* reply)>;

  // Attaches to `channel` as its server. Errors as for Consumer::Attach.
  static absl::StatusOr<Server> Attach(std::string_view channel, Options options);
  static absl::StatusOr<Server> Attach(std::string_view channel) {
    return Attach(channel, Options());
  }

  Server(Server&&) noexcept;
  Server& operator=(Server&&) noexcept;
  ~Server();

  // Handles every request that is ready now; returns how many.
  size_t ServeReady(Handler handler);
  // Handles requests until one came or `deadline`: returns how many (0 at
  // the deadline), Cancelled after Stop(), Unavailable when no client is left
  // and none can come (the daemon is gone).
  absl::StatusOr<size_t> ServeOnce(Handler handler, absl::Time deadline);
  // Handles requests until `deadline`, Stop(), or no client can come.
  // Returns OK at the deadline or after Stop().
  absl::Status Serve(Handler handler, absl::Time deadline = absl::InfiniteFuture());
  // Makes Serve/ServeOnce return soon. Any thread.
  void Stop();

  std::vector<Peer> clients() const;
  uint64_t attachment_id() const;
  const std::string& channel() const;
  // Replies dropped: the client's lane stayed full past reply_timeout, or
  // the client was gone.
  uint64_t dropped_replies() const;

  // Detaches: clients' calls fail with Unavailable. Idempotent.
  void Close();

 private:
  Server() = default;
  void Handle(Handler handler, const Peer& peer, std::span<const std::byte> frame);

  std::unique_ptr<internal::ServerReplies> replies_;
  std::unique_ptr<internal::Inbox> inbox_;
  absl::Duration reply_timeout_;
  std::string reply_;  // handler output, capacity reused
};

}  // namespace shmlane::client
