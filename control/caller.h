// Caller: who is on the other end of a control RPC, as the kernel or the TLS
// handshake says, never as the request says. control.sock connections are
// accepted by the daemon itself (ControlListener), which reads SO_PEERCRED
// and records it in a CallerTable under the connection's fd before handing
// the fd to gRPC; gRPC then names the connection "fd:N" in
// ServerContext::peer(). TCP callers are identified by their verified client
// certificate (mutual TLS), never by their address.
//
// Thread safety: Caller is a value; CallerTable may be used from any thread.
#pragma once

#include <grpcpp/server_context.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "control/access.h"

namespace shmlane::control {

struct Caller {
  enum class Kind {
    kDaemon,           // the daemon itself (declarations, tests)
    kLocal,            // a process on control.sock: `peer` is kernel-verified
    kCertificate,      // a TCP client with a verified certificate: `names`
    kUnauthenticated,  // anything else: only the health service answers it
  };
  Kind kind = Kind::kUnauthenticated;
  PeerCredentials peer;            // kLocal
  std::vector<std::string> names;  // kCertificate: subject CN and subjectAltNames
  bool admin = false;

  static Caller Daemon();
  // "uid 1001 (pid 4242)", "certificate \"ops.example\"", "the daemon".
  std::string Describe() const;
};

// Who may administer: root, the daemon's uid, members of the admin group,
// and over TLS the certificate names listed (or every verified certificate
// when the list is empty).
struct AdminPolicy {
  uint32_t daemon_uid = 0;
  int admin_gid = -1;  // -1: no admin group
  std::vector<std::string> tls_admins;
  std::string admin_group_name;  // for messages
};

// The credentials of the open control.sock connections, by fd.
class CallerTable {
 public:
  void Set(int fd, const PeerCredentials& peer) ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<PeerCredentials> Find(int fd) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::map<int, PeerCredentials> by_fd_ ABSL_GUARDED_BY(mu_);
};

// Identifies the caller of an RPC.
Caller IdentifyCaller(const grpc::ServerContextBase& context, const CallerTable& table,
                      const AdminPolicy& policy);

// Whether a local process is an administrator under `policy`.
bool IsLocalAdmin(const PeerCredentials& peer, const AdminPolicy& policy);

// What a non-administrator would need, for PERMISSION_DENIED messages.
std::string HowToBecomeAdmin(const AdminPolicy& policy);

}  // namespace shmlane::control
