// The gRPC control services (callback API): ChannelService and
// AccessService from protos/shmlane/v1/control.proto, thin adapters over the
// Registry. Every call is counted in DaemonMetrics by method and code, and
// every mutating call persists the daemon state before it returns.
//
// Identity: every call has a verified caller (caller.h): the SO_PEERCRED of
// its control.sock connection, or its client certificate over TCP. The
// Registry authorizes each call for that caller; calls without an identity
// get UNAUTHENTICATED. Every state-changing call, allowed or refused, is
// written to the audit log.
//
// Thread safety: gRPC calls the handlers from its own threads, concurrently;
// the classes hold no mutable state besides what Registry and EventBus guard.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "control/audit_log.h"
#include "control/caller.h"
#include "control/daemon_metrics.h"
#include "control/event_bus.h"
#include "control/registry.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::control {

// Saves the daemon state; called after every successful mutation.
using PersistFn = std::function<absl::Status()>;
// The same without waiting: `done` runs (on another thread) once a write
// that covers every change made before the call is durable, or failed. The
// services use it when set, so that concurrent changes share one write
// (StateWriter, group commit) and the reply goes out after that write.
using PersistAsyncFn = std::function<void(std::function<void(absl::Status)> done)>;

// What both services need. Pointers are not owned and outlive the services.
struct ServiceContext {
  Registry* registry = nullptr;
  EventBus* events = nullptr;
  DaemonMetrics* metrics = nullptr;
  PersistFn persist;
  PersistAsyncFn persist_async;  // optional; preferred over `persist`
  const CallerTable* callers = nullptr;
  AdminPolicy admins;
  AuditLog* audit = nullptr;  // optional
};

class ChannelServiceImpl final : public shmlane::v1::ChannelService::CallbackService {
 public:
  explicit ChannelServiceImpl(ServiceContext context) : ctx_(std::move(context)) {}

  grpc::ServerUnaryReactor* CreateChannel(grpc::CallbackServerContext* context,
                                          const shmlane::v1::CreateChannelRequest* request,
                                          shmlane::v1::Channel* response) override;
  grpc::ServerUnaryReactor* GetChannel(grpc::CallbackServerContext* context,
                                       const shmlane::v1::GetChannelRequest* request,
                                       shmlane::v1::Channel* response) override;
  grpc::ServerUnaryReactor* ListChannels(grpc::CallbackServerContext* context,
                                         const shmlane::v1::ListChannelsRequest* request,
                                         shmlane::v1::ListChannelsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteChannel(grpc::CallbackServerContext* context,
                                          const shmlane::v1::DeleteChannelRequest* request,
                                          shmlane::v1::DeleteChannelResponse* response) override;
  grpc::ServerWriteReactor<shmlane::v1::Event>* WatchEvents(
      grpc::CallbackServerContext* context,
      const shmlane::v1::WatchEventsRequest* request) override;
  grpc::ServerUnaryReactor* GetChannelStats(grpc::CallbackServerContext* context,
                                            const shmlane::v1::GetChannelStatsRequest* request,
                                            shmlane::v1::ChannelStats* response) override;

 private:
  const ServiceContext ctx_;
};

class AccessServiceImpl final : public shmlane::v1::AccessService::CallbackService {
 public:
  explicit AccessServiceImpl(ServiceContext context) : ctx_(std::move(context)) {}

  grpc::ServerUnaryReactor* AddGrant(grpc::CallbackServerContext* context,
                                     const shmlane::v1::AddGrantRequest* request,
                                     shmlane::v1::GrantResponse* response) override;
  grpc::ServerUnaryReactor* RemoveGrant(grpc::CallbackServerContext* context,
                                        const shmlane::v1::RemoveGrantRequest* request,
                                        shmlane::v1::GrantResponse* response) override;
  grpc::ServerUnaryReactor* ListGrants(grpc::CallbackServerContext* context,
                                       const shmlane::v1::ListGrantsRequest* request,
                                       shmlane::v1::ListGrantsResponse* response) override;
  grpc::ServerUnaryReactor* SetQuota(grpc::CallbackServerContext* context,
                                     const shmlane::v1::SetQuotaRequest* request,
                                     shmlane::v1::Quota* response) override;
  grpc::ServerUnaryReactor* GetQuota(grpc::CallbackServerContext* context,
                                     const shmlane::v1::GetQuotaRequest* request,
                                     shmlane::v1::Quota* response) override;

 private:
  const ServiceContext ctx_;
};

}  // namespace shmlane::control
