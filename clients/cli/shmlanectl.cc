// shmlanectl: command-line client of shmlaned's control API.
//
//   shmlanectl [--runtime-dir DIR | --server HOST:PORT] [--json] COMMAND ...
//
// Talks gRPC to DIR/control.sock (default: $SHMLANE_RUNTIME_DIR, else
// $XDG_RUNTIME_DIR/shmlane, else /run/shmlane) or to a TCP listener, over
// TLS (and mTLS with a client certificate) when --tls-* flags say so. Prints
// tables for people and, with --json, one JSON document per result for
// scripts. Exit codes: 0 success, 1 the daemon refused or failed (the gRPC
// code and message are printed), 2 usage error, 3 daemon unreachable.
//
// The parts: flags.{h,cc} declares the command line (CLI11) and builds the
// request, commands.{h,cc} sends it, output.{h,cc} prints tables and JSON.
#include "clients/cli/commands.h"
#include "clients/cli/flags.h"

int main(int argc, char** argv) {
  shmlane::cli::ParseOutcome parsed = shmlane::cli::ParseCommandLine(argc, argv);
  if (!parsed.invocation.has_value()) return parsed.exit_code;
  return shmlane::cli::Run(*parsed.invocation);
}
