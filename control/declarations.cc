#include "control/declarations.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "control/access.h"
#include "control/caller.h"
#include "control/channel_catalog.h"
#include "control/text_format_errors.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "shmlane/enum_names.h"

namespace shmlane::control {
namespace {

namespace v1 = shmlane::v1;
using google::protobuf::util::MessageDifferencer;

std::string PrincipalText(const v1::Principal& p) {
  switch (p.kind_case()) {
    case v1::Principal::kUid:
      return absl::StrCat("uid ", p.uid());
    case v1::Principal::kGid:
      return absl::StrCat("gid ", p.gid());
    case v1::Principal::kAnyone:
      return "anyone";
    default:
      return "nobody";
  }
}

std::string GrantText(const v1::AddGrantRequest& g) {
  return absl::StrCat(ShortName(g.grant().role()), " to ", PrincipalText(g.grant().principal()),
                      " on channel \"", g.channel(), "\"");
}

std::string GrantKey(const v1::AddGrantRequest& g) {
  return absl::StrCat(g.channel(), "/", PrincipalText(g.grant().principal()), "/",
                      static_cast<int>(g.grant().role()));
}

std::string LimitsText(const v1::QuotaLimits& l) {
  return absl::StrCat("max_channels ", l.max_channels(), ", max_shm_bytes ", l.max_shm_bytes(),
                      ", max_attachments ", l.max_attachments(), ", max_frame_bytes ",
                      l.max_frame_bytes());
}

// "ring_bytes 1048576 -> 2097152, owner uid 0 -> 10001"; empty when equal.
std::string SpecDiff(const v1::ChannelSpec& have, uint32_t have_owner, const v1::ChannelSpec& want,
                     uint32_t want_owner) {
  std::vector<std::string> parts;
  const google::protobuf::Descriptor* d = v1::ChannelSpec::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    MessageDifferencer differ;
    std::vector<const google::protobuf::FieldDescriptor*> only = {f};
    if (differ.CompareWithFields(have, want, only, only)) continue;
    if (f->is_map() || f->is_repeated()) {
      parts.push_back(absl::StrCat(f->name(), " changed"));
      continue;
    }
    std::string a, b;
    google::protobuf::TextFormat::PrintFieldValueToString(have, f, -1, &a);
    google::protobuf::TextFormat::PrintFieldValueToString(want, f, -1, &b);
    parts.push_back(absl::StrCat(f->name(), " ", a, " -> ", b));
  }
  if (have_owner != want_owner) {
    parts.push_back(absl::StrCat("owner uid ", have_owner, " -> ", want_owner));
  }
  return absl::StrJoin(parts, ", ");
}

const v1::CreateChannelRequest* FindChannel(const v1::Declarations& d, absl::string_view name) {
  for (const v1::CreateChannelRequest& c : d.channels()) {
    if (c.spec().name() == name) return &c;
  }
  return nullptr;
}

const v1::AddGrantRequest* FindGrant(const v1::Declarations& d, const v1::AddGrantRequest& g) {
  for (const v1::AddGrantRequest& have : d.grants()) {
    if (MessageDifferencer::Equals(have, g)) return &have;
  }
  return nullptr;
}

const v1::SetQuotaRequest* FindQuota(const v1::Declarations& d, uint32_t uid) {
  for (const v1::SetQuotaRequest& q : d.quotas()) {
    if (q.uid() == uid) return &q;
  }
  return nullptr;
}

std::string Errno() { return std::strerror(errno); }

}  // namespace

absl::StatusOr<v1::Declarations> ParseDeclarations(absl::string_view path,
                                                   const std::string& text) {
  v1::Declarations out;
  google::protobuf::TextFormat::Parser parser;
  TextFormatErrors errors(path);
  google::protobuf::TextFormat::ParseInfoTree tree;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&tree);
  if (!parser.ParseFromString(text, &out)) {
    return absl::InvalidArgumentError(errors.first().empty() ? absl::StrCat(path, ": unparsable")
                                                             : errors.first());
  }
  const google::protobuf::Descriptor* d = v1::Declarations::descriptor();
  // "FILE:LINE: channels[i]" for the i-th element of a repeated field.
  auto where = [&](const char* field, int i) {
    const google::protobuf::TextFormat::ParseLocation loc =
        tree.GetLocation(d->FindFieldByName(field), i);
    return absl::StrCat(path, ":", loc.line + 1, ": ", field, "[", i, "]");
  };
  std::set<std::string> seen;
  for (int i = 0; i < out.channels_size(); ++i) {
    const v1::CreateChannelRequest& c = out.channels(i);
    absl::StatusOr<v1::ChannelSpec> spec = NormalizeSpec(c.spec());
    if (!spec.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where("channels", i), ": ", spec.status().message()));
    }
    if (!seen.insert(c.spec().name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(where("channels", i), ": channel \"",
                                                     c.spec().name(), "\" is declared twice"));
    }
  }
  std::set<std::string> grants;
  for (int i = 0; i < out.grants_size(); ++i) {
    const v1::AddGrantRequest& g = out.grants(i);
    if (absl::Status s = ValidateChannelName(g.channel()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where("grants", i), ": ", s.message()));
    }
    if (absl::Status s = ValidateGrant(g.grant()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where("grants", i), ": ", s.message()));
    }
    if (!grants.insert(GrantKey(g)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where("grants", i), ": ", GrantText(g), " is declared twice"));
    }
  }
  std::set<uint32_t> uids;
  for (int i = 0; i < out.quotas_size(); ++i) {
    const v1::SetQuotaRequest& q = out.quotas(i);
    if (q.reset_to_defaults()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where("quotas", i),
                       ": reset_to_defaults has no meaning here (declared limits are set "
                       "exactly; drop the quota to return uid ",
                       q.uid(), " to the defaults)"));
    }
    if (!uids.insert(q.uid()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where("quotas", i), ": the quota of uid ", q.uid(), " is declared twice"));
    }
  }
  return out;
}

absl::StatusOr<v1::Declarations> ReadDeclarations(const std::string& path, uint32_t daemon_uid) {
  // O_NONBLOCK: a FIFO in its place must not hang the daemon.
  dataplane::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", Errno()));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot stat ", path, ": ", Errno()));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_uid != 0 && st.st_uid != daemon_uid) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is owned by uid ", st.st_uid,
                                                      "; declarations grant access, so the file "
                                                      "must belong to root or the daemon's uid ",
                                                      daemon_uid));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is writable by its group or by everyone (mode ",
                     absl::StrFormat("%04o", st.st_mode & 07777),
                     "); declarations grant access: chmod go-w it"));
  }
  if (st.st_size > static_cast<off_t>(kMaxDeclarationsBytes)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is larger than ", kMaxDeclarationsBytes, " bytes"));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return absl::FailedPreconditionError(absl::StrCat("cannot read ", path, ": ", Errno()));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  return ParseDeclarations(path, text);
}

Declarer::Declarer(DeclarerOptions options, v1::Declarations owned)
    : options_(std::move(options)), owned_(std::move(owned)) {}

Declarer::~Declarer() { Stop(); }

void Declarer::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
    return;
  }
  std::fprintf(stderr, "shmlaned: declarations: %s\n", line.c_str());
}

void Declarer::Note(const std::string& key, const std::string& line) {
  auto it = noted_.find(key);
  if (it == noted_.end() || it->second != line) Log(line);
  noted_this_pass_[key] = line;
}

void Declarer::Audit(absl::string_view method, absl::string_view channel,
                     const absl::Status& result) {
  if (options_.audit != nullptr) options_.audit->Record(Caller::Daemon(), method, channel, result);
}

v1::Declarations Declarer::Owned() const {
  absl::MutexLock lock(&owned_mu_);
  return owned_;
}

std::string Declarer::Describe() const {
  absl::MutexLock lock(&owned_mu_);
  return absl::StrCat(owned_.channels_size(), " channels, ", owned_.grants_size(), " grants, ",
                      owned_.quotas_size(), " quotas");
}

absl::Status Declarer::ApplyNow() {
  bool waiting = false;
  return Pass(Why::kStart, &waiting);
}

absl::Status Declarer::Pass(Why why, bool* waiting) {
  absl::MutexLock lock(&apply_mu_);
  absl::StatusOr<v1::Declarations> desired = ReadDeclarations(options_.path, options_.daemon_uid);
  if (!desired.ok()) {
    const std::string message(desired.status().message());
    if (why != Why::kStart && message != last_file_error_) {
      ++rejected_;
      Log(absl::StrCat("ignoring ", options_.path,
                       " (the last applied declarations stay): ", message));
    }
    last_file_error_ = message;
    return desired.status();
  }
  if (!last_file_error_.empty() && why != Why::kStart) {
    Log(absl::StrCat(options_.path, " is valid again"));
  }
  last_file_error_.clear();
  noted_this_pass_.clear();
  bool owned_changed = false;
  const int changed = Reconcile(*desired, waiting, &owned_changed);
  noted_.swap(noted_this_pass_);
  if ((changed > 0 || owned_changed) && options_.persist) {
    if (absl::Status s = options_.persist(); !s.ok()) {
      Log(absl::StrCat("the changes are live but not saved: ", s.message()));
    }
  }
  if (changed > 0) {
    ++changes_;
    static constexpr const char* kWhy[] = {"at start", "after the file changed", "on SIGHUP",
                                           "on resync"};
    Log(absl::StrCat(changed, " change", changed == 1 ? "" : "s", " applied ",
                     kWhy[static_cast<int>(why)], *waiting ? "; some wait (see above)" : ""));
  }
  return absl::OkStatus();
}

int Declarer::Reconcile(const v1::Declarations& desired, bool* waiting, bool* owned_changed) {
  Registry& registry = *options_.registry;
  const v1::Declarations owned = Owned();
  v1::Declarations next;
  int changed = 0;
  *waiting = false;

  // Quotas first: the channels below may need them.
  for (const v1::SetQuotaRequest& q : desired.quotas()) {
    absl::StatusOr<v1::Quota> before = registry.GetQuota(q.uid());
    v1::SetQuotaRequest exact = q;
    exact.set_reset_to_defaults(true);
    absl::StatusOr<v1::Quota> after = registry.SetQuota(exact);
    const std::string key = absl::StrCat("quota/", q.uid());
    if (!after.ok()) {
      Note(key,
           absl::StrCat("cannot set the quota of uid ", q.uid(), ": ", after.status().message()));
      *waiting = true;
      if (FindQuota(owned, q.uid()) != nullptr) *next.add_quotas() = *FindQuota(owned, q.uid());
      continue;
    }
    *next.add_quotas() = q;
    if (!before.ok() || before->is_default() != after->is_default() ||
        !MessageDifferencer::Equals(before->limits(), after->limits())) {
      Log(absl::StrCat("set the quota of uid ", q.uid(), ": ", LimitsText(after->limits())));
      Audit("DeclareQuota", "", absl::OkStatus());
      ++changed;
    }
  }

  for (const v1::CreateChannelRequest& c : desired.channels()) {
    const std::string& name = c.spec().name();
    const std::string key = absl::StrCat("channel/", name);
    const uint32_t owner = c.has_owner_uid() ? c.owner_uid() : options_.daemon_uid;
    absl::StatusOr<v1::Channel> have = registry.GetChannel(name);
    if (!have.ok() && absl::IsNotFound(have.status())) {
      absl::StatusOr<v1::Channel> made = registry.CreateChannel(c);
      Audit("DeclareChannel", name, made.status());
      if (!made.ok()) {
        Note(key, absl::StrCat("cannot create channel \"", name, "\": ", made.status().message(),
                               "; retrying"));
        *waiting = true;
        continue;
      }
      Log(absl::StrCat("created channel \"", name, "\" (", ShortName(made->spec().pattern()),
                       ", ring_bytes ", made->spec().ring_bytes(), ", owner uid ", owner, ")"));
      ++changed;
      *next.add_channels() = c;
      continue;
    }
    if (!have.ok()) {
      Note(key, absl::StrCat("cannot look up channel \"", name, "\": ", have.status().message()));
      *waiting = true;
      if (FindChannel(owned, name) != nullptr) *next.add_channels() = *FindChannel(owned, name);
      continue;
    }
    *next.add_channels() = c;
    const v1::ChannelSpec want = *NormalizeSpec(c.spec());  // checked by ParseDeclarations
    const std::string diff = SpecDiff(have->spec(), have->owner_uid(), want, owner);
    if (diff.empty()) {
      if (FindChannel(owned, name) == nullptr) {
        Log(absl::StrCat("adopted the existing channel \"", name, "\" (same spec and owner)"));
        ++changed;
      }
      continue;
    }
    const uint32_t attached = have->attached_producers() + (have->consumer_attached() ? 1 : 0);
    absl::StatusOr<v1::Channel> replaced =
        attached > 0
            ? absl::FailedPreconditionError(absl::StrCat(attached, " processes are attached"))
            : registry.ReplaceChannel(c);
    if (attached == 0) Audit("DeclareChannel", name, replaced.status());
    if (!replaced.ok()) {
      Note(key, absl::StrCat("channel \"", name, "\": cannot change ", diff,
                             " now: ", replaced.status().message(),
                             absl::IsFailedPrecondition(replaced.status())
                                 ? "; the change is applied when they have detached"
                                 : "; retrying"));
      *waiting = true;
      continue;
    }
    Log(absl::StrCat("updated channel \"", name, "\": ", diff, " (grants kept)"));
    ++changed;
  }

  for (const v1::AddGrantRequest& g : desired.grants()) {
    const std::string key = absl::StrCat("grant/", GrantKey(g));
    absl::StatusOr<bool> added = registry.AddGrant(g);
    if (!added.ok()) {
      Note(key, absl::StrCat("cannot grant ", GrantText(g), ": ", added.status().message(),
                             absl::IsNotFound(added.status())
                                 ? " (declare the channel, or create it first)"
                                 : ""));
      *waiting = true;
      if (FindGrant(owned, g) != nullptr) *next.add_grants() = g;
      continue;
    }
    *next.add_grants() = g;
    if (*added) {
      Log(absl::StrCat("granted ", GrantText(g)));
      Audit("DeclareGrant", g.channel(), absl::OkStatus());
      ++changed;
    }
  }

  // What was declared before and is not now.
  for (const v1::AddGrantRequest& g : owned.grants()) {
    if (FindGrant(desired, g) != nullptr) continue;
    v1::RemoveGrantRequest remove;
    remove.set_channel(g.channel());
    *remove.mutable_grant() = g.grant();
    absl::StatusOr<bool> removed = registry.RemoveGrant(remove);
    if (!removed.ok() && !absl::IsNotFound(removed.status())) {
      Note(absl::StrCat("grant/", GrantKey(g)),
           absl::StrCat("cannot remove the dropped grant of ", GrantText(g), ": ",
                        removed.status().message()));
      *waiting = true;
      *next.add_grants() = g;
      continue;
    }
    if (removed.ok() && *removed) {
      Log(absl::StrCat("removed the dropped grant of ", GrantText(g)));
      Audit("DeclareRemoveGrant", g.channel(), absl::OkStatus());
      ++changed;
    }
  }
  for (const v1::CreateChannelRequest& c : owned.channels()) {
    const std::string& name = c.spec().name();
    if (FindChannel(desired, name) != nullptr) continue;
    v1::DeleteChannelRequest remove;
    remove.set_name(name);
    absl::StatusOr<v1::DeleteChannelResponse> deleted = registry.DeleteChannel(remove);
    if (!deleted.ok() && absl::IsNotFound(deleted.status())) continue;
    Audit("DeclareDeleteChannel", name, deleted.status());
    if (!deleted.ok()) {
      Note(absl::StrCat("channel/", name),
           absl::StrCat("channel \"", name,
                        "\" was dropped from the declarations but cannot be "
                        "deleted now: ",
                        deleted.status().message(),
                        absl::IsFailedPrecondition(deleted.status())
                            ? "; it is deleted when they have detached"
                            : ""));
      *waiting = true;
      *next.add_channels() = c;
      continue;
    }
    Log(absl::StrCat("deleted channel \"", name, "\" (dropped from the declarations)"));
    ++changed;
  }
  for (const v1::SetQuotaRequest& q : owned.quotas()) {
    if (FindQuota(desired, q.uid()) != nullptr) continue;
    v1::SetQuotaRequest reset;
    reset.set_uid(q.uid());
    reset.set_reset_to_defaults(true);
    absl::StatusOr<v1::Quota> done = registry.SetQuota(reset);
    if (!done.ok()) {
      Note(absl::StrCat("quota/", q.uid()), absl::StrCat("cannot reset the dropped quota of uid ",
                                                         q.uid(), ": ", done.status().message()));
      *waiting = true;
      *next.add_quotas() = q;
      continue;
    }
    Log(absl::StrCat("reset the quota of uid ", q.uid(),
                     " to the defaults (dropped from the "
                     "declarations)"));
    Audit("DeclareQuota", "", absl::OkStatus());
    ++changed;
  }

  {
    absl::MutexLock lock(&owned_mu_);
    *owned_changed = !MessageDifferencer::Equals(owned_, next);
    if (*owned_changed) owned_ = std::move(next);
  }
  return changed;
}

absl::Status Declarer::Start() {
  const size_t slash = options_.path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : options_.path.substr(0, slash);
  inotify_ = dataplane::UniqueFd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  wake_ = dataplane::UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!inotify_.valid() || !wake_.valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", options_.path, ": ", Errno()));
  }
  // A ConfigMap volume swaps its "..data" symlink with a rename (IN_MOVED_TO);
  // an editor writes in place (IN_CLOSE_WRITE) or renames over the file.
  if (::inotify_add_watch(inotify_.get(), dir.c_str(),
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                              IN_ATTRIB | IN_ONLYDIR) < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", dir, " for changes of ", options_.path, ": ", Errno()));
  }
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void Declarer::Trigger() {
  triggered_ = true;
  if (wake_.valid()) {
    const uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof(one));
  }
}

void Declarer::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  Trigger();
  thread_.join();
}

void Declarer::Run() {
  bool waiting = false;
  while (!stop_) {
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const absl::Duration timeout = waiting ? options_.retry : options_.resync;
    const int n = ::poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
    if (stop_) break;
    if (n < 0 && errno != EINTR) {
      Log(absl::StrCat("watching ", options_.path, " failed: ", Errno(), "; watching stops"));
      return;
    }
    Why why = Why::kResync;
    if (n > 0 && (fds[0].revents & POLLIN) != 0) {
      // Let a burst of events (a ConfigMap update is several) settle, then
      // drain them: one pass covers them all.
      ::usleep(50'000);
      char buf[4096];
      while (::read(inotify_.get(), buf, sizeof(buf)) > 0) {
      }
      why = Why::kFileChanged;
    }
    if (n > 0 && (fds[1].revents & POLLIN) != 0) {
      uint64_t count = 0;
      (void)!::read(wake_.get(), &count, sizeof(count));
      if (triggered_.exchange(false)) why = Why::kSignal;
    }
    if (stop_) break;
    if (why == Why::kSignal) Log(absl::StrCat("SIGHUP: re-reading ", options_.path));
    (void)Pass(why, &waiting);
  }
}

}  // namespace shmlane::control
