#include "control/services.h"

#include <deque>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "control/status.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

// Open WatchEvents streams at most (each holds a queue of up to 4096 events).
constexpr size_t kMaxWatchers = 256;

// Finishes a unary call with `status`, counting it.
grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, DaemonMetrics* metrics,
                               const char* method, const absl::Status& status) {
  metrics->CountControlRequest(method, absl::StatusCodeToString(status.code()));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// After a successful mutation: the change is live; persist it or say that
// it is not saved.
absl::Status NotSaved(const absl::Status& s) {
  return absl::InternalError(absl::StrCat(
      "the change is applied but could not be saved, so a restart would lose it: ", s.message(),
      "; fix the state file's storage and repeat the request"));
}

absl::Status PersistAfter(const PersistFn& persist) {
  absl::Status s = persist();
  return s.ok() ? s : NotSaved(s);
}

// Streams events to one WatchEvents caller. Events are queued (bounded) by
// the bus's sink and written one at a time; a caller too slow to keep up is
// finished with RESOURCE_EXHAUSTED rather than slowing the daemon.
class WatchReactor final : public grpc::ServerWriteReactor<v1::Event> {
 public:
  static constexpr size_t kMaxQueued = 4096;

  WatchReactor(EventBus* bus, std::string channel) : bus_(bus) {
    handle_ = bus_->Subscribe(std::move(channel), [this](const v1::Event& e) { Enqueue(e); });
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !finish_wanted_) {
      finish_wanted_ = true;
      finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
    }
    if (!finish_wanted_) WriteNextLocked();
    if (!finish_wanted_ && !writing_ && end_after_queue_) {
      finish_wanted_ = true;
      finish_status_ = grpc::Status::OK;
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (!finish_wanted_) {
      finish_wanted_ = true;
      finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    MaybeFinishLocked();
  }

  void OnDone() override {
    // After Unsubscribe returns no sink runs, so `this` can go.
    bus_->Unsubscribe(handle_);
    delete this;
  }

 private:
  void Enqueue(const v1::Event& event) {
    absl::MutexLock lock(&mu_);
    if (finish_wanted_) return;
    if (queue_.size() >= kMaxQueued) {
      finish_wanted_ = true;
      finish_status_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                    "this watcher fell more than 4096 events behind; watch again");
      MaybeFinishLocked();
      return;
    }
    queue_.push_back(event);
    // The daemon is stopping: this is the stream's last event, and the
    // stream ends with OK once it is written.
    if (event.type() == v1::EVENT_TYPE_DAEMON_STOPPING) end_after_queue_ = true;
    if (!writing_) WriteNextLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty()) return;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&current_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_wanted_ && !writing_ && !finished_) {
      finished_ = true;
      Finish(finish_status_);
    }
  }

  EventBus* const bus_;
  uint64_t handle_ = 0;
  absl::Mutex mu_;
  std::deque<v1::Event> queue_ ABSL_GUARDED_BY(mu_);
  v1::Event current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool end_after_queue_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

namespace {

// The verified caller of a call, or UNAUTHENTICATED / PERMISSION_DENIED for a
// caller that may make no control call at all.
absl::StatusOr<Caller> Authenticate(const grpc::CallbackServerContext* context,
                                    const ServiceContext& ctx) {
  Caller caller = IdentifyCaller(*context, *ctx.callers, ctx.admins);
  switch (caller.kind) {
    case Caller::Kind::kUnauthenticated:
      return absl::UnauthenticatedError(
          "the control API needs a verified caller: connect through control.sock, or over TCP "
          "with a client certificate the daemon's --tls-client-ca signed");
    case Caller::Kind::kCertificate:
      if (!caller.admin) {
        return absl::PermissionDeniedError(absl::StrCat(
            caller.Describe(),
            " is not an administrator: add one of its names to the daemon's --tls-admins"));
      }
      break;
    default:
      break;
  }
  return caller;
}

// Runs one unary call: identifies the caller, calls `fn` with it, persists
// and audits a mutation, counts and finishes the call.
template <typename Fn>
grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* context, const ServiceContext& ctx,
                                const char* method, absl::string_view channel, bool mutates,
                                Fn fn) {
  absl::StatusOr<Caller> caller = Authenticate(context, ctx);
  absl::Status status = caller.status();
  bool changed = false;
  if (caller.ok()) status = fn(*caller, &changed);
  if (status.ok() && changed && ctx.persist_async) {
    // Group commit: the reply (and its audit record) waits for the state
    // write that covers this change; no gRPC thread waits meanwhile.
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    ctx.persist_async([reactor, metrics = ctx.metrics, audit = mutates ? ctx.audit : nullptr,
                       who = *caller, method, channel = std::string(channel)](absl::Status saved) {
      const absl::Status status = saved.ok() ? saved : NotSaved(saved);
      if (audit != nullptr) audit->Record(who, method, channel, status);
      metrics->CountControlRequest(method, absl::StatusCodeToString(status.code()));
      reactor->Finish(ToGrpcStatus(status));
    });
    return reactor;
  }
  if (status.ok() && changed) status = PersistAfter(ctx.persist);
  if (mutates && ctx.audit != nullptr) {
    ctx.audit->Record(caller.ok() ? *caller : Caller(), method, channel, status);
  }
  return Done(context, ctx.metrics, method, status);
}

}  // namespace

grpc::ServerUnaryReactor* ChannelServiceImpl::CreateChannel(grpc::CallbackServerContext* context,
                                                            const v1::CreateChannelRequest* request,
                                                            v1::Channel* response) {
  return Serve(context, ctx_, "CreateChannel", request->spec().name(), true,
               [&](const Caller& caller, bool* changed) {
                 absl::StatusOr<v1::Channel> r = ctx_.registry->CreateChannel(caller, *request);
                 if (!r.ok()) return r.status();
                 *response = *std::move(r);
                 *changed = true;
                 return absl::OkStatus();
               });
}

grpc::ServerUnaryReactor* ChannelServiceImpl::GetChannel(grpc::CallbackServerContext* context,
                                                         const v1::GetChannelRequest* request,
                                                         v1::Channel* response) {
  return Serve(context, ctx_, "GetChannel", request->name(), false,
               [&](const Caller& caller, bool*) {
                 absl::StatusOr<v1::Channel> r = ctx_.registry->GetChannel(caller, request->name());
                 if (r.ok()) *response = *std::move(r);
                 return r.status();
               });
}

grpc::ServerUnaryReactor* ChannelServiceImpl::ListChannels(grpc::CallbackServerContext* context,
                                                           const v1::ListChannelsRequest* request,
                                                           v1::ListChannelsResponse* response) {
  return Serve(context, ctx_, "ListChannels", "", false, [&](const Caller& caller, bool*) {
    absl::StatusOr<v1::ListChannelsResponse> r = ctx_.registry->ListChannels(caller, *request);
    if (r.ok()) *response = *std::move(r);
    return r.status();
  });
}

grpc::ServerUnaryReactor* ChannelServiceImpl::DeleteChannel(grpc::CallbackServerContext* context,
                                                            const v1::DeleteChannelRequest* request,
                                                            v1::DeleteChannelResponse* response) {
  return Serve(context, ctx_, "DeleteChannel", request->name(), true,
               [&](const Caller& caller, bool* changed) {
                 absl::StatusOr<v1::DeleteChannelResponse> r =
                     ctx_.registry->DeleteChannel(caller, *request);
                 if (!r.ok()) return r.status();
                 *response = *std::move(r);
                 *changed = true;
                 return absl::OkStatus();
               });
}

grpc::ServerWriteReactor<v1::Event>* ChannelServiceImpl::WatchEvents(
    grpc::CallbackServerContext* context, const v1::WatchEventsRequest* request) {
  class Reject final : public grpc::ServerWriteReactor<v1::Event> {
   public:
    explicit Reject(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
    void OnDone() override { delete this; }
  };
  absl::Status status;
  absl::StatusOr<Caller> caller = Authenticate(context, ctx_);
  if (!caller.ok()) {
    status = caller.status();
  } else if (!request->channel().empty() && !ValidateChannelName(request->channel()).ok()) {
    status = absl::InvalidArgumentError(
        absl::StrCat("\"", request->channel().substr(0, 64), "\" is not a channel name"));
  } else if (absl::Status may = ctx_.registry->MayWatch(*caller, request->channel()); !may.ok()) {
    status = may;
  } else if (ctx_.events->subscribers() >= kMaxWatchers) {
    status = absl::ResourceExhaustedError(
        absl::StrCat(kMaxWatchers, " WatchEvents streams are open already; close one and retry"));
  }
  ctx_.metrics->CountControlRequest("WatchEvents", absl::StatusCodeToString(status.code()));
  if (!status.ok()) return new Reject(status);
  return new WatchReactor(ctx_.events, request->channel());
}

grpc::ServerUnaryReactor* ChannelServiceImpl::GetChannelStats(
    grpc::CallbackServerContext* context, const v1::GetChannelStatsRequest* request,
    v1::ChannelStats* response) {
  return Serve(
      context, ctx_, "GetChannelStats", request->name(), false, [&](const Caller& caller, bool*) {
        absl::StatusOr<v1::ChannelStats> r = ctx_.registry->GetChannelStats(caller, *request);
        if (r.ok()) *response = *std::move(r);
        return r.status();
      });
}

grpc::ServerUnaryReactor* AccessServiceImpl::AddGrant(grpc::CallbackServerContext* context,
                                                      const v1::AddGrantRequest* request,
                                                      v1::GrantResponse* response) {
  return Serve(context, ctx_, "AddGrant", request->channel(), true,
               [&](const Caller& caller, bool* changed) {
                 absl::StatusOr<bool> r = ctx_.registry->AddGrant(caller, *request);
                 if (!r.ok()) return r.status();
                 response->set_changed(*r);
                 *changed = *r;
                 return absl::OkStatus();
               });
}

grpc::ServerUnaryReactor* AccessServiceImpl::RemoveGrant(grpc::CallbackServerContext* context,
                                                         const v1::RemoveGrantRequest* request,
                                                         v1::GrantResponse* response) {
  return Serve(context, ctx_, "RemoveGrant", request->channel(), true,
               [&](const Caller& caller, bool* changed) {
                 absl::StatusOr<bool> r = ctx_.registry->RemoveGrant(caller, *request);
                 if (!r.ok()) return r.status();
                 response->set_changed(*r);
                 *changed = *r;
                 return absl::OkStatus();
               });
}

grpc::ServerUnaryReactor* AccessServiceImpl::ListGrants(grpc::CallbackServerContext* context,
                                                        const v1::ListGrantsRequest* request,
                                                        v1::ListGrantsResponse* response) {
  return Serve(context, ctx_, "ListGrants", request->channel(), false,
               [&](const Caller& caller, bool*) {
                 absl::StatusOr<v1::ListGrantsResponse> r =
                     ctx_.registry->ListGrants(caller, request->channel());
                 if (r.ok()) *response = *std::move(r);
                 return r.status();
               });
}

grpc::ServerUnaryReactor* AccessServiceImpl::SetQuota(grpc::CallbackServerContext* context,
                                                      const v1::SetQuotaRequest* request,
                                                      v1::Quota* response) {
  return Serve(context, ctx_, "SetQuota", "", true, [&](const Caller& caller, bool* changed) {
    absl::StatusOr<v1::Quota> r = ctx_.registry->SetQuota(caller, *request);
    if (!r.ok()) return r.status();
    *response = *std::move(r);
    *changed = true;
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AccessServiceImpl::GetQuota(grpc::CallbackServerContext* context,
                                                      const v1::GetQuotaRequest* request,
                                                      v1::Quota* response) {
  return Serve(context, ctx_, "GetQuota", "", false, [&](const Caller& caller, bool*) {
    absl::StatusOr<v1::Quota> r = ctx_.registry->GetQuota(caller, request->uid());
    if (r.ok()) *response = *std::move(r);
    return r.status();
  });
}

}  // namespace shmlane::control
