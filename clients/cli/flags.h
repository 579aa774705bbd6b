// shmlanectl's command line: the CLI11 wiring of its global flags and
// subcommands, turned into an Invocation (which command, its gRPC request,
// and how to reach the daemon). Nothing here talks to the daemon; a command
// line that parses is fully validated (numbers, sizes, enum names,
// principals, labels), so a usage error never leaves a half-done change.
//
// Thread safety: ParseCommandLine is called once, from main.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "grpc/health/v1/health.pb.h"
#include "shmlane/v1/control.pb.h"

namespace shmlane::cli {

// Exit codes, documented in --help, docs/operations.md and scripts.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;       // the daemon refused or failed
inline constexpr int kExitUsage = 2;        // bad command line
inline constexpr int kExitUnavailable = 3;  // the daemon is unreachable

enum class Command {
  kChannelsCreate,
  kChannelsGet,
  kChannelsList,
  kChannelsDelete,
  kGrantsAdd,
  kGrantsRemove,
  kGrantsList,
  kQuotaSet,
  kQuotaGet,
  kStats,
  kWatch,
  kHealth,
  kTop,
};

// How to reach the daemon and how to print, from the global flags.
struct Connection {
  // --runtime-dir, else $SHMLANE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shmlane,
  // else /run/shmlane. Used when `server` is empty.
  std::string runtime_dir;
  std::string server;    // --server HOST:PORT; empty for DIR/control.sock
  std::string tls_ca;    // PEM file paths; empty when not given
  std::string tls_cert;  // given together with tls_key
  std::string tls_key;
  absl::Duration timeout = absl::Seconds(10);  // per-call deadline
  bool json = false;
};

// `shmlanectl top` (top.h).
struct TopOptions {
  absl::Duration interval = absl::Seconds(1);
  std::string sort = "frames";  // one of TopSortKeys()
  bool once = false;
};

// One parsed command line. Only the request of `command` is filled in.
struct Invocation {
  Connection connection;
  Command command = Command::kHealth;

  v1::CreateChannelRequest create_channel;
  v1::GetChannelRequest get_channel;
  v1::ListChannelsRequest list_channels;
  v1::DeleteChannelRequest delete_channel;
  std::string grant_channel;  // grants add/remove/list
  v1::Grant grant;            // grants add/remove
  v1::SetQuotaRequest set_quota;
  v1::GetQuotaRequest get_quota;
  v1::GetChannelStatsRequest stats;
  v1::WatchEventsRequest watch;
  uint64_t watch_count = 0;  // 0: until interrupted
  grpc::health::v1::HealthCheckRequest health;
  TopOptions top;
};

struct ParseOutcome {
  std::optional<Invocation> invocation;  // set when a command is to run
  int exit_code = kExitOk;               // otherwise: 0 after --help/--version, else kExitUsage
};

// Parses argv. --help (on any subcommand), --help-all and --version print to
// stdout; a usage error prints one line naming the offending argument to
// stderr. Neither leaves an invocation.
ParseOutcome ParseCommandLine(int argc, char** argv);

}  // namespace shmlane::cli
