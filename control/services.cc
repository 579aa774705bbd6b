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
absl::Status PersistAfter(const PersistFn& persist) {
  absl::Status s = persist();
  if (s.ok()) return s;
  return absl::InternalError(absl::StrCat(
      "the change is applied but could not be saved, so a restart would lose it: ", s.message(),
      "; fix the state file's storage and repeat the request"));
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
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

ChannelServiceImpl::ChannelServiceImpl(Registry* registry, EventBus* events, DaemonMetrics* metrics,
                                       PersistFn persist)
    : registry_(registry), events_(events), metrics_(metrics), persist_(std::move(persist)) {}

grpc::ServerUnaryReactor* ChannelServiceImpl::CreateChannel(grpc::CallbackServerContext* context,
                                                            const v1::CreateChannelRequest* request,
                                                            v1::Channel* response) {
  absl::StatusOr<v1::Channel> r = registry_->CreateChannel(*request);
  absl::Status status = r.status();
  if (r.ok()) {
    *response = *std::move(r);
    status = PersistAfter(persist_);
  }
  return Done(context, metrics_, "CreateChannel", status);
}

grpc::ServerUnaryReactor* ChannelServiceImpl::GetChannel(grpc::CallbackServerContext* context,
                                                         const v1::GetChannelRequest* request,
                                                         v1::Channel* response) {
  absl::StatusOr<v1::Channel> r = registry_->GetChannel(request->name());
  const absl::Status status = r.status();
  if (r.ok()) *response = *std::move(r);
  return Done(context, metrics_, "GetChannel", status);
}

grpc::ServerUnaryReactor* ChannelServiceImpl::ListChannels(grpc::CallbackServerContext* context,
                                                           const v1::ListChannelsRequest* request,
                                                           v1::ListChannelsResponse* response) {
  absl::StatusOr<v1::ListChannelsResponse> r = registry_->ListChannels(*request);
  const absl::Status status = r.status();
  if (r.ok()) *response = *std::move(r);
  return Done(context, metrics_, "ListChannels", status);
}

grpc::ServerUnaryReactor* ChannelServiceImpl::DeleteChannel(grpc::CallbackServerContext* context,
                                                            const v1::DeleteChannelRequest* request,
                                                            v1::DeleteChannelResponse* response) {
  absl::StatusOr<v1::DeleteChannelResponse> r = registry_->DeleteChannel(*request);
  absl::Status status = r.status();
  if (r.ok()) {
    *response = *std::move(r);
    status = PersistAfter(persist_);
  }
  return Done(context, metrics_, "DeleteChannel", status);
}

grpc::ServerWriteReactor<v1::Event>* ChannelServiceImpl::WatchEvents(
    grpc::CallbackServerContext* /*context*/, const v1::WatchEventsRequest* request) {
  class Reject final : public grpc::ServerWriteReactor<v1::Event> {
   public:
    explicit Reject(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
    void OnDone() override { delete this; }
  };
  absl::Status status;
  if (!request->channel().empty() && !ValidateChannelName(request->channel()).ok()) {
    status = absl::InvalidArgumentError(
        absl::StrCat("\"", request->channel().substr(0, 64), "\" is not a channel name"));
  } else if (events_->subscribers() >= kMaxWatchers) {
    status = absl::ResourceExhaustedError(
        absl::StrCat(kMaxWatchers, " WatchEvents streams are open already; close one and retry"));
  }
  metrics_->CountControlRequest("WatchEvents", absl::StatusCodeToString(status.code()));
  if (!status.ok()) return new Reject(status);
  return new WatchReactor(events_, request->channel());
}

grpc::ServerUnaryReactor* ChannelServiceImpl::GetChannelStats(
    grpc::CallbackServerContext* context, const v1::GetChannelStatsRequest* request,
    v1::ChannelStats* response) {
  absl::StatusOr<v1::ChannelStats> r = registry_->GetChannelStats(*request);
  const absl::Status status = r.status();
  if (r.ok()) *response = *std::move(r);
  return Done(context, metrics_, "GetChannelStats", status);
}

AccessServiceImpl::AccessServiceImpl(Registry* registry, DaemonMetrics* metrics, PersistFn persist)
    : registry_(registry), metrics_(metrics), persist_(std::move(persist)) {}

grpc::ServerUnaryReactor* AccessServiceImpl::AddGrant(grpc::CallbackServerContext* context,
                                                      const v1::AddGrantRequest* request,
                                                      v1::GrantResponse* response) {
  absl::StatusOr<bool> r = registry_->AddGrant(*request);
  absl::Status status = r.status();
  if (r.ok()) {
    response->set_changed(*r);
    if (*r) status = PersistAfter(persist_);
  }
  return Done(context, metrics_, "AddGrant", status);
}

grpc::ServerUnaryReactor* AccessServiceImpl::RemoveGrant(grpc::CallbackServerContext* context,
                                                         const v1::RemoveGrantRequest* request,
                                                         v1::GrantResponse* response) {
  absl::StatusOr<bool> r = registry_->RemoveGrant(*request);
  absl::Status status = r.status();
  if (r.ok()) {
    response->set_changed(*r);
    if (*r) status = PersistAfter(persist_);
  }
  return Done(context, metrics_, "RemoveGrant", status);
}

grpc::ServerUnaryReactor* AccessServiceImpl::ListGrants(grpc::CallbackServerContext* context,
                                                        const v1::ListGrantsRequest* request,
                                                        v1::ListGrantsResponse* response) {
  absl::StatusOr<v1::ListGrantsResponse> r = registry_->ListGrants(request->channel());
  const absl::Status status = r.status();
  if (r.ok()) *response = *std::move(r);
  return Done(context, metrics_, "ListGrants", status);
}

grpc::ServerUnaryReactor* AccessServiceImpl::SetQuota(grpc::CallbackServerContext* context,
                                                      const v1::SetQuotaRequest* request,
                                                      v1::Quota* response) {
  absl::StatusOr<v1::Quota> r = registry_->SetQuota(*request);
  absl::Status status = r.status();
  if (r.ok()) {
    *response = *std::move(r);
    status = PersistAfter(persist_);
  }
  return Done(context, metrics_, "SetQuota", status);
}

grpc::ServerUnaryReactor* AccessServiceImpl::GetQuota(grpc::CallbackServerContext* context,
                                                      const v1::GetQuotaRequest* request,
                                                      v1::Quota* response) {
  absl::StatusOr<v1::Quota> r = registry_->GetQuota(request->uid());
  const absl::Status status = r.status();
  if (r.ok()) *response = *std::move(r);
  return Done(context, metrics_, "GetQuota", status);
}

}  // namespace shmlane::control
