// Kernel byte-stream baselines: Unix stream sockets (uds), pipes (pipe) and
// loopback TCP (tcp). Frames travel as a 4-byte native-order length followed
// by the payload, one write system call per frame (no coalescing), so each
// send costs what a message-passing application pays per message.
//
// The server is one process with one epoll set over every connection (the
// fan-in shape of the shm transport). Pipes use one pipe per client for
// requests and, for pingpong, one per client for replies. TCP sets
// TCP_NODELAY on both ends.
//
// Thread safety: see transport.h.
#pragma once

#include <memory>

#include "bench/loadgen/transport.h"

namespace shmlane::bench {

// kind is kUds, kPipe or kTcp.
std::unique_ptr<Transport> MakeSocketTransport(TransportKind kind);

}  // namespace shmlane::bench
