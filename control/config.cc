#include "control/config.h"

#include <cstdlib>
#include <functional>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "control/runtime_dir.h"

namespace shmlane::control {
namespace {

struct Flag {
  const char* name;
  const char* value_name;  // nullptr: boolean switch
  const char* help;
  std::function<absl::Status(Config&, const std::string&)> set;
};

absl::Status ParseBool(const std::string& v, bool* out) {
  if (v.empty() || v == "true" || v == "1" || v == "yes") {
    *out = true;
  } else if (v == "false" || v == "0" || v == "no") {
    *out = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("expected true or false, got \"", v, "\""));
  }
  return absl::OkStatus();
}

const std::vector<Flag>& Flags() {
  static const auto* flags = new std::vector<Flag>{
      {"runtime-dir", "DIR",
       "Directory for control.sock, attach.sock, shmlaned.lock and the state file. Default: "
       "$SHMLANE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shmlane, else /run/shmlane. Created 0755 if "
       "missing; refused if a symlink, owned by another uid, or group/world-writable.",
       [](Config& c, const std::string& v) {
         c.runtime_dir = v;
         return absl::OkStatus();
       }},
      {"state-file", "FILE",
       "Where channels, grants and quotas persist. Default: <runtime-dir>/shmlaned.state. Put "
       "it on persistent storage to survive reboots.",
       [](Config& c, const std::string& v) {
         c.state_file = v;
         return absl::OkStatus();
       }},
      {"metrics-listen", "HOST:PORT|none",
       "Prometheus /metrics listener. Default 127.0.0.1:9464; port 0 picks a free port.",
       [](Config& c, const std::string& v) {
         c.metrics_listen = v;
         return absl::OkStatus();
       }},
      {"listen", "HOST:PORT",
       "Also serve the control API on TCP. Loopback only unless --tls-cert and --tls-key are "
       "given. Default: none.",
       [](Config& c, const std::string& v) {
         c.listen = v;
         return absl::OkStatus();
       }},
      {"tls-cert", "FILE", "PEM server certificate (chain) for --listen.",
       [](Config& c, const std::string& v) {
         c.tls_cert = v;
         return absl::OkStatus();
       }},
      {"tls-key", "FILE", "PEM private key for --tls-cert.",
       [](Config& c, const std::string& v) {
         c.tls_key = v;
         return absl::OkStatus();
       }},
      {"tls-client-ca", "FILE",
       "PEM CA bundle; when set, TCP clients must present a certificate it signed (mTLS).",
       [](Config& c, const std::string& v) {
         c.tls_client_ca = v;
         return absl::OkStatus();
       }},
      {"admin-group", "GROUP",
       "Make control.sock 0660 owned by this group (default: 0600, daemon user only). Whoever "
       "can connect to control.sock is an administrator.",
       [](Config& c, const std::string& v) {
         c.admin_group = v;
         return absl::OkStatus();
       }},
      {"attach-group", "GROUP",
       "Make attach.sock 0660 owned by this group (default: 0666; every attach is still "
       "checked against the channel's grants).",
       [](Config& c, const std::string& v) {
         c.attach_group = v;
         return absl::OkStatus();
       }},
      {"handshake-timeout", "DURATION",
       "Close attach connections that send no AttachRequest within this time. Default 5s "
       "(units: ms, s, m).",
       [](Config& c, const std::string& v) {
         absl::Duration d;
         if (!absl::ParseDuration(v, &d) || d <= absl::ZeroDuration() || d > absl::Minutes(10)) {
           return absl::InvalidArgumentError(
               absl::StrCat("expected a duration between 1ms and 10m such as 5s, got \"", v, "\""));
         }
         c.handshake_timeout = d;
         return absl::OkStatus();
       }},
      {"per-lane-metrics", nullptr,
       "Also export per-lane series (label lane). Off by default: lanes come and go, so their "
       "series are unbounded over time.",
       [](Config& c, const std::string& v) { return ParseBool(v, &c.per_lane_metrics); }},
      {"max-connections", "N",
       "Most attach connections at once (handshaking or attached); more are closed at accept. "
       "Default 4096.",
       [](Config& c, const std::string& v) {
         uint32_t n;
         if (!absl::SimpleAtoi(v, &n) || n == 0 || n > 1000000) {
           return absl::InvalidArgumentError(absl::StrCat("expected 1..1000000, got \"", v, "\""));
         }
         c.max_connections = n;
         return absl::OkStatus();
       }},
  };
  return *flags;
}

const Flag* FindFlag(absl::string_view name) {
  for (const Flag& f : Flags()) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

absl::Status ApplyConfigFile(const std::string& path, Config& config) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, 1 << 20);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--config: ", text.status().message()));
  }
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected `key = value`"));
    }
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    const Flag* flag = FindFlag(key);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": unknown key \"", key, "\" (see shmlaned --help)"));
    }
    if (absl::Status s = flag->set(config, value); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": ", key, ": ", s.message()));
    }
  }
  config.config_file = path;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedCommandLine> ParseCommandLine(const std::vector<std::string>& args) {
  ParsedCommandLine out;
  Config& config = out.config;
  if (const char* env = std::getenv("SHMLANE_RUNTIME_DIR"); env != nullptr && *env != '\0') {
    config.runtime_dir = env;
  } else if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    config.runtime_dir = absl::StrCat(xdg, "/shmlane");
  } else {
    config.runtime_dir = "/run/shmlane";
  }
  // Split into (name, value) pairs first so that --config applies before the
  // other flags regardless of position.
  std::vector<std::pair<const Flag*, std::string>> settings;
  std::string config_path;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") {
      out.show_help = true;
      continue;
    }
    if (arg == "--version") {
      out.show_version = true;
      continue;
    }
    if (arg.substr(0, 2) != "--") {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", arg, "\" (see shmlaned --help)"));
    }
    arg.remove_prefix(2);
    std::string name(arg), value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
      has_value = true;
    }
    if (name == "config") {
      if (!has_value) {
        if (i + 1 >= args.size()) return absl::InvalidArgumentError("--config needs a FILE");
        value = args[++i];
      }
      config_path = value;
      continue;
    }
    const Flag* flag = FindFlag(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see shmlaned --help)"));
    }
    if (!has_value && flag->value_name != nullptr) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs ", flag->value_name));
      }
      value = args[++i];
    }
    settings.emplace_back(flag, value);
  }
  if (out.show_help || out.show_version) return out;
  if (!config_path.empty()) {
    if (absl::Status s = ApplyConfigFile(config_path, config); !s.ok()) return s;
  }
  for (const auto& [flag, value] : settings) {
    if (absl::Status s = flag->set(config, value); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag->name, ": ", s.message()));
    }
  }
  if (config.state_file.empty()) config.state_file = config.runtime_dir + "/shmlaned.state";
  if (!config.tls_cert.empty() != !config.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!config.tls_client_ca.empty() && config.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  return out;
}

std::string HelpText() {
  std::string out =
      "Usage: shmlaned [FLAGS]\n"
      "\n"
      "shmlaned is the shmlane daemon: it serves the gRPC control API on\n"
      "<runtime-dir>/control.sock, lets applications attach to channels through\n"
      "<runtime-dir>/attach.sock (shared-memory lanes handed over as memfds), and\n"
      "exports lane counters to Prometheus.\n"
      "\n"
      "Flags (also accepted as `key = value` lines in --config FILE, without the\n"
      "dashes; flags given on the command line win):\n"
      "  --config FILE\n"
      "      Read settings from FILE first.\n";
  for (const Flag& f : Flags()) {
    absl::StrAppend(&out, "  --", f.name, f.value_name ? absl::StrCat(" ", f.value_name) : "",
                    "\n");
    // Wrap the help at ~76 columns.
    std::string line = "     ";
    for (absl::string_view word : absl::StrSplit(f.help, ' ')) {
      if (line.size() + word.size() + 1 > 78) {
        absl::StrAppend(&out, line, "\n");
        line = "     ";
      }
      absl::StrAppend(&line, " ", word);
    }
    absl::StrAppend(&out, line, "\n");
  }
  absl::StrAppend(&out,
                  "  --version\n"
                  "      Print the version and exit.\n"
                  "  --help\n"
                  "      Print this text and exit.\n"
                  "\n"
                  "Environment: SHMLANE_RUNTIME_DIR, XDG_RUNTIME_DIR (see --runtime-dir).\n"
                  "Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 runtime failure,\n"
                  "2 bad configuration or unsafe runtime directory, or another daemon holds it.\n"
                  "See docs/operations.md and docs/security.md.\n");
  return out;
}

}  // namespace shmlane::control
