// shmlanectl's flags and subcommands, wired with CLI11 (see flags.h). CLI11
// does the parsing, the typed conversions, `--flag value` and `--flag=value`,
// the generated --help and the errors; this file declares what exists and
// turns the result into request messages. Enum flags take the short names of
// the generated descriptors (shmlane/enum_names.h).
#include "clients/cli/flags.h"

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "clients/cli/top.h"
#include "shmlane/enum_names.h"
#include "shmlane/version.h"

namespace shmlane::cli {
namespace {

namespace v1 = ::shmlane::v1;

constexpr char kProgram[] = "shmlanectl";
constexpr char kConnectionGroup[] = "Connection";
constexpr char kOutputGroup[] = "Output";

constexpr char kTopFooter[] =
    R"(Global flags go before or after the command. Run `shmlanectl COMMAND --help`
for a command's flags, `shmlanectl --help-all` for every command.

SIZE accepts a plain byte count or a suffix: K, KiB, M, MiB, G, GiB (powers of 2).
Exit codes: 0 ok, 1 the daemon refused or failed, 2 usage error, 3 daemon unreachable
(also a TLS handshake the daemon refused, e.g. a missing or unknown client certificate).)";

constexpr char kCommandFooter[] =
    "Global flags (--runtime-dir, --server, --tls-*, --timeout, --json): shmlanectl --help.\n"
    "Exit codes: 0 ok, 1 the daemon refused or failed, 2 usage error, 3 daemon unreachable\n"
    "(also a TLS handshake the daemon refused).";

// "4096", "64K", "64KiB", "1M", "1MiB", "1G", "1GiB", "512B".
bool ParseSize(absl::string_view text, uint64_t* out) {
  static constexpr std::pair<const char*, uint64_t> kSuffixes[] = {{"KiB", 1ull << 10},
                                                                   {"MiB", 1ull << 20},
                                                                   {"GiB", 1ull << 30},
                                                                   {"K", 1ull << 10},
                                                                   {"M", 1ull << 20},
                                                                   {"G", 1ull << 30},
                                                                   {"B", 1}};
  uint64_t scale = 1;
  for (const auto& [suffix, factor] : kSuffixes) {
    if (absl::EndsWith(text, suffix)) {
      text.remove_suffix(std::strlen(suffix));
      scale = factor;
      break;
    }
  }
  uint64_t n;
  if (!absl::SimpleAtoi(text, &n) || n > UINT64_MAX / scale) return false;
  *out = n * scale;
  return true;
}

// Rewrites a SIZE into its byte count before CLI11 converts (and range
// checks) the number for the option's integer type.
CLI::Validator SizeTransform() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t bytes = 0;
        if (!ParseSize(text, &bytes)) {
          return absl::StrCat("\"", text, "\" is not a size (e.g. 4096, 64KiB, 1MiB)");
        }
        text = absl::StrCat(bytes);
        return "";
      },
      "", "SIZE");
}

// Accepts the short names of Enum (and what ParseShortName takes besides).
template <typename Enum>
CLI::Validator EnumCheck() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        absl::StatusOr<Enum> value = ParseShortName<Enum>(text);
        return value.ok() ? "" : std::string(value.status().message());
      },
      "", "ENUM");
}

CLI::Validator DurationCheck() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        absl::Duration d;
        return absl::ParseDuration(text, &d)
                   ? ""
                   : absl::StrCat("\"", text, "\" is not a duration (e.g. 5s, 500ms, 1m)");
      },
      "", "DURATION");
}

CLI::Validator LabelCheck() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const size_t eq = text.find('=');
        return eq == std::string::npos || eq == 0 ? absl::StrCat("\"", text, "\" is not KEY=VALUE")
                                                  : "";
      },
      "", "LABEL");
}

std::string DefaultRuntimeDir() {
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg) {
    return absl::StrCat(xdg, "/shmlane");
  }
  return "/run/shmlane";
}

// --uid/--gid/--anyone of one grants subcommand; exactly one is required.
struct PrincipalOptions {
  CLI::Option* uid = nullptr;
  CLI::Option* gid = nullptr;
  CLI::Option* anyone = nullptr;
};

// Every variable CLI11 writes into, and the subcommands to tell which ran.
struct Flags {
  // Global.
  std::string runtime_dir;
  std::string server;
  std::string tls_ca, tls_cert, tls_key;
  CLI::Option* server_option = nullptr;
  CLI::Option* tls_ca_option = nullptr;
  CLI::Option* tls_cert_option = nullptr;
  CLI::Option* tls_key_option = nullptr;
  std::string timeout = "10s";
  bool json = false;

  // channels create (the spec fields default to 0: the daemon's default).
  std::string name;
  std::string pattern = "stream";
  uint64_t ring_bytes = 0;
  uint32_t max_frame_bytes = 0;
  uint32_t max_producers = 0;
  std::string backpressure = "block";
  std::string wait_preference = "balanced";
  // BROADCAST only; empty/0: the daemon's default.
  std::string slow_subscriber_policy;
  uint32_t history_frames = 0;
  uint32_t max_subscribers = 0;
  uint32_t latency_sample_every = 0;
  bool no_latency_sampling = false;
  bool durable = false;
  std::vector<std::string> labels;
  uint32_t owner_uid = 0;
  CLI::Option* owner_uid_option = nullptr;
  // channels list / delete.
  uint32_t page_size = 0;
  bool force = false;

  // grants.
  std::string channel;
  uint32_t uid = 0;
  uint32_t gid = 0;
  bool anyone = false;
  std::string role;
  PrincipalOptions add_principal, remove_principal;

  // quota (also uses uid and max_frame_bytes).
  uint32_t max_channels = 0;
  uint64_t max_shm_bytes = 0;
  uint32_t max_attachments = 0;
  bool reset = false;

  // stats / watch / health.
  bool lanes = false;
  std::string watch_channel;
  uint64_t count = 0;
  std::string service;

  // top.
  std::string top_interval = "1s";
  std::string top_sort = "frames";
  bool top_once = false;

  // The subcommands, by the command they select.
  std::vector<std::pair<CLI::App*, Command>> leaves;
  std::vector<CLI::App*> groups;  // channels, grants, quota: need a leaf
};

void WireGlobal(CLI::App& app, Flags& f) {
  app.add_option("--runtime-dir", f.runtime_dir,
                 "Connect to DIR/control.sock (default: $XDG_RUNTIME_DIR/shmlane or /run/shmlane)")
      ->envname("SHMLANE_RUNTIME_DIR")
      ->type_name("DIR")
      ->group(kConnectionGroup);
  // --tls-* without --server and --tls-cert without --tls-key are checked
  // after parsing (CheckTls), with the messages scripts and tests know.
  f.server_option =
      app.add_option("--server", f.server,
                     "Connect to a TCP control listener instead (plaintext unless --tls-*)")
          ->type_name("HOST:PORT")
          ->group(kConnectionGroup);
  f.tls_ca_option =
      app.add_option("--tls-ca", f.tls_ca,
                     "TLS to --server, trusting this PEM CA bundle (default: the system's CAs)")
          ->type_name("FILE")
          ->group(kConnectionGroup);
  f.tls_cert_option =
      app.add_option(
             "--tls-cert", f.tls_cert,
             "PEM client certificate (chain), for shmlaned --tls-client-ca; needs --tls-key")
          ->type_name("FILE")
          ->group(kConnectionGroup);
  f.tls_key_option = app.add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert")
                         ->type_name("FILE")
                         ->group(kConnectionGroup);
  app.add_option("--timeout", f.timeout, "Per-call deadline")
      ->type_name("DURATION")
      ->check(DurationCheck())
      ->capture_default_str()
      ->group(kConnectionGroup);
  app.add_flag("--json", f.json, "Print JSON (proto field names) instead of tables")
      ->group(kOutputGroup);
}

void WireChannels(CLI::App& app, Flags& f) {
  CLI::App* channels = app.add_subcommand("channels",
                                          "Create, inspect and delete channels: create, get, list, "
                                          "delete")
                           ->alias("channel");
  f.groups.push_back(channels);

  CLI::App* create = channels->add_subcommand("create", "Create a channel");
  create->add_option("NAME", f.name, "Channel name: 1..63 of [a-z0-9._-]")->required();
  create->add_option("--pattern", f.pattern, "Who talks to whom")
      ->type_name(ShortNames<v1::ChannelPattern>())
      ->check(EnumCheck<v1::ChannelPattern>())
      ->capture_default_str();
  create
      ->add_option("--ring-bytes", f.ring_bytes,
                   "Ring size of every lane: a power of two, 4KiB..1GiB (0: 1MiB)")
      ->type_name("SIZE")
      ->transform(SizeTransform())
      ->capture_default_str();
  create
      ->add_option("--max-frame-bytes", f.max_frame_bytes,
                   "Largest frame, at most ring-bytes/2 - 16 (0: 64KiB or that bound)")
      ->type_name("SIZE")
      ->transform(SizeTransform())
      ->capture_default_str();
  create
      ->add_option("--max-producers", f.max_producers,
                   "Producers or clients attached at once, at most 4096 (0: 64)")
      ->type_name("N")
      ->capture_default_str();
  create->add_option("--backpressure", f.backpressure, "What a write does on a full ring")
      ->type_name(ShortNames<v1::BackpressurePolicy>())
      ->check(EnumCheck<v1::BackpressurePolicy>())
      ->capture_default_str();
  create
      ->add_option("--wait-preference", f.wait_preference,
                   "How endpoints wait when idle: balanced spins only when it pays and never "
                   "under a CPU quota; latency spins up to 50us; efficiency parks at once "
                   "(clients may override it)")
      ->type_name(ShortNames<v1::WaitPreference>())
      ->check(EnumCheck<v1::WaitPreference>())
      ->capture_default_str();
  create
      ->add_option("--slow-subscriber-policy", f.slow_subscriber_policy,
                   "Broadcast: what the publisher does about a subscriber that falls behind "
                   "(default block)")
      ->type_name(ShortNames<v1::SlowSubscriberPolicy>())
      ->check(EnumCheck<v1::SlowSubscriberPolicy>());
  create
      ->add_option("--history-frames", f.history_frames,
                   "Broadcast: frames a new subscriber receives first (0: live tail)")
      ->type_name("N")
      ->capture_default_str();
  create
      ->add_option("--max-subscribers", f.max_subscribers,
                   "Broadcast: subscribers attached at once, at most 1024 (0: 32)")
      ->type_name("N")
      ->capture_default_str();
  create
      ->add_option("--latency-sample-every", f.latency_sample_every,
                   "Timestamp one frame in N for the latency histogram (0: 64)")
      ->type_name("N")
      ->capture_default_str();
  create->add_flag("--no-latency-sampling", f.no_latency_sampling, "Turn latency sampling off");
  create->add_flag("--durable", f.durable,
                   "Stream or request/reply: the producers' lanes outlive the consumer (server), "
                   "which continues from its last released frame after a restart (at-least-once)");
  create->add_option("--label", f.labels, "Free-form label; repeat for more (at most 16)")
      ->type_name("KEY=VALUE")
      ->check(LabelCheck())
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);
  f.owner_uid_option =
      create
          ->add_option("--owner-uid", f.owner_uid,
                       "Owner: admin of it, charged for it (default: the daemon's uid)")
          ->type_name("UID");
  f.leaves.emplace_back(create, Command::kChannelsCreate);

  CLI::App* get = channels->add_subcommand("get", "Show one channel and its labels");
  get->add_option("NAME", f.name, "Channel name")->required();
  f.leaves.emplace_back(get, Command::kChannelsGet);

  CLI::App* list = channels->add_subcommand("list", "List every channel (all pages)");
  list->add_option("--page-size", f.page_size, "Channels per request, at most 1000 (0: 100)")
      ->type_name("N")
      ->check(CLI::Range(0u, 1000u))
      ->capture_default_str();
  f.leaves.emplace_back(list, Command::kChannelsList);

  CLI::App* del = channels->add_subcommand("delete", "Delete a channel");
  del->add_option("NAME", f.name, "Channel name")->required();
  del->add_flag("--force", f.force, "Delete even while processes are attached (their lanes close)");
  f.leaves.emplace_back(del, Command::kChannelsDelete);
}

void WirePrincipal(CLI::App* sub, Flags& f, PrincipalOptions* out) {
  CLI::Option_group* who =
      sub->add_option_group("Principal", "Who the grant is for: exactly one of");
  out->uid = who->add_option("--uid", f.uid, "A user id")->type_name("UID");
  out->gid =
      who->add_option("--gid", f.gid, "A group id (primary or supplementary)")->type_name("GID");
  out->anyone = who->add_flag("--anyone", f.anyone, "Every local user");
  who->require_option(1);
}

void WireGrants(CLI::App& app, Flags& f) {
  CLI::App* grants = app.add_subcommand("grants",
                                        "Who may produce, consume or administer a channel: add, "
                                        "remove, list")
                         ->alias("grant");
  f.groups.push_back(grants);
  const std::string roles = ShortNames<v1::GrantRole>();
  auto wire_change = [&](const char* verb, const char* help, PrincipalOptions* principal,
                         Command command) {
    CLI::App* sub = grants->add_subcommand(verb, help);
    sub->add_option("CHANNEL", f.channel, "Channel name")->required();
    WirePrincipal(sub, f, principal);
    sub->add_option("--role", f.role, "The role (admin implies produce and consume)")
        ->type_name(roles)
        ->check(EnumCheck<v1::GrantRole>())
        ->required();
    f.leaves.emplace_back(sub, command);
  };
  wire_change("add", "Grant a role on a channel", &f.add_principal, Command::kGrantsAdd);
  wire_change("remove", "Revoke a grant", &f.remove_principal, Command::kGrantsRemove);
  CLI::App* list = grants->add_subcommand("list", "List a channel's owner and grants");
  list->add_option("CHANNEL", f.channel, "Channel name")->required();
  f.leaves.emplace_back(list, Command::kGrantsList);
}

void WireQuota(CLI::App& app, Flags& f) {
  CLI::App* quota =
      app.add_subcommand("quota", "Per-uid limits and usage: set, get")->alias("quotas");
  f.groups.push_back(quota);

  CLI::App* set = quota->add_subcommand(
      "set", "Set a uid's limits (a limit left at 0 keeps its current value)");
  set->add_option("--uid", f.uid, "The user id")->type_name("UID")->required();
  set->add_option("--max-channels", f.max_channels, "Channels it may own")
      ->type_name("N")
      ->capture_default_str();
  set->add_option("--max-shm-bytes", f.max_shm_bytes, "Lane memory of its attachments")
      ->type_name("SIZE")
      ->transform(SizeTransform())
      ->capture_default_str();
  set->add_option("--max-attachments", f.max_attachments, "Attachments at once")
      ->type_name("N")
      ->capture_default_str();
  set->add_option("--max-frame-bytes", f.max_frame_bytes,
                  "Largest max-frame-bytes of a channel it owns")
      ->type_name("SIZE")
      ->transform(SizeTransform())
      ->capture_default_str();
  set->add_flag("--reset", f.reset, "Forget the uid's limits first (back to the defaults)");
  f.leaves.emplace_back(set, Command::kQuotaSet);

  CLI::App* get = quota->add_subcommand("get", "Show a uid's limits and usage");
  get->add_option("--uid", f.uid, "The user id")->type_name("UID")->required();
  f.leaves.emplace_back(get, Command::kQuotaGet);
}

void WireOthers(CLI::App& app, Flags& f) {
  CLI::App* stats = app.add_subcommand(
      "stats", "A channel's lane counters and latency (BROADCAST: subscribers and their lag)");
  stats->add_option("CHANNEL", f.channel, "Channel name")->required();
  stats->add_flag("--lanes", f.lanes, "Also show every live lane (BROADCAST: every subscriber)");
  f.leaves.emplace_back(stats, Command::kStats);

  CLI::App* watch = app.add_subcommand("watch", "Print the daemon's events as they happen");
  watch->add_option("--channel", f.watch_channel, "Only this channel's events (default: all)")
      ->type_name("NAME");
  watch->add_option("--count", f.count, "Stop after N events (0: until interrupted)")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber)  // CLI11 would take "-1" as 2^64 - 1
      ->capture_default_str();
  f.leaves.emplace_back(watch, Command::kWatch);

  CLI::App* health = app.add_subcommand("health",
                                        "The gRPC health of the daemon or of one service "
                                        "(exit 1 unless SERVING)");
  health->add_option("SERVICE", f.service, "e.g. shmlane.v1.ChannelService (default: the daemon)");
  f.leaves.emplace_back(health, Command::kHealth);

  CLI::App* top = app.add_subcommand(
      "top",
      "Live view of every channel: frames/s, MB/s, lag, p99, drops/s, backpressure/s, "
      "wake-ups per frame, producers (keys: q quits; n f m l p d b w c sort; r reverses)");
  top->add_option("--interval", f.top_interval,
                  "Time between refreshes (and between the samples of --once)")
      ->type_name("DURATION")
      ->check(DurationCheck())
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            absl::Duration d;
            return absl::ParseDuration(text, &d) && d >= absl::Milliseconds(100) &&
                           d <= absl::Hours(1)
                       ? ""
                       : "--interval must be between 100ms and 1h";
          },
          "", ""))
      ->capture_default_str();
  std::string keys;
  for (const std::string& k : TopSortKeys()) absl::StrAppend(&keys, keys.empty() ? "" : "|", k);
  top->add_option("--sort", f.top_sort, "Sort rows by (highest first; name: A to Z)")
      ->type_name(keys)
      ->check(CLI::IsMember(TopSortKeys()))
      ->capture_default_str();
  top->add_flag("--once", f.top_once,
                "Take two samples --interval apart, print one table (with --json: one JSON "
                "document) and exit");
  f.leaves.emplace_back(top, Command::kTop);
}

void Wire(CLI::App& app, Flags& f) {
  // Set before the subcommands are added: they inherit these.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.fallthrough();  // global flags after the command, too
  app.footer(kCommandFooter);
  app.failure_message([](const CLI::App* top, const CLI::Error& e) {
    // One line, naming the command whose --help explains it.
    std::string path = top->get_name();
    for (const CLI::App* sub = top; !sub->get_subcommands().empty();) {
      sub = sub->get_subcommands().front();
      absl::StrAppend(&path, " ", sub->get_name());
    }
    return absl::StrCat(kProgram, ": ", e.what(), " (see ", path, " --help)\n");
  });
  app.set_help_all_flag("--help-all", "Print the help of every command and exit");
  app.set_version_flag("--version", absl::StrCat(kProgram, " ", SHMLANE_VERSION),
                       "Print the version and exit");
  WireGlobal(app, f);
  WireChannels(app, f);
  WireGrants(app, f);
  WireQuota(app, f);
  WireOthers(app, f);
  app.footer(kTopFooter);
}

// Fills the one request of `command`; the values were checked while parsing.
void BuildRequest(Flags& f, Command command, Invocation* inv) {
  switch (command) {
    case Command::kChannelsCreate: {
      v1::ChannelSpec* spec = inv->create_channel.mutable_spec();
      spec->set_name(f.name);
      spec->set_pattern(*ParseShortName<v1::ChannelPattern>(f.pattern));
      spec->set_ring_bytes(f.ring_bytes);
      spec->set_max_frame_bytes(f.max_frame_bytes);
      spec->set_max_producers(f.max_producers);
      spec->set_backpressure(*ParseShortName<v1::BackpressurePolicy>(f.backpressure));
      spec->set_wait_preference(*ParseShortName<v1::WaitPreference>(f.wait_preference));
      if (!f.slow_subscriber_policy.empty()) {
        spec->set_slow_subscriber_policy(
            *ParseShortName<v1::SlowSubscriberPolicy>(f.slow_subscriber_policy));
      }
      spec->set_history_frames(f.history_frames);
      spec->set_max_subscribers(f.max_subscribers);
      spec->set_latency_sample_every(f.latency_sample_every);
      spec->set_disable_latency_sampling(f.no_latency_sampling);
      spec->set_durable(f.durable);
      for (const std::string& label : f.labels) {
        std::pair<std::string, std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
        (*spec->mutable_labels())[kv.first] = kv.second;
      }
      if (f.owner_uid_option->count() != 0) inv->create_channel.set_owner_uid(f.owner_uid);
      break;
    }
    case Command::kChannelsGet:
      inv->get_channel.set_name(f.name);
      break;
    case Command::kChannelsList:
      inv->list_channels.set_page_size(static_cast<int32_t>(f.page_size));
      break;
    case Command::kChannelsDelete:
      inv->delete_channel.set_name(f.name);
      inv->delete_channel.set_force(f.force);
      break;
    case Command::kGrantsAdd:
    case Command::kGrantsRemove: {
      const PrincipalOptions& p =
          command == Command::kGrantsAdd ? f.add_principal : f.remove_principal;
      v1::Principal* principal = inv->grant.mutable_principal();
      if (p.uid->count() != 0) {
        principal->set_uid(f.uid);
      } else if (p.gid->count() != 0) {
        principal->set_gid(f.gid);
      } else {
        principal->set_anyone(true);
      }
      inv->grant.set_role(*ParseShortName<v1::GrantRole>(f.role));
      inv->grant_channel = f.channel;
      break;
    }
    case Command::kGrantsList:
      inv->grant_channel = f.channel;
      break;
    case Command::kQuotaSet: {
      inv->set_quota.set_uid(f.uid);
      v1::QuotaLimits* limits = inv->set_quota.mutable_limits();
      limits->set_max_channels(f.max_channels);
      limits->set_max_shm_bytes(f.max_shm_bytes);
      limits->set_max_attachments(f.max_attachments);
      limits->set_max_frame_bytes(f.max_frame_bytes);
      inv->set_quota.set_reset_to_defaults(f.reset);
      break;
    }
    case Command::kQuotaGet:
      inv->get_quota.set_uid(f.uid);
      break;
    case Command::kStats:
      inv->stats.set_name(f.channel);
      inv->stats.set_include_lanes(f.lanes);
      break;
    case Command::kWatch:
      inv->watch.set_channel(f.watch_channel);
      inv->watch_count = f.count;
      break;
    case Command::kHealth:
      inv->health.set_service(f.service);
      break;
    case Command::kTop:
      (void)absl::ParseDuration(f.top_interval, &inv->top.interval);  // checked while parsing
      inv->top.sort = f.top_sort;
      inv->top.once = f.top_once;
      break;
  }
}

// The TLS flags' rules; false after printing the usage error.
bool CheckTls(const Flags& f) {
  const bool tls =
      f.tls_ca_option->count() + f.tls_cert_option->count() + f.tls_key_option->count() != 0;
  if (tls && f.server_option->count() == 0) {
    std::fprintf(stderr,
                 "%s: --tls-ca, --tls-cert and --tls-key apply to --server only (see %s --help)\n",
                 kProgram, kProgram);
    return false;
  }
  if ((f.tls_cert_option->count() == 0) != (f.tls_key_option->count() == 0)) {
    std::fprintf(stderr, "%s: --tls-cert and --tls-key go together (see %s --help)\n", kProgram,
                 kProgram);
    return false;
  }
  return true;
}

ParseOutcome Finish(CLI::App& app, Flags& f) {
  ParseOutcome outcome;
  for (auto& [sub, command] : f.leaves) {
    if (!sub->parsed()) continue;
    if (!CheckTls(f)) {
      outcome.exit_code = kExitUsage;
      return outcome;
    }
    Invocation inv;
    inv.connection.runtime_dir = f.runtime_dir.empty() ? DefaultRuntimeDir() : f.runtime_dir;
    inv.connection.server = f.server;
    inv.connection.tls_ca = f.tls_ca;
    inv.connection.tls_cert = f.tls_cert;
    inv.connection.tls_key = f.tls_key;
    (void)absl::ParseDuration(f.timeout, &inv.connection.timeout);  // checked by DurationCheck
    inv.connection.json = f.json;
    inv.command = command;
    BuildRequest(f, command, &inv);
    outcome.invocation = std::move(inv);
    return outcome;
  }
  outcome.exit_code = kExitUsage;
  for (CLI::App* group : f.groups) {
    if (!group->parsed()) continue;
    std::vector<std::string> verbs;
    for (const CLI::App* sub : group->get_subcommands({})) verbs.push_back(sub->get_name());
    std::fprintf(stderr, "%s: %s needs a command: %s (see %s %s --help)\n", kProgram,
                 group->get_name().c_str(), absl::StrJoin(verbs, ", ").c_str(), kProgram,
                 group->get_name().c_str());
    return outcome;
  }
  std::fputs(app.help().c_str(), stderr);  // no command at all
  return outcome;
}

}  // namespace

ParseOutcome ParseCommandLine(int argc, char** argv) {
  Flags flags;
  CLI::App app("shmlanectl: command-line client of shmlaned's control API", kProgram);
  try {
    Wire(app, flags);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Prints the help (stdout), the version, or the one-line failure (stderr).
    ParseOutcome outcome;
    outcome.exit_code = app.exit(e) == 0 ? kExitOk : kExitUsage;
    return outcome;
  } catch (const CLI::Error& e) {  // a wiring mistake of ours (ConstructionError)
    std::fprintf(stderr, "%s: internal error in the flag definitions: %s\n", kProgram, e.what());
    ParseOutcome outcome;
    outcome.exit_code = kExitUsage;
    return outcome;
  }
  return Finish(app, flags);
}

}  // namespace shmlane::cli
