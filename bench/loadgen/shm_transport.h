// The shm transport: the real shmlane path. Prepare() starts a private
// shmlaned in the run's temporary directory (--runtime-dir DIR
// --metrics-listen none), raises the uid's quota for the run's attachments and
// creates one channel through the gRPC control API: STREAM for stream and
// openloop (the server attaches as the consumer, each client as a producer),
// REQUEST_REPLY for pingpong (server and clients). The frames then move
// through shmlane::client and the daemon is off the data path.
//
// The control calls run in a short-lived helper process, because the parent
// must stay free of gRPC to fork the grpc baseline's processes later.
//
// Wait modes: spin polls the rings (TryWrite, Poll, ServeReady) and never
// parks; park uses the library's blocking calls with no spin; adaptive spins
// for RunSpec::spin, then parks on the doorbell.
//
// Thread safety: see transport.h.
#pragma once

#include <memory>

#include "bench/loadgen/transport.h"

namespace shmlane::bench {

std::unique_ptr<Transport> MakeShmTransport();

}  // namespace shmlane::bench
