// The shm transport's fanout endpoints (shm_transport.cc attaches them):
// the BROADCAST channel's publisher, copying every frame once into the one
// ring, and a subscriber reading every frame in place.
//
// Thread safety: each endpoint is used by one thread.
#pragma once

#include <memory>

#include "bench/loadgen/spec.h"
#include "bench/loadgen/transport.h"
#include "clients/broadcast.h"

namespace shmlane::bench::internal {

std::unique_ptr<FanoutPublisher> MakeShmPublisher(client::Publisher pub, const RunSpec& spec);
std::unique_ptr<FanoutSubscriber> MakeShmSubscriber(client::Subscriber sub, const RunSpec& spec);

}  // namespace shmlane::bench::internal
