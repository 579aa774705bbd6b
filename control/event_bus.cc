#include "control/event_bus.h"

#include <utility>

#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"

namespace shmlane::control {

uint64_t EventBus::Subscribe(std::string channel, Sink sink) {
  absl::MutexLock lock(&mu_);
  const uint64_t handle = next_handle_++;
  subscribers_.emplace(handle, Subscriber{std::move(channel), std::move(sink)});
  return handle;
}

void EventBus::Unsubscribe(uint64_t handle) {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(handle);
}

void EventBus::Publish(shmlane::v1::Event event) {
  if (!event.has_time()) {
    *event.mutable_time() =
        google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::GetCurrentTimeNanos());
  }
  absl::MutexLock lock(&mu_);
  for (auto& [handle, subscriber] : subscribers_) {
    if (subscriber.channel.empty() || subscriber.channel == event.channel()) {
      subscriber.sink(event);
    }
  }
}

void EventBus::PublishStopping(const std::string& detail) {
  shmlane::v1::Event event;
  event.set_type(shmlane::v1::EVENT_TYPE_DAEMON_STOPPING);
  event.set_detail(detail);
  *event.mutable_time() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::GetCurrentTimeNanos());
  absl::MutexLock lock(&mu_);
  for (auto& [handle, subscriber] : subscribers_) subscriber.sink(event);
}

size_t EventBus::subscribers() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

}  // namespace shmlane::control
