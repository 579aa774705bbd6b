// EventBus: fan-out of control-plane events (channel created, attached, peer
// died, ...) to WatchEvents streams.
//
// Thread safety: all methods may be called from any thread. Sinks run while
// the bus's mutex is held, so a sink must not block and must not call back
// into the bus; after Unsubscribe() returns its sink is never called again.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "shmlane/v1/control.pb.h"

namespace shmlane::control {

class EventBus {
 public:
  using Sink = std::function<void(const shmlane::v1::Event&)>;

  // `channel` empty = every channel. Returns a handle for Unsubscribe.
  uint64_t Subscribe(std::string channel, Sink sink);
  void Unsubscribe(uint64_t handle);
  // Stamps the time if unset, then hands the event to matching sinks.
  void Publish(shmlane::v1::Event event);
  // Delivers a DAEMON_STOPPING event with `detail` to every subscriber,
  // whatever its channel filter (shutdown: each stream then ends).
  void PublishStopping(const std::string& detail);
  size_t subscribers() const;

 private:
  struct Subscriber {
    std::string channel;
    Sink sink;
  };
  mutable absl::Mutex mu_;
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Subscriber> subscribers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmlane::control
