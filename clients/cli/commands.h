// shmlanectl's commands: connects to the daemon as the Connection says
// (DIR/control.sock, or --server over plaintext, TLS or mTLS) and sends the
// Invocation's request, printing the result (output.h). Failures print the
// gRPC code and message on stderr.
//
// Thread safety: Run is called once, from main.
#pragma once

#include "clients/cli/flags.h"

namespace shmlane::cli {

// Runs the parsed command line; returns the exit code (kExitOk, kExitFailed
// when the daemon refused or failed, kExitUnavailable when it cannot be
// reached, kExitUsage when a --tls-* file cannot be read).
int Run(const Invocation& invocation);

}  // namespace shmlane::cli
