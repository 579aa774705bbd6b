// What the kernel byte-stream baselines share (socket_transport.cc,
// socket_fanout.cc): frames as a 4-byte native-order length and the
// payload, blocking-or-not writes, and the fanout endpoints over sockets and
// pipes.
//
// Thread safety: functions without state; each endpoint is used by one
// thread.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "bench/loadgen/spec.h"
#include "bench/loadgen/transport.h"
#include "dataplane/unique_fd.h"

namespace shmlane::bench::internal {

inline constexpr size_t kLengthBytes = 4;

// Unavailable: "what: strerror(errno)".
absl::Status Errno(std::string_view what);
void SetNonBlocking(int fd, bool on);
void SetNoDelay(int fd);

// Writes all of iov, waiting per `mode` on EAGAIN (a blocking fd never
// sees it). Consumes iov.
absl::Status WriteAll(int fd, iovec* iov, int count, WaitMode mode, int64_t spin_ns);

// Fanout over the kernel: the publisher writes every frame (with RunSpec::batch
// > 1, every batch: one user-space buffer) to each subscriber's connection in
// turn with blocking writes (park) or non-blocking ones and poll (spin,
// adaptive). `listen_fd` (uds, tcp) is accepted from until `subscribers`
// connections exist; pipes arrive as `conns`, one write end per subscriber.
std::unique_ptr<FanoutPublisher> MakeFdPublisher(dataplane::UniqueFd listen_fd,
                                                 std::vector<dataplane::UniqueFd> conns, bool tcp,
                                                 const RunSpec& spec);
// One subscriber: reads its connection (non-blocking reads, then poll per
// the wait mode) until end of stream.
std::unique_ptr<FanoutSubscriber> MakeFdSubscriber(dataplane::UniqueFd fd, const RunSpec& spec);

}  // namespace shmlane::bench::internal
