#include "control/daemon.h"

#include <grp.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "control/attach_server.h"
#include "control/audit_log.h"
#include "control/caller.h"
#include "control/control_listener.h"
#include "control/daemon_metrics.h"
#include "control/declarations.h"
#include "control/event_bus.h"
#include "control/exporter.h"
#include "control/metrics_unix_server.h"
#include "control/registry.h"
#include "control/runtime_dir.h"
#include "control/services.h"
#include "control/state_writer.h"
#include "prometheus/exposer.h"
#include "shmlane/version.h"

namespace shmlane::control {
namespace {

constexpr size_t kMaxStateBytes = 64 << 20;
constexpr int kMaxControlMessageBytes = 1 << 20;

absl::StatusOr<int> LookUpGroup(const std::string& name, const char* flag) {
  if (name.empty()) return -1;
  std::vector<char> buf(16384);
  group gr{};
  group* result = nullptr;
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &result) != 0 || result == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": no group named \"", name, "\""));
  }
  return static_cast<int>(result->gr_gid);
}

}  // namespace

struct Daemon::Impl {
  Config config;
  dataplane::UniqueFd dir_fd;
  dataplane::UniqueFd lock_fd;
  FileInDir state_file;  // through dir_fd when it lives in the runtime dir
  std::string control_path;
  std::string attach_path;
  std::string metrics_url = "disabled";
  std::string tcp_address;  // host:bound-port of --listen
  DaemonMetrics metrics;
  EventBus events;
  std::unique_ptr<Registry> registry;
  std::unique_ptr<AttachServer> attach;
  std::unique_ptr<ChannelServiceImpl> channel_service;
  std::unique_ptr<AccessServiceImpl> access_service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::Server> health_server;  // --health-listen: grpc.health.v1 only
  std::string health_address;
  CallerTable callers;
  std::unique_ptr<ControlListener> control_listener;
  std::unique_ptr<AuditLog> audit;
  std::shared_ptr<Exporter> exporter;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::unique_ptr<Declarer> declarer;               // --declare
  std::unique_ptr<MetricsUnixServer> metrics_unix;  // --metrics-listen unix:PATH
  bool shut_down = false;
  // Group commit of the state file (declared last, so destroyed first: it
  // finishes the replies it holds while the gRPC server still exists).
  std::unique_ptr<StateWriter> state_writer;

  void StartStateWriter() {
    state_writer = std::make_unique<StateWriter>(
        [this](const std::string& bytes) { return WriteFileAtomically(state_file, bytes); },
        [this]() -> absl::StatusOr<std::string> {
          shmlane::v1::DaemonState state = registry->ExportState();
          if (declarer != nullptr) *state.mutable_declared() = declarer->Owned();
          std::string bytes;
          if (!state.SerializeToString(&bytes)) {
            return absl::InternalError("cannot serialize the daemon state");
          }
          return bytes;
        });
  }
  // Waits until the state as it is now is durable.
  absl::Status Save() { return state_writer->PersistAndWait(); }

  // The registry's state-change callback names state_writer, which is
  // destroyed before the registry and the attach server.
  ~Impl() {
    if (registry != nullptr) registry->SetStateChanged(nullptr);
  }
};

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Daemon::~Daemon() { (void)Shutdown(); }

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const Config& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  // Everything we create is private unless we widen it on purpose (chmod).
  ::umask(077);
  absl::StatusOr<dataplane::UniqueFd> dir = OpenRuntimeDir(config.runtime_dir);
  if (!dir.ok()) return dir.status();
  impl->dir_fd = *std::move(dir);
  // The lock hand-over (--replace, --lock-wait): the flags and the config
  // file were checked before this point, so a daemon that cannot start for a
  // reason it could know up front never stops the one it would replace. The
  // old daemon releases the lock only as its process ends (the lock fd is
  // never closed before; see Shutdown), after its last state write, so what
  // this one reads below is the final state.
  LockOptions lock_options;
  lock_options.replace = config.replace;
  lock_options.wait = config.replace ? config.replace_timeout : config.lock_wait;
  lock_options.note = [](const std::string& line) {
    std::fprintf(stderr, "shmlaned: %s\n", line.c_str());
  };
  absl::StatusOr<dataplane::UniqueFd> lock =
      LockRuntimeDir(impl->dir_fd.get(), config.runtime_dir, lock_options);
  if (!lock.ok()) return lock.status();
  impl->lock_fd = *std::move(lock);
  impl->control_path = config.runtime_dir + "/control.sock";
  impl->attach_path = config.runtime_dir + "/attach.sock";
  // We hold the lock, so these belong to a dead daemon.
  for (const char* name : {"control.sock", "attach.sock"}) {
    const std::string shown = absl::StrCat(config.runtime_dir, "/", name);
    if (absl::Status s = RemoveStaleSocket(impl->dir_fd.get(), name, shown); !s.ok()) return s;
  }
  absl::StatusOr<FileInDir> state_file =
      LocateFile(impl->dir_fd.get(), config.runtime_dir, config.state_file);
  if (!state_file.ok()) return state_file.status();
  impl->state_file = *std::move(state_file);
  absl::StatusOr<int> admin_gid = LookUpGroup(config.admin_group, "admin-group");
  if (!admin_gid.ok()) return admin_gid.status();
  absl::StatusOr<int> attach_gid = LookUpGroup(config.attach_group, "attach-group");
  if (!attach_gid.ok()) return attach_gid.status();
  AdminPolicy admins;
  admins.daemon_uid = ::geteuid();
  admins.admin_gid = *admin_gid;
  admins.admin_group_name = config.admin_group;
  admins.tls_admins = config.tls_admins;
  if (!config.audit_log.empty()) {
    absl::StatusOr<std::unique_ptr<AuditLog>> audit =
        AuditLog::Open(config.audit_log, config.audit_log_max_bytes);
    if (!audit.ok()) return audit.status();
    impl->audit = *std::move(audit);
  }

  RegistryOptions registry_options;
  registry_options.daemon_uid = ::geteuid();
  registry_options.metrics = &impl->metrics;
  registry_options.events = &impl->events;
  registry_options.resume_grace = config.resume_grace;
  OutboundLimits outbound_limits;
  outbound_limits.max_total_fds = config.max_queued_fds;
  // Queued fds must never run the daemon out of fds: at most half its limit.
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur / 2 > 0) {
    outbound_limits.max_total_fds =
        std::min<size_t>(outbound_limits.max_total_fds, nofile.rlim_cur / 2);
  }
  outbound_limits.max_age = config.max_queue_age;
  impl->registry =
      std::make_unique<Registry>(registry_options, HowToBecomeAdmin(admins), outbound_limits);

  absl::StatusOr<std::string> state = ReadPrivateFile(impl->state_file, kMaxStateBytes);
  shmlane::v1::DaemonState parsed;
  if (state.ok()) {
    if (!parsed.ParseFromString(*state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state file ", config.state_file,
          " is corrupt; move it away to start empty (channels, grants and quotas are lost)"));
    }
    if (absl::Status s = impl->registry->RestoreState(parsed); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("state file ", config.state_file, ": ", s.message()));
    }
  } else if (!absl::IsNotFound(state.status())) {
    return state.status();
  }

  impl->StartStateWriter();
  {
    // Attachments and lanes go into the state file as they come and go
    // (group commit, nobody waits), so that a restarted daemon can re-adopt
    // them. And at once: the id bounds restored above must be durable
    // before this daemon hands out an id.
    Impl* raw = impl.get();
    impl->registry->SetStateChanged([raw] {
      raw->state_writer->Persist([](absl::Status s) {
        if (!s.ok()) {
          std::fprintf(stderr, "shmlaned: cannot save the live lanes to the state file: %s\n",
                       std::string(s.message()).c_str());
        }
      });
    });
    if (absl::Status s = impl->Save(); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot write the state file ", config.state_file, ": ", s.message()));
    }
  }
  if (!config.declare_file.empty()) {
    DeclarerOptions declare;
    declare.path = config.declare_file;
    declare.registry = impl->registry.get();
    declare.audit = impl->audit.get();
    declare.daemon_uid = ::geteuid();
    Impl* raw = impl.get();
    declare.persist = [raw] { return raw->Save(); };
    impl->declarer = std::make_unique<Declarer>(std::move(declare), parsed.declared());
    // A file that cannot be read or parsed stops the start: nothing is served
    // that the operator did not mean.
    if (absl::Status s = impl->declarer->ApplyNow(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--declare: ", s.message()));
    }
  }

  AttachServerOptions attach_options;
  attach_options.dir_fd = impl->dir_fd.get();
  attach_options.socket_name = "attach.sock";
  attach_options.socket_path = impl->attach_path;
  attach_options.socket_mode = *attach_gid >= 0 ? 0660 : 0666;
  attach_options.socket_gid = *attach_gid;
  attach_options.handshake_timeout = config.handshake_timeout;
  attach_options.max_connections = config.max_connections;
  attach_options.max_connections_per_uid = config.max_connections_per_uid;
  attach_options.max_handshakes_per_uid = config.max_handshakes_per_uid;
  attach_options.end_attachments_on_stop = config.close_lanes_on_stop;
  impl->attach =
      std::make_unique<AttachServer>(attach_options, impl->registry.get(), &impl->metrics);
  if (absl::Status s = impl->attach->Start(); !s.ok()) return s;

  Impl* raw = impl.get();
  PersistFn persist = [raw] { return raw->Save(); };
  ServiceContext services;
  services.registry = impl->registry.get();
  services.events = &impl->events;
  services.metrics = &impl->metrics;
  services.persist = persist;
  services.persist_async = [raw](std::function<void(absl::Status)> done) {
    raw->state_writer->Persist(std::move(done));
  };
  services.callers = &impl->callers;
  services.admins = admins;
  services.audit = impl->audit.get();
  impl->channel_service = std::make_unique<ChannelServiceImpl>(services);
  impl->access_service = std::make_unique<AccessServiceImpl>(services);
  grpc::EnableDefaultHealthCheckService(true);
  if (!config.health_listen.empty()) {
    // Plaintext, so it serves the health service and nothing of ours.
    grpc::ServerBuilder health;
    int port = 0;
    health.AddListeningPort(config.health_listen, grpc::InsecureServerCredentials(), &port);
    impl->health_server = health.BuildAndStart();
    if (impl->health_server == nullptr || port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot serve health checks on ",
                                                 config.health_listen,
                                                 " (address in use or not permitted?)"));
    }
    impl->health_address =
        absl::StrCat(config.health_listen.substr(0, config.health_listen.rfind(':')), ":", port);
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  ControlListenerOptions control_options;
  control_options.dir_fd = impl->dir_fd.get();
  control_options.socket_name = "control.sock";
  control_options.socket_path = impl->control_path;
  control_options.socket_mode =
      *admin_gid >= 0 && config.control_mode == 0600 ? 0660 : config.control_mode;
  control_options.socket_gid = *admin_gid;
  control_options.max_connections_per_uid = config.max_control_connections_per_uid;
  control_options.daemon_uid = ::geteuid();
  control_options.metrics = &impl->metrics;
  impl->control_listener = std::make_unique<ControlListener>(control_options, &impl->callers);
  if (absl::Status s = impl->control_listener->Bind(); !s.ok()) return s;
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  if (!config.listen.empty()) {
    std::shared_ptr<grpc::ServerCredentials> creds;
    {
      grpc::SslServerCredentialsOptions ssl;
      absl::StatusOr<std::string> cert = ReadSmallFile(config.tls_cert, 1 << 20);
      absl::StatusOr<std::string> key = ReadSmallFile(config.tls_key, 1 << 20);
      if (!cert.ok()) return absl::InvalidArgumentError(cert.status().message());
      if (!key.ok()) return absl::InvalidArgumentError(key.status().message());
      ssl.pem_key_cert_pairs.push_back({*key, *cert});
      if (!config.tls_client_ca.empty()) {
        absl::StatusOr<std::string> ca = ReadSmallFile(config.tls_client_ca, 1 << 20);
        if (!ca.ok()) return absl::InvalidArgumentError(ca.status().message());
        ssl.pem_root_certs = *ca;
        ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      }
      creds = grpc::SslServerCredentials(ssl);
    }
    builder.AddListeningPort(config.listen, creds, &tcp_port);
  }
  builder.SetMaxReceiveMessageSize(kMaxControlMessageBytes);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> timers;
  timers.push_back(NewRequestTimer(&impl->metrics));
  builder.experimental().SetInterceptorCreators(std::move(timers));
  builder.RegisterService(impl->channel_service.get());
  builder.RegisterService(impl->access_service.get());
  impl->server = builder.BuildAndStart();
  if (impl->server != nullptr) impl->control_listener->Start(impl->server.get());
  if (impl->server == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve the control API on unix:", impl->control_path,
                     config.listen.empty() ? "" : absl::StrCat(" and ", config.listen),
                     " (address in use or not permitted?)"));
  }
  if (!config.listen.empty()) {
    if (tcp_port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen));
    }
    impl->tcp_address =
        absl::StrCat(config.listen.substr(0, config.listen.rfind(':')), ":", tcp_port);
  }
  if (grpc::HealthCheckServiceInterface* health = impl->server->GetHealthCheckService()) {
    health->SetServingStatus("", true);
    health->SetServingStatus("shmlane.v1.ChannelService", true);
    health->SetServingStatus("shmlane.v1.AccessService", true);
  }
  if (impl->health_server != nullptr) {
    if (grpc::HealthCheckServiceInterface* health = impl->health_server->GetHealthCheckService()) {
      health->SetServingStatus("", true);
      health->SetServingStatus("shmlane.v1.ChannelService", true);
      health->SetServingStatus("shmlane.v1.AccessService", true);
    }
  }

  if (absl::StartsWith(config.metrics_listen, "unix:")) {
    absl::StatusOr<int> metrics_gid = LookUpGroup(config.metrics_group, "metrics-group");
    if (!metrics_gid.ok()) return metrics_gid.status();
    MetricsUnixServerOptions metrics_options;
    metrics_options.path = config.metrics_listen.substr(5);
    metrics_options.mode = *metrics_gid >= 0 ? 0660 : 0600;
    metrics_options.gid = *metrics_gid;
    metrics_options.runtime_dir_fd = impl->dir_fd.get();
    metrics_options.runtime_dir = config.runtime_dir;
    impl->exporter =
        std::make_shared<Exporter>(impl->registry.get(), &impl->metrics, config.per_lane_metrics);
    impl->metrics_unix = std::make_unique<MetricsUnixServer>(metrics_options, impl->exporter);
    if (absl::Status s = impl->metrics_unix->Start(); !s.ok()) return s;
    impl->metrics_url =
        absl::StrCat(config.metrics_listen, " (mode ", *metrics_gid >= 0 ? "0660" : "0600", ")");
  } else if (config.metrics_listen != "none") {
    impl->exporter =
        std::make_shared<Exporter>(impl->registry.get(), &impl->metrics, config.per_lane_metrics);
    try {
      // civetweb reports bind failures by throwing; nothing else here does.
      impl->exposer = std::make_unique<prometheus::Exposer>(config.metrics_listen, 2);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", config.metrics_listen, ": ", e.what(),
                       " (use --metrics-listen HOST:PORT, unix:PATH or none)"));
    }
    impl->exposer->RegisterCollectable(impl->exporter);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    const size_t colon = config.metrics_listen.rfind(':');
    const std::string host =
        colon == std::string::npos ? "0.0.0.0" : config.metrics_listen.substr(0, colon);
    impl->metrics_url =
        absl::StrCat("http://", host, ":", ports.empty() ? 0 : ports[0], "/metrics");
  }
  // Record that the state file exists and is writable now, not at the first change.
  if (absl::Status s = impl->Save(); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write the state file: ", s.message(), " (see --state-file)"));
  }
  if (impl->declarer != nullptr) {
    if (absl::Status s = impl->declarer->Start(); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("--declare: ", s.message()));
    }
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

void Daemon::Reload() {
  if (impl_ != nullptr && impl_->declarer != nullptr) impl_->declarer->Trigger();
}

absl::Status Daemon::Shutdown() {
  if (impl_ == nullptr || impl_->shut_down) return absl::OkStatus();
  impl_->shut_down = true;
  if (impl_->declarer != nullptr) impl_->declarer->Stop();
  impl_->control_listener->Stop();
  impl_->attach->Stop();
  if (impl_->metrics_unix != nullptr) impl_->metrics_unix->Stop();
  // Open WatchEvents streams get a last DAEMON_STOPPING event and end with
  // OK; anything still open after a short grace period is cancelled.
  impl_->events.PublishStopping("shmlaned is shutting down");
  impl_->server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(200)));
  if (impl_->health_server != nullptr) {
    impl_->health_server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(50)));
  }
  absl::Status saved = impl_->Save();
  impl_->registry->SetStateChanged(nullptr);
  impl_->state_writer.reset();  // every reply it held has gone out
  // The runtime directory's lock stays held: it is released when lock_fd
  // closes, at the process's exit (shmlaned) or at destruction (embedded),
  // so a successor waiting for it (--replace, --lock-wait) reads the state
  // saved above and finds our sockets gone. Nothing writes the state after
  // this point.
  // The metrics listener stays up: civetweb needs about a second to stop, so
  // shmlaned exits without waiting for it (~Daemon stops it when embedded).
  return saved;
}

std::string Daemon::Describe() const {
  std::string out = absl::StrCat("shmlaned ", SHMLANE_VERSION, " (pid ", ::getpid(), ") ready\n");
  absl::StrAppend(&out, "  control:  unix:", impl_->control_path, "\n");
  if (!impl_->config.listen.empty()) {
    absl::StrAppend(&out, "  control:  ", impl_->tcp_address, " (mTLS)\n");
  }
  if (!impl_->health_address.empty()) {
    absl::StrAppend(&out, "  health:   ", impl_->health_address, " (plaintext, health only)\n");
  }
  absl::StrAppend(&out, "  access:   control.sock ",
                  impl_->config.control_mode == 0666 ? "open to local users (0666)"
                  : impl_->config.admin_group.empty()
                      ? "administrators only (0600)"
                      : absl::StrCat("group ", impl_->config.admin_group, " (0660)"),
                  "\n");
  absl::StrAppend(&out, "  attach:   ", impl_->attach_path, "\n");
  absl::StrAppend(&out, "  metrics:  ", impl_->metrics_url, "\n");
  absl::StrAppend(&out, "  state:    ", impl_->config.state_file, "\n");
  if (impl_->declarer != nullptr) {
    absl::StrAppend(&out, "  declare:  ", impl_->config.declare_file, " (",
                    impl_->declarer->Describe(), "; re-read on change and SIGHUP)\n");
  }
  return out;
}

}  // namespace shmlane::control
