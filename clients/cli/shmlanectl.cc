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
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "shmlane/v1/control.grpc.pb.h"
#include "shmlane/version.h"

namespace shmlane::cli {
namespace {

namespace v1 = ::shmlane::v1;
using google::protobuf::util::TimeUtil;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnavailable = 3;

constexpr char kUsage[] =
    R"(Usage: shmlanectl [GLOBAL FLAGS] COMMAND [ARGS]

Global flags:
  --runtime-dir DIR     connect to DIR/control.sock (default: $SHMLANE_RUNTIME_DIR,
                        else $XDG_RUNTIME_DIR/shmlane, else /run/shmlane)
  --server HOST:PORT    connect to a TCP control listener instead (plaintext
                        unless a --tls-* flag is given)
  --tls-ca FILE         use TLS to --server, trusting this PEM CA bundle (without
                        it, --tls-cert alone uses TLS with the system's CAs)
  --tls-cert FILE       PEM client certificate (chain) for a daemon that requires
                        one (shmlaned --tls-client-ca); needs --tls-key
  --tls-key FILE        PEM private key of --tls-cert
  --timeout DURATION    per-call deadline (default 10s)
  --json                print JSON instead of tables
  --help                this text; --version prints the version

Commands:
  channels create NAME [--pattern stream|request-reply] [--ring-bytes SIZE]
                  [--max-frame-bytes SIZE] [--max-producers N]
                  [--backpressure block|fail|drop] [--latency-sample-every N]
                  [--no-latency-sampling] [--label KEY=VALUE]... [--owner-uid UID]
  channels get NAME
  channels list [--page-size N]
  channels delete NAME [--force]
  grants add|remove CHANNEL (--uid UID | --gid GID | --anyone)
                  --role produce|consume|admin
  grants list CHANNEL
  quota set --uid UID [--max-channels N] [--max-shm-bytes SIZE]
                  [--max-attachments N] [--max-frame-bytes SIZE] [--reset]
  quota get --uid UID
  stats CHANNEL [--lanes]
  watch [--channel NAME] [--count N]
  health [SERVICE]

SIZE accepts a plain byte count or a suffix: K, KiB, M, MiB, G, GiB (powers of 2).
Exit codes: 0 ok, 1 the daemon refused or failed, 2 usage error, 3 daemon unreachable.
)";

// Parsed command line: positional words and --flags (repeatable).
struct Args {
  std::vector<std::string> words;
  std::multimap<std::string, std::string> flags;

  bool Has(const std::string& name) const { return flags.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
  std::vector<std::string> All(const std::string& name) const {
    std::vector<std::string> out;
    auto [begin, end] = flags.equal_range(name);
    for (auto it = begin; it != end; ++it) out.push_back(it->second);
    return out;
  }
};

// Flags that take no value.
bool IsSwitch(absl::string_view name) {
  return name == "json" || name == "force" || name == "anyone" || name == "reset" ||
         name == "lanes" || name == "no-latency-sampling" || name == "help" || name == "version";
}

bool ParseArgs(int argc, char** argv, Args* out, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg.size() > 2 && arg.substr(0, 2) == "--") {
      arg.remove_prefix(2);
      std::string name(arg), value;
      if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
        name = std::string(arg.substr(0, eq));
        value = std::string(arg.substr(eq + 1));
      } else if (!IsSwitch(name)) {
        if (i + 1 >= argc) {
          *error = absl::StrCat("--", name, " needs a value");
          return false;
        }
        value = argv[++i];
      }
      out->flags.emplace(name, value);
    } else if (arg == "-h") {
      out->flags.emplace("help", "");
    } else {
      out->words.emplace_back(arg);
    }
  }
  return true;
}

bool ParseSize(const std::string& text, uint64_t* out) {
  static constexpr std::pair<const char*, uint64_t> kSuffixes[] = {{"KiB", 1ull << 10},
                                                                   {"MiB", 1ull << 20},
                                                                   {"GiB", 1ull << 30},
                                                                   {"K", 1ull << 10},
                                                                   {"M", 1ull << 20},
                                                                   {"G", 1ull << 30},
                                                                   {"B", 1}};
  absl::string_view number = text;
  uint64_t scale = 1;
  for (const auto& [suffix, factor] : kSuffixes) {
    if (absl::EndsWith(number, suffix)) {
      number.remove_suffix(std::strlen(suffix));
      scale = factor;
      break;
    }
  }
  uint64_t n;
  if (!absl::SimpleAtoi(number, &n) || n > UINT64_MAX / scale) return false;
  *out = n * scale;
  return true;
}

// Typed flag readers: on a bad value they print a usage error and return false.
bool FlagU64(const Args& args, const std::string& name, uint64_t* out, bool size = false) {
  if (!args.Has(name)) return true;
  const std::string v = args.Get(name);
  if (size ? ParseSize(v, out) : absl::SimpleAtoi(v, out)) return true;
  std::fprintf(stderr, "shmlanectl: --%s: \"%s\" is not a %s\n", name.c_str(), v.c_str(),
               size ? "size (e.g. 1MiB)" : "number");
  return false;
}

bool FlagU32(const Args& args, const std::string& name, uint32_t* out, bool size = false) {
  uint64_t v = *out;
  if (!FlagU64(args, name, &v, size)) return false;
  if (v > UINT32_MAX) {
    std::fprintf(stderr, "shmlanectl: --%s: %llu is too large\n", name.c_str(),
                 static_cast<unsigned long long>(v));
    return false;
  }
  *out = static_cast<uint32_t>(v);
  return true;
}

std::string DefaultRuntimeDir() {
  if (const char* env = std::getenv("SHMLANE_RUNTIME_DIR"); env != nullptr && *env) return env;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg) {
    return absl::StrCat(xdg, "/shmlane");
  }
  return "/run/shmlane";
}

bool ReadFile(const std::string& path, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  std::fclose(f);
  return true;
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

std::string CodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : absl::StrCat("CODE_", i);
}

std::string PatternName(v1::ChannelPattern p) {
  return p == v1::CHANNEL_PATTERN_REQUEST_REPLY ? "request-reply" : "stream";
}

std::string PolicyName(v1::BackpressurePolicy p) {
  switch (p) {
    case v1::BACKPRESSURE_POLICY_FAIL:
      return "fail";
    case v1::BACKPRESSURE_POLICY_DROP:
      return "drop";
    default:
      return "block";
  }
}

std::string RoleName(v1::GrantRole r) {
  switch (r) {
    case v1::GRANT_ROLE_PRODUCE:
      return "produce";
    case v1::GRANT_ROLE_CONSUME:
      return "consume";
    case v1::GRANT_ROLE_ADMIN:
      return "admin";
    default:
      return "?";
  }
}

std::string PrincipalName(const v1::Principal& p) {
  switch (p.kind_case()) {
    case v1::Principal::kUid:
      return absl::StrCat("uid:", p.uid());
    case v1::Principal::kGid:
      return absl::StrCat("gid:", p.gid());
    case v1::Principal::kAnyone:
      return "anyone";
    default:
      return "?";
  }
}

std::string EventName(v1::EventType t) {
  std::string name = v1::EventType_Name(t);
  if (absl::StartsWith(name, "EVENT_TYPE_")) name = name.substr(11);
  return absl::AsciiStrToLower(name);
}

// Prints rows as left-aligned columns.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string Dur(const google::protobuf::Duration& d) {
  const int64_t ns = TimeUtil::DurationToNanoseconds(d);
  if (ns == 0) return "-";
  if (ns < 1000) return absl::StrCat(ns, "ns");
  if (ns < 1000000) return absl::StrFormat("%.1fus", static_cast<double>(ns) / 1e3);
  return absl::StrFormat("%.1fms", static_cast<double>(ns) / 1e6);
}

class Cli {
 public:
  Cli(const std::shared_ptr<grpc::Channel>& channel, bool json, absl::Duration timeout,
      std::string target)
      : channels_(v1::ChannelService::NewStub(channel)),
        access_(v1::AccessService::NewStub(channel)),
        health_(grpc::health::v1::Health::NewStub(channel)),
        json_(json),
        timeout_(timeout),
        target_(std::move(target)) {}

  int Run(const Args& args);

 private:
  void Prepare(grpc::ClientContext* ctx) const {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  }
  int Fail(const grpc::Status& s) const {
    std::fprintf(stderr, "shmlanectl: %s: %s\n", CodeName(s.error_code()).c_str(),
                 s.error_message().c_str());
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      std::fprintf(stderr, "shmlanectl: is shmlaned running and serving %s?\n", target_.c_str());
      return kExitUnavailable;
    }
    return kExitFailed;
  }
  static int Usage(const std::string& message) {
    std::fprintf(stderr, "shmlanectl: %s (see shmlanectl --help)\n", message.c_str());
    return kExitUsage;
  }
  void PrintChannels(const std::vector<v1::Channel>& channels) const;
  int Channels(const Args& args);
  int Grants(const Args& args);
  int Quota(const Args& args);
  int Stats(const Args& args);
  int Watch(const Args& args);
  int Health(const Args& args);

  std::unique_ptr<v1::ChannelService::Stub> channels_;
  std::unique_ptr<v1::AccessService::Stub> access_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  const bool json_;
  const absl::Duration timeout_;
  const std::string target_;
};

int Cli::Run(const Args& args) {
  const std::string& command = args.words[0];
  if (command == "channels" || command == "channel") return Channels(args);
  if (command == "grants" || command == "grant") return Grants(args);
  if (command == "quota" || command == "quotas") return Quota(args);
  if (command == "stats") return Stats(args);
  if (command == "watch") return Watch(args);
  if (command == "health") return Health(args);
  return Usage(absl::StrCat("unknown command \"", command, "\""));
}

void Cli::PrintChannels(const std::vector<v1::Channel>& channels) const {
  std::vector<std::vector<std::string>> rows = {{"NAME", "PATTERN", "RING", "MAX_FRAME",
                                                 "PRODUCERS", "CONSUMER", "LANES", "OWNER",
                                                 "BACKPRESSURE"}};
  for (const v1::Channel& c : channels) {
    rows.push_back({c.spec().name(), PatternName(c.spec().pattern()),
                    absl::StrCat(c.spec().ring_bytes()), absl::StrCat(c.spec().max_frame_bytes()),
                    absl::StrCat(c.attached_producers(), "/", c.spec().max_producers()),
                    c.consumer_attached() ? "yes" : "no", absl::StrCat(c.lanes()),
                    absl::StrCat(c.owner_uid()), PolicyName(c.spec().backpressure())});
  }
  PrintTable(rows);
}

int Cli::Channels(const Args& args) {
  if (args.words.size() < 2) return Usage("channels needs create, get, list or delete");
  const std::string& verb = args.words[1];
  if (verb == "list") {
    v1::ListChannelsRequest req;
    uint32_t page_size = 0;
    if (!FlagU32(args, "page-size", &page_size)) return kExitUsage;
    req.set_page_size(static_cast<int32_t>(page_size));
    v1::ListChannelsResponse all;
    while (true) {
      grpc::ClientContext ctx;
      Prepare(&ctx);
      v1::ListChannelsResponse page;
      grpc::Status s = channels_->ListChannels(&ctx, req, &page);
      if (!s.ok()) return Fail(s);
      for (const auto& c : page.channels()) *all.add_channels() = c;
      if (page.next_page_token().empty()) break;
      req.set_page_token(page.next_page_token());
    }
    if (json_) {
      std::printf("%s\n", Json(all).c_str());
    } else {
      PrintChannels({all.channels().begin(), all.channels().end()});
    }
    return kExitOk;
  }
  if (args.words.size() < 3) return Usage(absl::StrCat("channels ", verb, " needs a NAME"));
  const std::string& name = args.words[2];
  if (verb == "create") {
    v1::CreateChannelRequest req;
    v1::ChannelSpec* spec = req.mutable_spec();
    spec->set_name(name);
    const std::string pattern = args.Get("pattern", "stream");
    if (pattern == "stream") {
      spec->set_pattern(v1::CHANNEL_PATTERN_STREAM);
    } else if (pattern == "request-reply" || pattern == "request_reply") {
      spec->set_pattern(v1::CHANNEL_PATTERN_REQUEST_REPLY);
    } else {
      return Usage("--pattern must be stream or request-reply");
    }
    uint64_t ring = 0;
    uint32_t frame = 0, producers = 0, sample = 0;
    if (!FlagU64(args, "ring-bytes", &ring, true) ||
        !FlagU32(args, "max-frame-bytes", &frame, true) ||
        !FlagU32(args, "max-producers", &producers) ||
        !FlagU32(args, "latency-sample-every", &sample)) {
      return kExitUsage;
    }
    spec->set_ring_bytes(ring);
    spec->set_max_frame_bytes(frame);
    spec->set_max_producers(producers);
    spec->set_latency_sample_every(sample);
    spec->set_disable_latency_sampling(args.Has("no-latency-sampling"));
    const std::string policy = args.Get("backpressure", "block");
    if (policy == "block") {
      spec->set_backpressure(v1::BACKPRESSURE_POLICY_BLOCK);
    } else if (policy == "fail") {
      spec->set_backpressure(v1::BACKPRESSURE_POLICY_FAIL);
    } else if (policy == "drop") {
      spec->set_backpressure(v1::BACKPRESSURE_POLICY_DROP);
    } else {
      return Usage("--backpressure must be block, fail or drop");
    }
    for (const std::string& label : args.All("label")) {
      std::pair<std::string, std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
      if (kv.first.empty() || label.find('=') == std::string::npos) {
        return Usage("--label needs KEY=VALUE");
      }
      (*spec->mutable_labels())[kv.first] = kv.second;
    }
    if (args.Has("owner-uid")) {
      uint32_t owner = 0;
      if (!FlagU32(args, "owner-uid", &owner)) return kExitUsage;
      req.set_owner_uid(owner);
    }
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::Channel out;
    grpc::Status s = channels_->CreateChannel(&ctx, req, &out);
    if (!s.ok()) return Fail(s);
    if (json_) {
      std::printf("%s\n", Json(out).c_str());
    } else {
      std::printf("created channel %s\n", name.c_str());
      PrintChannels({out});
    }
    return kExitOk;
  }
  if (verb == "get") {
    v1::GetChannelRequest req;
    req.set_name(name);
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::Channel out;
    grpc::Status s = channels_->GetChannel(&ctx, req, &out);
    if (!s.ok()) return Fail(s);
    if (json_) {
      std::printf("%s\n", Json(out).c_str());
    } else {
      PrintChannels({out});
      for (const auto& [k, v] : out.spec().labels()) {
        std::printf("label %s=%s\n", k.c_str(), v.c_str());
      }
    }
    return kExitOk;
  }
  if (verb == "delete") {
    v1::DeleteChannelRequest req;
    req.set_name(name);
    req.set_force(args.Has("force"));
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::DeleteChannelResponse out;
    grpc::Status s = channels_->DeleteChannel(&ctx, req, &out);
    if (!s.ok()) return Fail(s);
    if (json_) {
      std::printf("%s\n", Json(out).c_str());
    } else {
      std::printf("deleted channel %s (%u attachments ended)\n", name.c_str(),
                  out.detached_clients());
    }
    return kExitOk;
  }
  return Usage(absl::StrCat("unknown verb \"channels ", verb, "\""));
}

int Cli::Grants(const Args& args) {
  if (args.words.size() < 3) return Usage("grants needs add, remove or list and a CHANNEL");
  const std::string& verb = args.words[1];
  const std::string& channel = args.words[2];
  if (verb == "list") {
    v1::ListGrantsRequest req;
    req.set_channel(channel);
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ListGrantsResponse out;
    grpc::Status s = access_->ListGrants(&ctx, req, &out);
    if (!s.ok()) return Fail(s);
    if (json_) {
      std::printf("%s\n", Json(out).c_str());
    } else {
      std::vector<std::vector<std::string>> rows = {{"PRINCIPAL", "ROLE"}};
      rows.push_back({absl::StrCat("uid:", out.owner_uid()), "admin (owner)"});
      for (const auto& g : out.grants()) {
        rows.push_back({PrincipalName(g.principal()), RoleName(g.role())});
      }
      PrintTable(rows);
    }
    return kExitOk;
  }
  if (verb != "add" && verb != "remove") {
    return Usage(absl::StrCat("unknown verb \"grants ", verb, "\""));
  }
  v1::Grant grant;
  const int principals = args.Has("uid") + args.Has("gid") + args.Has("anyone");
  if (principals != 1) return Usage("give exactly one of --uid, --gid, --anyone");
  if (args.Has("uid")) {
    uint32_t uid = 0;
    if (!FlagU32(args, "uid", &uid)) return kExitUsage;
    grant.mutable_principal()->set_uid(uid);
  } else if (args.Has("gid")) {
    uint32_t gid = 0;
    if (!FlagU32(args, "gid", &gid)) return kExitUsage;
    grant.mutable_principal()->set_gid(gid);
  } else {
    grant.mutable_principal()->set_anyone(true);
  }
  const std::string role = args.Get("role");
  if (role == "produce") {
    grant.set_role(v1::GRANT_ROLE_PRODUCE);
  } else if (role == "consume") {
    grant.set_role(v1::GRANT_ROLE_CONSUME);
  } else if (role == "admin") {
    grant.set_role(v1::GRANT_ROLE_ADMIN);
  } else {
    return Usage("--role must be produce, consume or admin");
  }
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::GrantResponse out;
  grpc::Status s;
  if (verb == "add") {
    v1::AddGrantRequest req;
    req.set_channel(channel);
    *req.mutable_grant() = grant;
    s = access_->AddGrant(&ctx, req, &out);
  } else {
    v1::RemoveGrantRequest req;
    req.set_channel(channel);
    *req.mutable_grant() = grant;
    s = access_->RemoveGrant(&ctx, req, &out);
  }
  if (!s.ok()) return Fail(s);
  if (json_) {
    std::printf("%s\n", Json(out).c_str());
  } else {
    std::printf("%s %s %s on %s%s\n", verb == "add" ? "granted" : "revoked", role.c_str(),
                PrincipalName(grant.principal()).c_str(), channel.c_str(),
                out.changed() ? "" : " (no change)");
  }
  return kExitOk;
}

int Cli::Quota(const Args& args) {
  if (args.words.size() < 2) return Usage("quota needs set or get");
  const std::string& verb = args.words[1];
  if (!args.Has("uid")) return Usage(absl::StrCat("quota ", verb, " needs --uid UID"));
  uint32_t uid = 0;
  if (!FlagU32(args, "uid", &uid)) return kExitUsage;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::Quota out;
  grpc::Status s;
  if (verb == "set") {
    v1::SetQuotaRequest req;
    req.set_uid(uid);
    uint32_t channels = 0, attachments = 0, frame = 0;
    uint64_t shm = 0;
    if (!FlagU32(args, "max-channels", &channels) || !FlagU64(args, "max-shm-bytes", &shm, true) ||
        !FlagU32(args, "max-attachments", &attachments) ||
        !FlagU32(args, "max-frame-bytes", &frame, true)) {
      return kExitUsage;
    }
    req.mutable_limits()->set_max_channels(channels);
    req.mutable_limits()->set_max_shm_bytes(shm);
    req.mutable_limits()->set_max_attachments(attachments);
    req.mutable_limits()->set_max_frame_bytes(frame);
    req.set_reset_to_defaults(args.Has("reset"));
    s = access_->SetQuota(&ctx, req, &out);
  } else if (verb == "get") {
    v1::GetQuotaRequest req;
    req.set_uid(uid);
    s = access_->GetQuota(&ctx, req, &out);
  } else {
    return Usage(absl::StrCat("unknown verb \"quota ", verb, "\""));
  }
  if (!s.ok()) return Fail(s);
  if (json_) {
    std::printf("%s\n", Json(out).c_str());
  } else {
    std::printf("uid %u%s\n", out.uid(), out.is_default() ? " (defaults)" : "");
    PrintTable({{"LIMIT", "USED", "MAX"},
                {"channels", absl::StrCat(out.usage().channels()),
                 absl::StrCat(out.limits().max_channels())},
                {"shm_bytes", absl::StrCat(out.usage().shm_bytes()),
                 absl::StrCat(out.limits().max_shm_bytes())},
                {"attachments", absl::StrCat(out.usage().attachments()),
                 absl::StrCat(out.limits().max_attachments())},
                {"frame_bytes", "-", absl::StrCat(out.limits().max_frame_bytes())}});
  }
  return kExitOk;
}

int Cli::Stats(const Args& args) {
  if (args.words.size() < 2) return Usage("stats needs a CHANNEL");
  v1::GetChannelStatsRequest req;
  req.set_name(args.words[1]);
  req.set_include_lanes(args.Has("lanes"));
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::ChannelStats out;
  grpc::Status s = channels_->GetChannelStats(&ctx, req, &out);
  if (!s.ok()) return Fail(s);
  if (json_) {
    std::printf("%s\n", Json(out).c_str());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"LANE", "SENT", "RECEIVED", "BYTES_SENT",
                                                 "OCCUPANCY", "CAPACITY", "BACKPRESSURE", "DROPPED",
                                                 "WAKEUPS", "P50", "P90", "P99"}};
  auto row = [&](const std::string& id, const v1::LaneStats& l) {
    rows.push_back({id, absl::StrCat(l.frames_sent()), absl::StrCat(l.frames_received()),
                    absl::StrCat(l.bytes_sent()), absl::StrCat(l.occupancy_bytes()),
                    absl::StrCat(l.capacity_bytes()), absl::StrCat(l.backpressure_events()),
                    absl::StrCat(l.dropped_frames()), absl::StrCat(l.wakeups()),
                    Dur(l.latency_p50()), Dur(l.latency_p90()), Dur(l.latency_p99())});
  };
  for (const auto& l : out.lanes()) row(absl::StrCat(l.lane_id()), l);
  row("total", out.total());
  std::printf("channel %s: %u live lanes\n", out.name().c_str(), out.live_lanes());
  PrintTable(rows);
  return kExitOk;
}

int Cli::Watch(const Args& args) {
  v1::WatchEventsRequest req;
  req.set_channel(args.Get("channel"));
  uint64_t count = 0;
  if (!FlagU64(args, "count", &count)) return kExitUsage;
  grpc::ClientContext ctx;  // no deadline: watch until interrupted or --count
  std::unique_ptr<grpc::ClientReader<v1::Event>> reader = channels_->WatchEvents(&ctx, req);
  v1::Event event;
  uint64_t seen = 0;
  while (reader->Read(&event)) {
    if (json_) {
      std::string line;
      google::protobuf::util::JsonPrintOptions options;
      options.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(event, &line, options);
      std::printf("%s\n", line.c_str());
    } else {
      std::printf("%s %-20s %-16s %s%s%s\n", TimeUtil::ToString(event.time()).c_str(),
                  EventName(event.type()).c_str(), event.channel().c_str(),
                  event.attachment_id()
                      ? absl::StrCat("attachment=", event.attachment_id(), " uid=", event.uid(),
                                     " pid=", event.pid(), " ")
                            .c_str()
                      : "",
                  event.client_name().empty() ? "" : ("name=" + event.client_name() + " ").c_str(),
                  event.detail().c_str());
    }
    std::fflush(stdout);
    if (count != 0 && ++seen >= count) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok() && !(count != 0 && seen >= count)) return Fail(s);
  return kExitOk;
}

int Cli::Health(const Args& args) {
  grpc::health::v1::HealthCheckRequest req;
  if (args.words.size() >= 2) req.set_service(args.words[1]);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::health::v1::HealthCheckResponse out;
  grpc::Status s = health_->Check(&ctx, req, &out);
  if (!s.ok()) return Fail(s);
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(out.status());
  if (json_) {
    std::printf("%s\n", Json(out).c_str());
  } else {
    std::printf("%s: %s\n", req.service().empty() ? "shmlaned" : req.service().c_str(),
                status.c_str());
  }
  return out.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitFailed;
}

int Main(int argc, char** argv) {
  Args args;
  std::string error;
  if (!ParseArgs(argc, argv, &args, &error)) {
    std::fprintf(stderr, "shmlanectl: %s (see shmlanectl --help)\n", error.c_str());
    return kExitUsage;
  }
  if (args.Has("help")) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (args.Has("version")) {
    std::printf("shmlanectl %s\n", SHMLANE_VERSION);
    return kExitOk;
  }
  if (args.words.empty()) {
    std::fputs(kUsage, stderr);
    return kExitUsage;
  }
  absl::Duration timeout = absl::Seconds(10);
  if (args.Has("timeout") && !absl::ParseDuration(args.Get("timeout"), &timeout)) {
    std::fprintf(stderr, "shmlanectl: --timeout: expected a duration such as 5s\n");
    return kExitUsage;
  }
  std::string target;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  const bool tls = args.Has("tls-ca") || args.Has("tls-cert") || args.Has("tls-key");
  if (tls && !args.Has("server")) {
    std::fprintf(stderr,
                 "shmlanectl: --tls-ca, --tls-cert and --tls-key apply to --server only "
                 "(see shmlanectl --help)\n");
    return kExitUsage;
  }
  if (args.Has("tls-cert") != args.Has("tls-key")) {
    std::fprintf(stderr, "shmlanectl: --tls-cert and --tls-key go together\n");
    return kExitUsage;
  }
  if (args.Has("server")) {
    target = args.Get("server");
    if (tls) {
      grpc::SslCredentialsOptions ssl;
      // Empty pem_root_certs: gRPC's default roots (the system's CA store).
      for (const auto& [flag, pem] :
           {std::pair{"tls-ca", &ssl.pem_root_certs}, std::pair{"tls-cert", &ssl.pem_cert_chain},
            std::pair{"tls-key", &ssl.pem_private_key}}) {
        if (args.Has(flag) && !ReadFile(args.Get(flag), pem)) {
          std::fprintf(stderr, "shmlanectl: cannot read --%s %s: %s\n", flag,
                       args.Get(flag).c_str(), std::strerror(errno));
          return kExitUsage;
        }
      }
      creds = grpc::SslCredentials(ssl);
    }
  } else {
    target = absl::StrCat("unix:", args.Get("runtime-dir", DefaultRuntimeDir()), "/control.sock");
  }
  Cli cli(grpc::CreateChannel(target, creds), args.Has("json"), timeout, target);
  return cli.Run(args);
}

}  // namespace
}  // namespace shmlane::cli

int main(int argc, char** argv) { return shmlane::cli::Main(argc, argv); }
