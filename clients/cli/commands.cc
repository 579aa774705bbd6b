// shmlanectl's commands over the control API (see commands.h).
#include "clients/cli/commands.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/cli/output.h"
#include "clients/cli/top.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "shmlane/enum_names.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::cli {
namespace {

namespace v1 = ::shmlane::v1;
using grpc::health::v1::HealthCheckResponse;

bool ReadFile(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  const bool ok = std::ferror(f) == 0;
  std::fclose(f);
  return ok;
}

class Commands {
 public:
  Commands(const std::shared_ptr<grpc::Channel>& channel, const Connection& connection,
           std::string target)
      : channels_(v1::ChannelService::NewStub(channel)),
        access_(v1::AccessService::NewStub(channel)),
        health_(grpc::health::v1::Health::NewStub(channel)),
        json_(connection.json),
        timeout_(connection.timeout),
        target_(std::move(target)) {}

  int Run(const Invocation& inv);

 private:
  using ChannelStub = v1::ChannelService::Stub;
  using AccessStub = v1::AccessService::Stub;

  void Prepare(grpc::ClientContext* ctx) const {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  }
  int Fail(const grpc::Status& s) const {
    std::fprintf(stderr, "shmlanectl: %s: %s\n", CodeName(s.error_code()).c_str(),
                 s.error_message().c_str());
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      std::fprintf(stderr, "shmlanectl: is shmlaned running and serving %s?\n", target_.c_str());
      return kExitUnavailable;
    }
    return kExitFailed;
  }
  // Prints `out` as JSON or with `print`, for a call that succeeded.
  template <typename Message, typename Printer>
  int Done(const Message& out, Printer print) const {
    if (json_) {
      std::printf("%s\n", Json(out).c_str());
    } else {
      print(out);
    }
    return kExitOk;
  }
  // One unary call with the --timeout deadline, its reply printed by Done.
  template <typename Stub, typename Request, typename Response, typename Printer>
  int Call(Stub* stub,
           grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
           const Request& req, Printer print) const {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    Response out;
    grpc::Status s = (stub->*method)(&ctx, req, &out);
    if (!s.ok()) return Fail(s);
    return Done(out, print);
  }

  int ListChannels(v1::ListChannelsRequest req);
  int ChangeGrant(bool add, const std::string& channel, const v1::Grant& grant);
  int Watch(const v1::WatchEventsRequest& req, uint64_t count);
  int Health(const grpc::health::v1::HealthCheckRequest& req);

  std::unique_ptr<ChannelStub> channels_;
  std::unique_ptr<AccessStub> access_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  const bool json_;
  const absl::Duration timeout_;
  const std::string target_;
};

int Commands::Run(const Invocation& inv) {
  switch (inv.command) {
    case Command::kChannelsCreate:
      return Call(channels_.get(), &ChannelStub::CreateChannel, inv.create_channel,
                  [&](const v1::Channel& c) {
                    std::printf("created channel %s\n", inv.create_channel.spec().name().c_str());
                    PrintChannels({c});
                  });
    case Command::kChannelsGet:
      return Call(channels_.get(), &ChannelStub::GetChannel, inv.get_channel,
                  [](const v1::Channel& c) {
                    PrintChannels({c});
                    for (const auto& [k, v] : c.spec().labels()) {
                      std::printf("label %s=%s\n", k.c_str(), v.c_str());
                    }
                  });
    case Command::kChannelsList:
      return ListChannels(inv.list_channels);
    case Command::kChannelsDelete:
      return Call(channels_.get(), &ChannelStub::DeleteChannel, inv.delete_channel,
                  [&](const v1::DeleteChannelResponse& r) {
                    std::printf("deleted channel %s (%u attachments ended)\n",
                                inv.delete_channel.name().c_str(), r.detached_clients());
                  });
    case Command::kGrantsAdd:
      return ChangeGrant(true, inv.grant_channel, inv.grant);
    case Command::kGrantsRemove:
      return ChangeGrant(false, inv.grant_channel, inv.grant);
    case Command::kGrantsList: {
      v1::ListGrantsRequest req;
      req.set_channel(inv.grant_channel);
      return Call(access_.get(), &AccessStub::ListGrants, req, PrintGrants);
    }
    case Command::kQuotaSet:
      return Call(access_.get(), &AccessStub::SetQuota, inv.set_quota, PrintQuota);
    case Command::kQuotaGet:
      return Call(access_.get(), &AccessStub::GetQuota, inv.get_quota, PrintQuota);
    case Command::kStats:
      return Call(channels_.get(), &ChannelStub::GetChannelStats, inv.stats, PrintStats);
    case Command::kWatch:
      return Watch(inv.watch, inv.watch_count);
    case Command::kHealth:
      return Health(inv.health);
    case Command::kTop:
      return RunTop(channels_.get(), inv.connection, inv.top);
  }
  return kExitUsage;
}

int Commands::ListChannels(v1::ListChannelsRequest req) {
  v1::ListChannelsResponse all;
  while (true) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ListChannelsResponse page;
    grpc::Status s = channels_->ListChannels(&ctx, req, &page);
    if (!s.ok()) return Fail(s);
    for (const auto& c : page.channels()) *all.add_channels() = c;
    if (page.next_page_token().empty()) break;
    req.set_page_token(page.next_page_token());
  }
  return Done(all, [](const v1::ListChannelsResponse& r) {
    PrintChannels({r.channels().begin(), r.channels().end()});
  });
}

int Commands::ChangeGrant(bool add, const std::string& channel, const v1::Grant& grant) {
  auto print = [&](const v1::GrantResponse& r) {
    std::printf("%s %s %s on %s%s\n", add ? "granted" : "revoked", ShortName(grant.role()).c_str(),
                PrincipalName(grant.principal()).c_str(), channel.c_str(),
                r.changed() ? "" : " (no change)");
  };
  if (add) {
    v1::AddGrantRequest req;
    req.set_channel(channel);
    *req.mutable_grant() = grant;
    return Call(access_.get(), &AccessStub::AddGrant, req, print);
  }
  v1::RemoveGrantRequest req;
  req.set_channel(channel);
  *req.mutable_grant() = grant;
  return Call(access_.get(), &AccessStub::RemoveGrant, req, print);
}

int Commands::Watch(const v1::WatchEventsRequest& req, uint64_t count) {
  grpc::ClientContext ctx;  // no deadline: watch until interrupted or --count
  std::unique_ptr<grpc::ClientReader<v1::Event>> reader = channels_->WatchEvents(&ctx, req);
  v1::Event event;
  uint64_t seen = 0;
  while (reader->Read(&event)) {
    if (json_) {
      std::printf("%s\n", JsonLine(event).c_str());
    } else {
      PrintEvent(event);
    }
    std::fflush(stdout);
    if (count != 0 && ++seen >= count) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok() && !(count != 0 && seen >= count)) return Fail(s);
  return kExitOk;
}

int Commands::Health(const grpc::health::v1::HealthCheckRequest& req) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  HealthCheckResponse out;
  grpc::Status s = health_->Check(&ctx, req, &out);
  if (!s.ok()) return Fail(s);
  Done(out, [&](const HealthCheckResponse& r) {
    std::printf("%s: %s\n", req.service().empty() ? "shmlaned" : req.service().c_str(),
                HealthCheckResponse::ServingStatus_Name(r.status()).c_str());
  });
  return out.status() == HealthCheckResponse::SERVING ? kExitOk : kExitFailed;
}

}  // namespace

int Run(const Invocation& inv) {
  const Connection& c = inv.connection;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  std::string target;
  if (!c.server.empty()) {
    target = c.server;
    if (!c.tls_ca.empty() || !c.tls_cert.empty() || !c.tls_key.empty()) {
      grpc::SslCredentialsOptions ssl;
      // Empty pem_root_certs: gRPC's default roots (the system's CA store).
      for (const auto& [flag, path, pem] :
           {std::tuple{"tls-ca", &c.tls_ca, &ssl.pem_root_certs},
            std::tuple{"tls-cert", &c.tls_cert, &ssl.pem_cert_chain},
            std::tuple{"tls-key", &c.tls_key, &ssl.pem_private_key}}) {
        if (!path->empty() && !ReadFile(*path, pem)) {
          std::fprintf(stderr, "shmlanectl: cannot read --%s %s: %s\n", flag, path->c_str(),
                       std::strerror(errno));
          return kExitUsage;
        }
      }
      creds = grpc::SslCredentials(ssl);
    }
  } else {
    target = absl::StrCat("unix:", c.runtime_dir, "/control.sock");
  }
  Commands commands(grpc::CreateChannel(target, creds), c, target);
  return commands.Run(inv);
}

}  // namespace shmlane::cli
