// MakeTransport: the registry of transports compiled into this binary.
#include "absl/strings/str_cat.h"
#include "bench/loadgen/grpc_transport.h"
#include "bench/loadgen/socket_transport.h"
#include "bench/loadgen/transport.h"
#ifdef SHMLANE_BENCH_HAVE_SHM
#include "bench/loadgen/shm_transport.h"
#endif

namespace shmlane::bench {

absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(TransportKind kind) {
  switch (kind) {
    case TransportKind::kUds:
    case TransportKind::kPipe:
    case TransportKind::kTcp:
      return MakeSocketTransport(kind);
    case TransportKind::kGrpc:
      return MakeGrpcTransport();
    case TransportKind::kShm:
#ifdef SHMLANE_BENCH_HAVE_SHM
      return MakeShmTransport();
#else
      return absl::UnimplementedError(
          "this shmlane-bench was built without the shm transport (the client library or "
          "shmlaned was not part of the build)");
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown transport ", static_cast<int>(kind)));
}

}  // namespace shmlane::bench
