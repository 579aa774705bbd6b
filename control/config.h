// Config: shmlaned's settings. The schema is the protobuf message
// shmlane.v1.DaemonConfig (protos/shmlane/v1/config.proto): `--config FILE`
// holds one in text format (*.textproto, *.txtpb, *.pbtxt) or JSON (*.json),
// and every field has a flag of the same name with dashes (runtime_dir is
// --runtime-dir), parsed with CLI11. Precedence, lowest first: embedded
// defaults, the SHMLANE_RUNTIME_DIR / XDG_RUNTIME_DIR environment, the file,
// the flags. Config is the effective result in the types the daemon uses.
//
// Thread safety: plain value types; parsing is for the start-up thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "shmlane/v1/config.pb.h"

namespace shmlane::control {

struct Config {
  std::string runtime_dir;  // default: $XDG_RUNTIME_DIR/shmlane, else /run/shmlane
  std::string state_file;   // default: <runtime_dir>/shmlaned.state
  std::string metrics_listen = "127.0.0.1:9464";  // or "unix:PATH"; "none" disables
  std::string listen;                             // TCP control listener, empty = none
  std::string tls_cert;                           // PEM files for the TCP listener
  std::string tls_key;
  std::string tls_client_ca;  // require client certificates signed by this CA
  std::string admin_group;    // control.sock 0660 with this group
  std::string attach_group;   // attach.sock 0660 with this group
  absl::Duration handshake_timeout = absl::Seconds(5);
  bool per_lane_metrics = false;
  uint32_t max_connections = 4096;
  uint32_t control_mode = 0600;         // control.sock (0660 with admin_group)
  std::string health_listen;            // plaintext grpc.health.v1 only, empty = none
  std::vector<std::string> tls_admins;  // empty: every client-CA certificate
  uint32_t max_connections_per_uid = 1024;
  uint32_t max_handshakes_per_uid = 64;
  uint32_t max_queued_fds = 65536;
  absl::Duration max_queue_age = absl::Seconds(30);
  std::string audit_log;  // empty = none
  uint64_t audit_log_max_bytes = uint64_t{16} << 20;
  std::string declare_file;  // --declare: declarations to reconcile to, empty = none
  // --on-stop: close (true) or keep (false) live lanes on SIGTERM.
  bool close_lanes_on_stop = true;
  // --resume-grace: how long lanes restored from the state file wait for
  // their holders to resume before they are retired.
  absl::Duration resume_grace = absl::Seconds(10);
  // --replace: SIGTERM the shmlaned that holds the runtime directory's lock
  // and take over once it exited, waiting at most replace_timeout.
  bool replace = false;
  absl::Duration replace_timeout = absl::Seconds(30);
  // --lock-wait: without --replace, wait this long for the lock (0: refuse
  // at once).
  absl::Duration lock_wait = absl::ZeroDuration();
  uint32_t max_control_connections_per_uid = 64;  // root and the daemon's uid exempt
  std::string metrics_group;                      // unix: metrics socket 0660 with this group
  std::string config_file;                        // the file that was read, if any
};

// What the command line asked for besides a config.
struct ParsedCommandLine {
  Config config;
  // The effective configuration (defaults, file and flags), for --print-config.
  shmlane::v1::DaemonConfig effective;
  bool show_help = false;
  bool show_version = false;
  bool print_config = false;
};

// Parses flags (--name=value or --name value), reading --config first.
// InvalidArgument names the offending flag, or the file, line and field.
absl::StatusOr<ParsedCommandLine> ParseCommandLine(const std::vector<std::string>& args);

// Reads a DaemonConfig from `path`, text format or JSON by extension.
// InvalidArgument names the file, line and field.
absl::StatusOr<shmlane::v1::DaemonConfig> ReadConfigFile(const std::string& path);

// The effective configuration in text format, as --print-config shows it.
std::string FormatConfig(const shmlane::v1::DaemonConfig& config);

// The --help text.
std::string HelpText();

}  // namespace shmlane::control
