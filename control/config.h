// Config: shmlaned's settings. Precedence, lowest first: embedded defaults,
// the SHMLANE_RUNTIME_DIR environment variable, the config file (--config
// FILE, `key = value` lines using the flag names without dashes), flags.
//
// Thread safety: plain value type; parsing is for the start-up thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace shmlane::control {

struct Config {
  std::string runtime_dir;  // default: $XDG_RUNTIME_DIR/shmlane, else /run/shmlane
  std::string state_file;   // default: <runtime_dir>/shmlaned.state
  std::string metrics_listen = "127.0.0.1:9464";  // "none" disables
  std::string listen;                             // TCP control listener, empty = none
  std::string tls_cert;                           // PEM files for the TCP listener
  std::string tls_key;
  std::string tls_client_ca;  // require client certificates signed by this CA
  std::string admin_group;    // control.sock 0660 with this group
  std::string attach_group;   // attach.sock 0660 with this group
  absl::Duration handshake_timeout = absl::Seconds(5);
  bool per_lane_metrics = false;
  uint32_t max_connections = 4096;
  std::string config_file;  // the file that was read, if any
};

// What the command line asked for besides a config.
struct ParsedCommandLine {
  Config config;
  bool show_help = false;
  bool show_version = false;
};

// Parses flags (--name=value or --name value), reading --config first.
// InvalidArgument names the offending flag or file line.
absl::StatusOr<ParsedCommandLine> ParseCommandLine(const std::vector<std::string>& args);

// The --help text.
std::string HelpText();

}  // namespace shmlane::control
