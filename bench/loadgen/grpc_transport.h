// The gRPC baseline: each client process opens one bidirectional stream
// (bench.proto) over a Unix socket, using the synchronous API with one
// Write() per frame; the server is one process using the callback API.
//
// gRPC does not survive fork() once initialized, so nothing here touches
// gRPC in the parent: the server and the clients create every gRPC object
// after they were forked. The wait mode does not apply (gRPC polls itself).
//
// Thread safety: see transport.h.
#pragma once

#include <memory>

#include "bench/loadgen/transport.h"

namespace shmlane::bench {

std::unique_ptr<Transport> MakeGrpcTransport();

}  // namespace shmlane::bench
