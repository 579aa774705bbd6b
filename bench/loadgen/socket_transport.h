// Kernel byte-stream baselines: Unix stream sockets (uds), pipes (pipe) and
// loopback TCP (tcp). Frames travel as a 4-byte native-order length followed
// by the payload. With RunSpec::batch 1 a client makes one writev (length,
// payload) per frame; with batch N it appends up to N frames (and at most
// batch_bytes) to one user-space buffer and writes it with one call, flushing
// early when the sender has nothing more to send (openloop on schedule, the
// end of the run). A full socket buffer blocks that write (or, with a
// non-blocking wait mode, it continues after POLLOUT). Ping-pong never
// batches; the server echoes each frame with its own write.
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
