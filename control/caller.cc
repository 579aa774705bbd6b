#include "control/caller.h"

#include <grpcpp/security/auth_context.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace shmlane::control {

Caller Caller::Daemon() {
  Caller c;
  c.kind = Kind::kDaemon;
  c.admin = true;
  return c;
}

std::string Caller::Describe() const {
  switch (kind) {
    case Kind::kDaemon:
      return "the daemon";
    case Kind::kLocal:
      return absl::StrCat("uid ", peer.uid, " (pid ", peer.pid, ")");
    case Kind::kCertificate:
      return absl::StrCat("certificate \"", names.empty() ? "" : names.front(), "\"");
    case Kind::kUnauthenticated:
      break;
  }
  return "an unauthenticated caller";
}

void CallerTable::Set(int fd, const PeerCredentials& peer) {
  absl::MutexLock lock(&mu_);
  by_fd_[fd] = peer;
}

std::optional<PeerCredentials> CallerTable::Find(int fd) const {
  absl::MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return std::nullopt;
  return it->second;
}

bool IsLocalAdmin(const PeerCredentials& peer, const AdminPolicy& policy) {
  if (peer.uid == 0 || peer.uid == policy.daemon_uid) return true;
  if (policy.admin_gid < 0) return false;
  const auto gid = static_cast<uint32_t>(policy.admin_gid);
  return peer.gid == gid ||
         std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end();
}

std::string HowToBecomeAdmin(const AdminPolicy& policy) {
  std::string out =
      absl::StrCat("administrators are root, uid ", policy.daemon_uid, " (the daemon's)");
  if (policy.admin_gid >= 0) {
    absl::StrAppend(
        &out, " and members of group ",
        policy.admin_group_name.empty() ? absl::StrCat(policy.admin_gid) : policy.admin_group_name,
        " (--admin-group)");
  } else {
    absl::StrAppend(&out, "; start shmlaned with --admin-group GROUP to add a group");
  }
  return out;
}

Caller IdentifyCaller(const grpc::ServerContextBase& context, const CallerTable& table,
                      const AdminPolicy& policy) {
  Caller caller;
  const std::string peer = context.peer();
  if (absl::StartsWith(peer, "fd:")) {
    int fd = -1;
    if (absl::SimpleAtoi(absl::string_view(peer).substr(3), &fd)) {
      if (std::optional<PeerCredentials> cred = table.Find(fd); cred.has_value()) {
        caller.kind = Caller::Kind::kLocal;
        caller.peer = *cred;
        caller.admin = IsLocalAdmin(*cred, policy);
      }
    }
    return caller;
  }
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return caller;
  for (const char* property : {"x509_common_name", "x509_subject_alternative_name"}) {
    for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
      caller.names.emplace_back(value.data(), value.size());
    }
  }
  if (caller.names.empty()) return caller;
  caller.kind = Caller::Kind::kCertificate;
  caller.admin =
      policy.tls_admins.empty() ||
      std::any_of(caller.names.begin(), caller.names.end(), [&](const std::string& name) {
        return std::find(policy.tls_admins.begin(), policy.tls_admins.end(), name) !=
               policy.tls_admins.end();
      });
  return caller;
}

}  // namespace shmlane::control
