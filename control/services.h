// The gRPC control services (callback API): ChannelService and
// AccessService from protos/shmlane/v1/control.proto, thin adapters over the
// Registry. Every call is counted in DaemonMetrics by method and code, and
// every mutating call persists the daemon state before it returns.
//
// Identity: gRPC 1.51 does not expose the peer uid of a Unix-socket caller,
// so these services do no per-caller authorization: the control socket's
// file mode (and TLS client certificates on TCP) is the admin boundary.
//
// Thread safety: gRPC calls the handlers from its own threads, concurrently;
// the classes hold no mutable state besides what Registry and EventBus guard.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "control/daemon_metrics.h"
#include "control/event_bus.h"
#include "control/registry.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::control {

// Saves the daemon state; called after every successful mutation.
using PersistFn = std::function<absl::Status()>;

class ChannelServiceImpl final : public shmlane::v1::ChannelService::CallbackService {
 public:
  ChannelServiceImpl(Registry* registry, EventBus* events, DaemonMetrics* metrics,
                     PersistFn persist);

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
  Registry* const registry_;
  EventBus* const events_;
  DaemonMetrics* const metrics_;
  const PersistFn persist_;
};

class AccessServiceImpl final : public shmlane::v1::AccessService::CallbackService {
 public:
  AccessServiceImpl(Registry* registry, DaemonMetrics* metrics, PersistFn persist);

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
  Registry* const registry_;
  DaemonMetrics* const metrics_;
  const PersistFn persist_;
};

}  // namespace shmlane::control
