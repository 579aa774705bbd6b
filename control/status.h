// Conversion of absl::Status to grpc::Status: the one place where the
// library's error model meets the wire.
//
// Thread safety: pure functions.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace shmlane::control {

// Same canonical code and message; OK maps to OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace shmlane::control
