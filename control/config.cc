#include "control/config.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "control/runtime_dir.h"
#include "control/text_format_errors.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "shmlane/version.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;
using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::util::TimeUtil;

constexpr size_t kMaxConfigBytes = 1 << 20;

// One flag per DaemonConfig field; the flag's name is the field's with
// dashes. The schema's own comments are not available at run time, so the
// help lives here (config_test checks that every field has an entry).
struct FlagDoc {
  const char* field;
  const char* value_name;  // nullptr: a switch (bool)
  const char* group;
  const char* help;
};

constexpr FlagDoc kFlagDocs[] = {
    {"runtime_dir", "DIR", "Files",
     "Directory for control.sock, attach.sock, shmlaned.lock and the state file. Default: "
     "$SHMLANE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shmlane, else /run/shmlane. Created 0755 if "
     "missing (one level: its parent must exist); refused if a symlink, owned by another uid, or "
     "group/world-writable."},
    {"state_file", "FILE", "Files",
     "Where channels, grants and quotas persist. Default: <runtime-dir>/shmlaned.state. Put it "
     "on persistent storage to survive reboots."},
    {"metrics_listen", "HOST:PORT|unix:PATH|none", "Listeners",
     "Prometheus /metrics listener. Default 127.0.0.1:9464; port 0 picks a free port. "
     "unix:PATH serves GET /metrics on a Unix socket, mode 0600 (0660 with --metrics-group), "
     "so that channel names are not shown to every local user."},
    {"listen", "HOST:PORT", "Listeners",
     "Also serve the control API on TCP. Loopback only unless --tls-cert and --tls-key are "
     "given. Default: none."},
    {"tls_cert", "FILE", "TLS", "PEM server certificate (chain) for --listen."},
    {"tls_key", "FILE", "TLS", "PEM private key for --tls-cert."},
    {"tls_client_ca", "FILE", "TLS",
     "PEM CA bundle; when set, TCP clients must present a certificate it signed (mTLS)."},
    {"admin_group", "GROUP", "Access",
     "Make control.sock 0660 owned by this group (default: 0600, daemon user only). Whoever "
     "can connect to control.sock is an administrator."},
    {"attach_group", "GROUP", "Access",
     "Make attach.sock 0660 owned by this group (default: 0666; every attach is still checked "
     "against the channel's grants)."},
    {"handshake_timeout", "DURATION", "Limits",
     "Close attach connections that send no AttachRequest within this time. Default 5s "
     "(units: ms, s, m; between 1ms and 10m)."},
    {"per_lane_metrics", nullptr, "Listeners",
     "Also export per-lane series (label lane). Off by default: lanes come and go, so their "
     "series are unbounded over time."},
    {"max_connections", "N", "Limits",
     "Most attach connections at once (handshaking or attached); more are closed at accept. "
     "Default 4096 (1..1000000)."},
    {"control_mode", "0600|0666", "Access",
     "Mode of control.sock. 0600 (default; 0660 with --admin-group): administrators only. "
     "0666: every local user may connect; each call is authorized from the caller's "
     "SO_PEERCRED identity (non-administrators manage only channels they own or administer)."},
    {"health_listen", "HOST:PORT", "Listeners",
     "Plaintext TCP listener that serves grpc.health.v1 and nothing else, for kubelet probes. "
     "Default: none."},
    {"tls_admins", "NAME", "TLS",
     "Repeatable. A TLS client whose certificate names NAME (subject CN or a subjectAltName) "
     "is an administrator over --listen; other certificates are refused. Default: every "
     "certificate that --tls-client-ca signed."},
    {"max_connections_per_uid", "N", "Limits",
     "Most attach connections of one uid at once. Default 1024."},
    {"max_handshakes_per_uid", "N", "Limits",
     "Most attach connections of one uid that have not sent their AttachRequest yet. Default "
     "64."},
    {"max_queued_fds", "N", "Limits",
     "Most file descriptors waiting in all attach send queues together; beyond it the "
     "connection holding the most is disconnected. Default 65536."},
    {"max_queue_age", "DURATION", "Limits",
     "A connection whose oldest unsent attach message is older than this is disconnected. "
     "Default 30s."},
    {"audit_log", "FILE|none", "Files",
     "JSON-lines log of every state-changing call with its caller. Default: "
     "<runtime-dir>/audit.log (0600)."},
    {"audit_log_max_bytes", "BYTES", "Files",
     "Rotate the audit log to FILE.1 beyond this size. Default 16777216."},
    {"declare", "FILE", "Files",
     "Channels, grants and quotas to reconcile to: text-format shmlane.v1.Declarations "
     "(protos/shmlane/v1/declarations.proto). Applied at start (refused if invalid), again when "
     "the file changes (a ConfigMap's symlink swap included) and on SIGHUP. Default: none."},
    {"on_stop", "close|keep", "Lifecycle",
     "What SIGTERM does to live lanes. close (default): close every lane and wake every "
     "blocked producer, consumer, client and server with \"closed\" (a pod going away). keep: "
     "leave the lanes open; clients keep streaming over shared memory while no daemon runs "
     "(an upgrade: the clients hand their lanes back to the next daemon, see --resume-grace)."},
    {"resume_grace", "DURATION", "Lifecycle",
     "After a restart, how long lanes found in the state file wait for their holders to hand "
     "them back (resume) before they are retired, closed for whichever side came back. "
     "Default 10s (100ms..1h)."},
    {"replace", nullptr, "Lifecycle",
     "Planned restart: if another shmlaned holds <runtime-dir>/shmlaned.lock, send it SIGTERM "
     "and start once it has saved its state and exited (at most --replace-timeout). It is "
     "signalled only if it is a shmlaned of this uid that has the lock file open; anything "
     "else holding the lock is refused, unsignalled. With --on-stop=keep on the old daemon, "
     "clients' lanes stream on and resume with this one."},
    {"replace_timeout", "DURATION", "Lifecycle",
     "With --replace: how long to wait for the old daemon to exit. Past it shmlaned exits 2 "
     "and starts nothing (the old daemon has been sent SIGTERM and still stops). Default 30s "
     "(100ms..1h)."},
    {"lock_wait", "DURATION", "Lifecycle",
     "Without --replace: wait up to this long for another process to release "
     "<runtime-dir>/shmlaned.lock, signalling nobody (a supervisor stops the old daemon). "
     "Default 0s: refuse at once, exit 2 (0..1h)."},
    {"max_control_connections_per_uid", "N", "Limits",
     "Most control.sock connections of one uid at once (root and the daemon's uid exempt); "
     "more are closed at accept. Default 64 (1..1000000)."},
    {"metrics_group", "GROUP", "Access",
     "With --metrics-listen unix:PATH, make the socket 0660 owned by this group (default "
     "0600: the daemon's user only)."},
};

std::string FlagName(absl::string_view field) {
  return absl::StrCat("--", absl::StrReplaceAll(field, {{"_", "-"}}));
}

// Where a field's value came from, for error messages.
class Origins {
 public:
  void SetFlag(const std::string& field) { origin_[field] = FlagName(field); }
  void SetFile(const std::string& field, const std::string& where) { origin_[field] = where; }
  std::string Of(const std::string& field) const {
    auto it = origin_.find(field);
    return it == origin_.end() ? field : it->second;
  }

 private:
  std::map<std::string, std::string> origin_;
};

bool IsTextFormat(const std::string& path) {
  return absl::EndsWith(path, ".textproto") || absl::EndsWith(path, ".txtpb") ||
         absl::EndsWith(path, ".pbtxt");
}

// The 1-based line of the first `"key"` in JSON text, or 0.
int JsonLineOf(absl::string_view text, absl::string_view key) {
  const size_t at = text.find(absl::StrCat("\"", key, "\""));
  if (at == absl::string_view::npos) return 0;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + at, '\n'));
}

absl::StatusOr<v1::DaemonConfig> ParseConfigText(const std::string& path, const std::string& text,
                                                 Origins* origins) {
  v1::DaemonConfig out;
  const Descriptor* d = v1::DaemonConfig::descriptor();
  if (IsTextFormat(path)) {
    google::protobuf::TextFormat::Parser parser;
    TextFormatErrors errors(path);
    google::protobuf::TextFormat::ParseInfoTree tree;
    parser.RecordErrorsTo(&errors);
    parser.WriteLocationsTo(&tree);
    if (!parser.ParseFromString(text, &out)) {
      return absl::InvalidArgumentError(errors.first().empty() ? absl::StrCat(path, ": unparsable")
                                                               : errors.first());
    }
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->is_repeated() && out.GetReflection()->FieldSize(out, f) == 0) continue;
      const google::protobuf::TextFormat::ParseLocation loc =
          tree.GetLocation(f, f->is_repeated() ? 0 : -1);
      if (loc.line >= 0) {
        origins->SetFile(d->field(i)->name(),
                         absl::StrCat(path, ":", loc.line + 1, ": ", d->field(i)->name()));
      }
    }
    return out;
  }
  if (absl::EndsWith(path, ".json")) {
    google::protobuf::util::JsonParseOptions options;  // unknown fields are errors
    const auto s = google::protobuf::util::JsonStringToMessage(text, &out, options);
    if (!s.ok()) {
      const std::string message(s.message().data(), s.message().size());
      // Protobuf's JSON parser starts its message with the field ("bogus:
      // Cannot find field.") but gives no line: find the key in the text.
      std::string where = path;
      const std::string key = message.substr(0, message.find(':'));
      const std::string leaf =
          key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
      if (const int line = JsonLineOf(text, leaf); line > 0) where = absl::StrCat(path, ":", line);
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", message));
    }
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      const bool set = f->is_repeated() ? out.GetReflection()->FieldSize(out, f) > 0
                                        : out.GetReflection()->HasField(out, f);
      if (!set) continue;
      int line = JsonLineOf(text, f->json_name());
      if (line == 0) line = JsonLineOf(text, f->name());
      origins->SetFile(f->name(), absl::StrCat(path, ":", line, ": ", f->name()));
    }
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--config ", path,
                   ": unknown file type; name it *.textproto (protobuf text format) or *.json (see "
                   "deploy/config/shmlaned.textproto)"));
}

// Sets `field` of `config` from a flag's text.
absl::Status SetFromFlag(const FieldDescriptor* field, const std::string& value,
                         v1::DaemonConfig* config) {
  const google::protobuf::Reflection* r = config->GetReflection();
  switch (field->type()) {
    case FieldDescriptor::TYPE_STRING:
      if (field->is_repeated()) {
        r->AddString(config, field, value);
      } else {
        r->SetString(config, field, value);
      }
      return absl::OkStatus();
    case FieldDescriptor::TYPE_UINT64: {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(value, &n)) {
        return absl::InvalidArgumentError(absl::StrCat("expected a number, got \"", value, "\""));
      }
      r->SetUInt64(config, field, n);
      return absl::OkStatus();
    }
    case FieldDescriptor::TYPE_BOOL: {
      bool b = true;
      if (!value.empty() && !absl::SimpleAtob(value, &b)) {
        return absl::InvalidArgumentError(
            absl::StrCat("expected true or false, got \"", value, "\""));
      }
      r->SetBool(config, field, b);
      return absl::OkStatus();
    }
    case FieldDescriptor::TYPE_UINT32: {
      uint32_t n = 0;
      if (!absl::SimpleAtoi(value, &n)) {
        return absl::InvalidArgumentError(absl::StrCat("expected a number, got \"", value, "\""));
      }
      r->SetUInt32(config, field, n);
      return absl::OkStatus();
    }
    case FieldDescriptor::TYPE_MESSAGE: {
      absl::Duration d;
      if (field->message_type() != google::protobuf::Duration::descriptor() ||
          !absl::ParseDuration(value, &d)) {
        return absl::InvalidArgumentError(
            absl::StrCat("expected a duration such as 5s or 250ms, got \"", value, "\""));
      }
      r->MutableMessage(config, field)
          ->CopyFrom(TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d)));
      return absl::OkStatus();
    }
    default:
      return absl::InternalError(absl::StrCat("no flag parser for field ", field->name()));
  }
}

// `top` over `base`: set fields win, and a set message field replaces the
// one below as a whole (MergeFrom would mix a 2s file value with a 500ms flag).
void Overlay(const v1::DaemonConfig& top, v1::DaemonConfig* base) {
  base->MergeFrom(top);
  if (top.has_handshake_timeout()) *base->mutable_handshake_timeout() = top.handshake_timeout();
  if (top.has_max_queue_age()) *base->mutable_max_queue_age() = top.max_queue_age();
  if (top.has_resume_grace()) *base->mutable_resume_grace() = top.resume_grace();
  if (top.has_replace_timeout()) *base->mutable_replace_timeout() = top.replace_timeout();
  if (top.has_lock_wait()) *base->mutable_lock_wait() = top.lock_wait();
  // A list given again replaces the one below instead of growing it.
  if (top.tls_admins_size() > 0) *base->mutable_tls_admins() = top.tls_admins();
}

v1::DaemonConfig Defaults() {
  v1::DaemonConfig c;
  if (const char* env = std::getenv("SHMLANE_RUNTIME_DIR"); env != nullptr && *env != '\0') {
    c.set_runtime_dir(env);
  } else if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    c.set_runtime_dir(absl::StrCat(xdg, "/shmlane"));
  } else {
    c.set_runtime_dir("/run/shmlane");
  }
  c.set_metrics_listen("127.0.0.1:9464");
  *c.mutable_handshake_timeout() = TimeUtil::SecondsToDuration(5);
  c.set_per_lane_metrics(false);
  c.set_max_connections(4096);
  c.set_control_mode("0600");
  c.set_max_connections_per_uid(1024);
  c.set_max_handshakes_per_uid(64);
  c.set_max_queued_fds(65536);
  *c.mutable_max_queue_age() = TimeUtil::SecondsToDuration(30);
  *c.mutable_resume_grace() = TimeUtil::SecondsToDuration(10);
  c.set_replace(false);
  *c.mutable_replace_timeout() = TimeUtil::SecondsToDuration(30);
  *c.mutable_lock_wait() = TimeUtil::SecondsToDuration(0);
  c.set_audit_log_max_bytes(uint64_t{16} << 20);
  c.set_on_stop("close");
  c.set_max_control_connections_per_uid(64);
  return c;
}

// Checks the effective configuration and converts it.
absl::StatusOr<Config> ToConfig(const v1::DaemonConfig& c, const Origins& origins) {
  Config out;
  out.runtime_dir = c.runtime_dir();
  out.state_file = c.has_state_file() && !c.state_file().empty()
                       ? c.state_file()
                       : absl::StrCat(c.runtime_dir(), "/shmlaned.state");
  out.metrics_listen = c.metrics_listen();
  out.listen = c.listen();
  out.tls_cert = c.tls_cert();
  out.tls_key = c.tls_key();
  out.tls_client_ca = c.tls_client_ca();
  out.admin_group = c.admin_group();
  out.attach_group = c.attach_group();
  out.per_lane_metrics = c.per_lane_metrics();
  if (out.runtime_dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origins.Of("runtime_dir"), ": must not be empty"));
  }
  const absl::Duration handshake =
      absl::Nanoseconds(TimeUtil::DurationToNanoseconds(c.handshake_timeout()));
  if (handshake < absl::Milliseconds(1) || handshake > absl::Minutes(10)) {
    return absl::InvalidArgumentError(
        absl::StrCat(origins.Of("handshake_timeout"), ": expected a duration between 1ms and 10m",
                     " such as 5s, got ", absl::FormatDuration(handshake)));
  }
  out.handshake_timeout = handshake;
  if (c.max_connections() == 0 || c.max_connections() > 1000000) {
    return absl::InvalidArgumentError(absl::StrCat(
        origins.Of("max_connections"), ": expected 1..1000000, got ", c.max_connections()));
  }
  out.max_connections = c.max_connections();
  if (c.control_mode() == "0600") {
    out.control_mode = 0600;
  } else if (c.control_mode() == "0666") {
    out.control_mode = 0666;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        origins.Of("control_mode"), ": expected 0600 or 0666, got \"", c.control_mode(), "\""));
  }
  out.health_listen = c.health_listen();
  out.tls_admins.assign(c.tls_admins().begin(), c.tls_admins().end());
  for (const auto& [field, value] :
       {std::pair<const char*, uint32_t>{"max_connections_per_uid", c.max_connections_per_uid()},
        {"max_handshakes_per_uid", c.max_handshakes_per_uid()},
        {"max_queued_fds", c.max_queued_fds()},
        {"max_control_connections_per_uid", c.max_control_connections_per_uid()}}) {
    if (value == 0 || value > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat(origins.Of(field), ": expected 1..1000000, got ", value));
    }
  }
  out.max_connections_per_uid = c.max_connections_per_uid();
  out.max_handshakes_per_uid = c.max_handshakes_per_uid();
  out.max_queued_fds = c.max_queued_fds();
  out.max_control_connections_per_uid = c.max_control_connections_per_uid();
  out.metrics_group = c.metrics_group();
  if (absl::StartsWith(out.metrics_listen, "unix:") &&
      (out.metrics_listen.size() < 7 || out.metrics_listen[5] != '/')) {
    return absl::InvalidArgumentError(absl::StrCat(origins.Of("metrics_listen"),
                                                   ": expected unix:/absolute/path, got \"",
                                                   out.metrics_listen, "\""));
  }
  if (!out.metrics_group.empty() && !absl::StartsWith(out.metrics_listen, "unix:")) {
    return absl::InvalidArgumentError(
        absl::StrCat(origins.Of("metrics_group"), ": applies only to --metrics-listen unix:PATH"));
  }
  const absl::Duration age = absl::Nanoseconds(TimeUtil::DurationToNanoseconds(c.max_queue_age()));
  if (age < absl::Milliseconds(100) || age > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origins.Of("max_queue_age"), ": expected a duration between 100ms and 1h, got ",
        absl::FormatDuration(age)));
  }
  out.max_queue_age = age;
  const absl::Duration grace = absl::Nanoseconds(TimeUtil::DurationToNanoseconds(c.resume_grace()));
  if (grace < absl::Milliseconds(100) || grace > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(origins.Of("resume_grace"), ": expected a duration between 100ms and 1h, got ",
                     absl::FormatDuration(grace)));
  }
  out.resume_grace = grace;
  out.replace = c.replace();
  const absl::Duration replace_timeout =
      absl::Nanoseconds(TimeUtil::DurationToNanoseconds(c.replace_timeout()));
  if (replace_timeout < absl::Milliseconds(100) || replace_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origins.Of("replace_timeout"), ": expected a duration between 100ms and 1h, got ",
        absl::FormatDuration(replace_timeout)));
  }
  out.replace_timeout = replace_timeout;
  const absl::Duration lock_wait =
      absl::Nanoseconds(TimeUtil::DurationToNanoseconds(c.lock_wait()));
  if (lock_wait < absl::ZeroDuration() || lock_wait > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat(origins.Of("lock_wait"),
                                                   ": expected a duration between 0s and 1h, got ",
                                                   absl::FormatDuration(lock_wait)));
  }
  // Two waits for one lock would leave an operator guessing which applies.
  if (out.replace && lock_wait > absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origins.Of("lock_wait"),
                     " does not apply with --replace; use --replace-timeout to say how long "
                     "--replace waits"));
  }
  out.lock_wait = lock_wait;
  out.audit_log = c.audit_log() == "none" ? ""
                  : c.has_audit_log()     ? c.audit_log()
                                          : absl::StrCat(c.runtime_dir(), "/audit.log");
  if (c.audit_log_max_bytes() < 4096) {
    return absl::InvalidArgumentError(absl::StrCat(origins.Of("audit_log_max_bytes"),
                                                   ": expected at least 4096, got ",
                                                   c.audit_log_max_bytes()));
  }
  out.audit_log_max_bytes = c.audit_log_max_bytes();
  out.declare_file = c.declare();
  if (c.on_stop() == "close" || c.on_stop() == "keep") {
    out.close_lanes_on_stop = c.on_stop() == "close";
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(origins.Of("on_stop"), ": expected close or keep, got \"", c.on_stop(), "\""));
  }
  if (out.tls_cert.empty() != out.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!out.tls_client_ca.empty() && out.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  if (!out.tls_admins.empty() && out.tls_client_ca.empty()) {
    return absl::InvalidArgumentError("--tls-admins needs --tls-client-ca");
  }
  if (!out.listen.empty() && (out.tls_cert.empty() || out.tls_client_ca.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", out.listen,
        " needs --tls-cert, --tls-key and --tls-client-ca: over TCP a caller's identity is its "
        "client certificate, and plaintext TCP would make every local user (or any host that "
        "can reach the port) an administrator. For kubelet probes use --health-listen, which "
        "serves grpc.health.v1 only"));
  }

  return out;
}

// The flag parser. Values land in `values` as text; `app` tells which were
// given.
struct FlagSet {
  std::unique_ptr<CLI::App> app;
  std::string config_path;
  bool print_config = false;
  std::map<std::string, std::string> values;              // by field name
  std::map<std::string, bool> switches;                   // by field name (bool fields)
  std::map<std::string, std::vector<std::string>> lists;  // by field name (repeated fields)
  std::map<std::string, CLI::Option*> options;            // by field name
};

std::unique_ptr<FlagSet> MakeFlags() {
  auto flags = std::make_unique<FlagSet>();
  flags->app = std::make_unique<CLI::App>(
      "shmlaned is the shmlane daemon: it serves the gRPC control API on "
      "<runtime-dir>/control.sock, lets applications attach to channels through "
      "<runtime-dir>/attach.sock (shared-memory lanes handed over as memfds), and exports lane "
      "counters to Prometheus.",
      "shmlaned");
  CLI::App& app = *flags->app;
  app.set_version_flag("--version", std::string("shmlaned ") + SHMLANE_VERSION,
                       "Print the version and exit.");
  app.add_option("--config", flags->config_path,
                 "Read settings from FILE first: a shmlane.v1.DaemonConfig in protobuf text "
                 "format (*.textproto) or JSON (*.json) whose field names are the flags' with "
                 "underscores (runtime_dir for --runtime-dir). Flags given on the command line "
                 "win.")
      ->type_name("FILE")
      ->group("Files");
  app.add_flag("--print-config", flags->print_config,
               "Print the effective configuration (defaults, file and flags) in text format and "
               "exit.")
      ->group("Files");
  const Descriptor* d = v1::DaemonConfig::descriptor();
  for (const FlagDoc& doc : kFlagDocs) {
    const FieldDescriptor* field = d->FindFieldByName(doc.field);
    if (field == nullptr) continue;  // config_test keeps the table and the schema in step
    CLI::Option* option =
        doc.value_name == nullptr
            ? app.add_flag(FlagName(doc.field), flags->switches[doc.field], doc.help)
        : field->is_repeated()
            ? app.add_option(FlagName(doc.field), flags->lists[doc.field], doc.help)
                  ->type_name(doc.value_name)
            : app.add_option(FlagName(doc.field), flags->values[doc.field], doc.help)
                  ->type_name(doc.value_name);
    option->group(doc.group);
    flags->options[doc.field] = option;
  }
  app.footer(
      "Environment: SHMLANE_RUNTIME_DIR, XDG_RUNTIME_DIR (see --runtime-dir).\n"
      "Exit codes: 0 clean shutdown (SIGTERM/SIGINT), 1 runtime failure,\n"
      "2 bad configuration or unsafe runtime directory, or another daemon holds it\n"
      "(still, after --lock-wait or --replace-timeout).\n"
      "See docs/operations.md and docs/security.md.");
  return flags;
}

}  // namespace

absl::StatusOr<v1::DaemonConfig> ReadConfigFile(const std::string& path) {
  Origins origins;
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxConfigBytes);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--config: ", text.status().message()));
  }
  return ParseConfigText(path, *text, &origins);
}

std::string FormatConfig(const v1::DaemonConfig& config) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(config, &out);
  return absl::StrCat("# shmlaned effective configuration (shmlane.v1.DaemonConfig)\n", out);
}

absl::StatusOr<ParsedCommandLine> ParseCommandLine(const std::vector<std::string>& args) {
  ParsedCommandLine out;
  std::unique_ptr<FlagSet> flags = MakeFlags();
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    flags->app->parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    out.show_help = true;
    return out;
  } catch (const CLI::CallForVersion&) {
    out.show_version = true;
    return out;
  } catch (const CLI::ExtrasError& e) {
    std::string first = args.size() > 1 ? args.back() : "";
    for (size_t i = 1; i < args.size(); ++i) {
      if (absl::StrContains(e.what(), args[i])) {
        first = args[i];
        break;
      }
    }
    if (absl::StartsWith(first, "--")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag ", first.substr(0, first.find('=')), " (see shmlaned --help)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument \"", first, "\" (see shmlaned --help)"));
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(absl::StrCat(e.what(), " (see shmlaned --help)"));
  }
  Origins origins;
  v1::DaemonConfig effective = Defaults();
  if (!flags->config_path.empty()) {
    absl::StatusOr<std::string> text = ReadSmallFile(flags->config_path, kMaxConfigBytes);
    if (!text.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--config: ", text.status().message()));
    }
    absl::StatusOr<v1::DaemonConfig> file = ParseConfigText(flags->config_path, *text, &origins);
    if (!file.ok()) return file.status();
    Overlay(*file, &effective);
    out.config.config_file = flags->config_path;
  }
  v1::DaemonConfig from_flags;
  const Descriptor* d = v1::DaemonConfig::descriptor();
  for (const auto& [name, option] : flags->options) {
    if (option->count() == 0) continue;
    if (auto list = flags->lists.find(name); list != flags->lists.end()) {
      for (const std::string& item : list->second) {
        if (absl::Status s = SetFromFlag(d->FindFieldByName(name), item, &from_flags); !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(FlagName(name), ": ", s.message()));
        }
      }
      origins.SetFlag(name);
      continue;
    }
    auto sw = flags->switches.find(name);
    const std::string value =
        sw == flags->switches.end() ? flags->values[name] : (sw->second ? "true" : "false");
    if (absl::Status s = SetFromFlag(d->FindFieldByName(name), value, &from_flags); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(FlagName(name), ": ", s.message()));
    }
    origins.SetFlag(name);
  }
  Overlay(from_flags, &effective);
  if (!effective.has_state_file() || effective.state_file().empty()) {
    effective.set_state_file(absl::StrCat(effective.runtime_dir(), "/shmlaned.state"));
  }
  absl::StatusOr<Config> config = ToConfig(effective, origins);
  if (!config.ok()) return config.status();
  config->config_file = out.config.config_file;
  out.config = *std::move(config);
  out.effective = std::move(effective);
  out.print_config = flags->print_config;
  return out;
}

std::string HelpText() { return MakeFlags()->app->help(); }

}  // namespace shmlane::control
