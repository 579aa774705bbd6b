// shmlaned's TCP control listener: never plaintext (every caller is
// identified by its client certificate, mTLS with --tls-client-ca; names in
// --tls-admins), a plaintext --health-listen that serves health only, and
// server reflection over
// it. A throwaway PKI (two CAs, a server and client certificates) is made
// with the openssl command at test time in the daemon's temporary directory.
#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataplane/unique_fd.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace shmlane::testing {
namespace {

constexpr char kOpenssl[] = "/usr/bin/openssl";

// A key and certificate pair on disk.
struct KeyPair {
  std::string cert;
  std::string key;
};

// Runs `openssl args...`; an error carries its stderr.
absl::Status Openssl(std::vector<std::string> args) {
  args.insert(args.begin(), kOpenssl);
  const CommandResult r = RunCommand(args);
  if (r.exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl ", args[1], " exited with ", r.exit_code, ": ", r.err));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot write ", path));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  return std::fclose(f) == 0 && ok ? absl::OkStatus()
                                   : absl::InternalError(absl::StrCat("cannot write ", path));
}

// A self-signed CA (P-256 keys: fast to make).
absl::StatusOr<KeyPair> MakeCa(const std::string& dir, const std::string& name) {
  KeyPair ca{dir + "/" + name + ".pem", dir + "/" + name + ".key"};
  absl::Status s =
      Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-keyout", ca.key, "-out", ca.cert, "-days", "2", "-subj", "/CN=" + name});
  if (!s.ok()) return s;
  return ca;
}

// A leaf certificate for `common_name`, signed by `ca`, with the X.509v3
// extensions in `extensions` (openssl -extfile lines).
absl::StatusOr<KeyPair> MakeLeaf(const std::string& dir, const std::string& name,
                                 const std::string& common_name, const std::string& extensions,
                                 const KeyPair& ca, int serial) {
  KeyPair leaf{dir + "/" + name + ".pem", dir + "/" + name + ".key"};
  const std::string csr = dir + "/" + name + ".csr";
  const std::string ext = dir + "/" + name + ".ext";
  if (absl::Status s = WriteFile(ext, extensions); !s.ok()) return s;
  absl::Status s =
      Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", leaf.key, "-out", csr, "-subj", "/CN=" + common_name});
  if (!s.ok()) return s;
  s = Openssl({"x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial",
               absl::StrCat(serial), "-days", "2", "-extfile", ext, "-out", leaf.cert});
  if (!s.ok()) return s;
  return leaf;
}

// Everything the tests need: the CA the daemon trusts, a server certificate
// for 127.0.0.1 and localhost, a client certificate from the same CA, and a
// second CA with its own client certificate that the daemon does not trust.
struct Pki {
  KeyPair ca;
  KeyPair server;
  KeyPair client;
  KeyPair other_ca;
  KeyPair other_client;
};

absl::StatusOr<Pki> MakePki(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0) return absl::InternalError("cannot create " + dir);
  constexpr char kServerExt[] =
      "basicConstraints = critical, CA:FALSE\n"
      "keyUsage = critical, digitalSignature\n"
      "extendedKeyUsage = serverAuth\n"
      "subjectAltName = IP:127.0.0.1, DNS:localhost\n";
  constexpr char kClientExt[] =
      "basicConstraints = critical, CA:FALSE\n"
      "keyUsage = critical, digitalSignature\n"
      "extendedKeyUsage = clientAuth\n";
  Pki pki;
  absl::StatusOr<KeyPair> made = MakeCa(dir, "ca");
  if (!made.ok()) return made.status();
  pki.ca = *made;
  made = MakeLeaf(dir, "server", "localhost", kServerExt, pki.ca, 2);
  if (!made.ok()) return made.status();
  pki.server = *made;
  made = MakeLeaf(dir, "client", "shmlane-test-orchestrator", kClientExt, pki.ca, 3);
  if (!made.ok()) return made.status();
  pki.client = *made;
  made = MakeCa(dir, "other-ca");
  if (!made.ok()) return made.status();
  pki.other_ca = *made;
  made = MakeLeaf(dir, "other-client", "shmlane-test-stranger", kClientExt, pki.other_ca, 4);
  if (!made.ok()) return made.status();
  pki.other_client = *made;
  return pki;
}

std::string ReadText(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// A TCP port nobody listens on right now (bound to port 0, then released).
int UnusedTcpPort() {
  dataplane::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  return ntohs(addr.sin_port);
}

// The TCP port from the daemon's "control:  HOST:PORT (...)" line, or 0.
int TcpControlPort(const TestDaemon& d, const std::string& host) {
  const std::string out = d.stdout_text();
  const std::string prefix = absl::StrCat("control:  ", host, ":");
  const size_t at = out.find(prefix);
  if (at == std::string::npos) return 0;
  const size_t start = at + prefix.size();
  const size_t end = out.find(' ', start);
  int port = 0;
  return absl::SimpleAtoi(out.substr(start, end - start), &port) ? port : 0;
}

// shmlanectl --server TARGET [flags...] channels list, with a short deadline
// so that a refused handshake fails fast.
CommandResult ListOver(const std::string& target, std::vector<std::string> flags) {
  std::vector<std::string> argv = {SHMLANECTL_PATH, "--server", target, "--timeout", "5s"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("channels");
  argv.push_back("list");
  return RunCommand(argv);
}

class DaemonTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kOpenssl, X_OK) != 0) {
      GTEST_SKIP() << kOpenssl << " is missing (Debian package openssl; scripts/install-deps.sh)";
    }
    absl::StatusOr<Pki> pki = MakePki(d_.base_dir() + "/pki");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
  }

  // Starts the daemon with --listen HOST:0 and `extra` flags, creates a
  // channel through control.sock, and returns HOST:PORT of the listener.
  std::string StartListening(const std::string& host, std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--listen", host + ":0"});
    absl::Status started = d_.Start(extra);
    EXPECT_TRUE(started.ok()) << started << d_.stderr_text();
    const int port = TcpControlPort(d_, host);
    EXPECT_GT(port, 0) << d_.stdout_text();
    const CommandResult created = d_.Ctl({"channels", "create", "over-tcp"});
    EXPECT_EQ(created.exit_code, 0) << created.err;
    return absl::StrCat(host == "0.0.0.0" ? "127.0.0.1" : host, ":", port);
  }

  std::vector<std::string> ServerTls() const {
    return {"--tls-cert", pki_.server.cert, "--tls-key", pki_.server.key};
  }
  // Server certificate plus client verification: what --listen needs.
  std::vector<std::string> MutualTls() const {
    return {"--tls-cert",    pki_.server.cert,  "--tls-key",
            pki_.server.key, "--tls-client-ca", pki_.ca.cert};
  }
  // The client flags of a caller with the trusted client certificate.
  std::vector<std::string> TrustedClient() const {
    return {"--tls-ca", pki_.ca.cert, "--tls-cert", pki_.client.cert, "--tls-key", pki_.client.key};
  }

  TestDaemon d_;
  Pki pki_;
};

TEST_F(DaemonTlsTest, PlaintextOrServerOnlyTlsOnTcpIsRefused) {
  const int port = UnusedTcpPort();
  ASSERT_GT(port, 0);
  // Before: plaintext on loopback served the whole control API, so every
  // local user (and every container in the network namespace) was an
  // administrator.
  for (const std::string& listen : {absl::StrCat("127.0.0.1:", port),
                                    absl::StrCat("0.0.0.0:", port), absl::StrCat("[::]:", port)}) {
    auto r = d_.RunExpectingExit(
        {"--runtime-dir", d_.runtime_dir(), "--metrics-listen", "none", "--listen", listen});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 2) << listen << ": " << r->err;
    EXPECT_TRUE(absl::StrContains(r->err, "--listen " + listen + " needs --tls-cert")) << r->err;
    EXPECT_TRUE(absl::StrContains(r->err, "--health-listen")) << r->err;
    EXPECT_EQ(r->out.find("ready"), std::string::npos) << r->out;
  }
  // A server certificate alone gives callers no identity: refused too.
  std::vector<std::string> args = {"--runtime-dir", d_.runtime_dir(), "--metrics-listen",
                                   "none",          "--listen",       "127.0.0.1:0"};
  for (const std::string& f : ServerTls()) args.push_back(f);
  auto r = d_.RunExpectingExit(args);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, "--tls-client-ca")) << r->err;
  // Half a TLS configuration is a configuration error too.
  r = d_.RunExpectingExit({"--runtime-dir", d_.runtime_dir(), "--metrics-listen", "none",
                           "--listen", "127.0.0.1:0", "--tls-cert", pki_.server.cert});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, "--tls-cert and --tls-key go together")) << r->err;
  r = d_.RunExpectingExit({"--runtime-dir", d_.runtime_dir(), "--metrics-listen", "none",
                           "--listen", "127.0.0.1:0", "--tls-client-ca", pki_.ca.cert});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r->err, "--tls-client-ca needs --tls-cert")) << r->err;
}

TEST_F(DaemonTlsTest, HealthListenServesHealthAndNothingElse) {
  ASSERT_TRUE(d_.Start({"--health-listen", "127.0.0.1:0"}).ok()) << d_.stderr_text();
  const std::string out = d_.stdout_text();
  const size_t at = out.find("health:   127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string target = out.substr(at + 10, out.find(' ', at + 10) - (at + 10));
  ASSERT_EQ(d_.Ctl({"channels", "create", "hidden"}).exit_code, 0);
  CommandResult r = RunCommand({SHMLANECTL_PATH, "--server", target, "--timeout", "5s", "health"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "SERVING")) << r.out;
  r = ListOver(target, {});
  EXPECT_NE(r.exit_code, 0) << "the control API must not answer on the health port: " << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "UNIMPLEMENTED")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "hidden")) << r.out;
}

TEST_F(DaemonTlsTest, MutualTlsVerifiesTheServerByItsCaAndNames) {
  const std::string target = StartListening("127.0.0.1", MutualTls());
  EXPECT_TRUE(absl::StrContains(d_.stdout_text(), "(mTLS)")) << d_.stdout_text();
  const std::string port = target.substr(target.rfind(':') + 1);
  // Verified against the IP and the DNS subjectAltName.
  for (const std::string& name : {target, "localhost:" + port}) {
    CommandResult r = ListOver(name, TrustedClient());
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_TRUE(absl::StrContains(r.out, "over-tcp")) << r.out;
  }
  CommandResult r = ListOver(target, {});
  EXPECT_EQ(r.exit_code, 3) << "plaintext to a TLS listener: " << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "UNAVAILABLE")) << r.err;
  r = ListOver(target, {"--tls-ca", pki_.other_ca.cert, "--tls-cert", pki_.client.cert, "--tls-key",
                        pki_.client.key});
  EXPECT_EQ(r.exit_code, 3) << "a server certificate from an untrusted CA: " << r.out;
}

TEST_F(DaemonTlsTest, TlsAdminsNamesWhichCertificatesAdminister) {
  std::vector<std::string> flags = MutualTls();
  flags.insert(flags.end(), {"--tls-admins", "someone-else"});
  std::string target = StartListening("127.0.0.1", flags);
  CommandResult r = ListOver(target, TrustedClient());
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "PERMISSION_DENIED")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "shmlane-test-orchestrator")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--tls-admins")) << r.err;
  ASSERT_TRUE(d_.Stop().ok());
  flags = MutualTls();
  flags.insert(flags.end(), {"--tls-admins", "shmlane-test-orchestrator"});
  flags.insert(flags.begin(), {"--listen", "127.0.0.1:0"});
  ASSERT_TRUE(d_.Start(flags).ok()) << d_.stderr_text();
  target = absl::StrCat("127.0.0.1:", TcpControlPort(d_, "127.0.0.1"));
  r = ListOver(target, TrustedClient());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "over-tcp")) << r.out;  // kept in the state file
}

TEST_F(DaemonTlsTest, MutualTlsAcceptsOnlyClientsWithACertificateFromTheClientCa) {
  std::vector<std::string> flags = ServerTls();
  flags.insert(flags.end(), {"--tls-client-ca", pki_.ca.cert});
  const std::string target = StartListening("127.0.0.1", flags);
  CommandResult r = ListOver(target, {"--tls-ca", pki_.ca.cert});
  EXPECT_EQ(r.exit_code, 3) << "no client certificate: " << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "UNAVAILABLE")) << r.err;
  r = ListOver(target, {"--tls-ca", pki_.ca.cert, "--tls-cert", pki_.other_client.cert, "--tls-key",
                        pki_.other_client.key});
  EXPECT_EQ(r.exit_code, 3) << "a client certificate from another CA: " << r.out;
  r = ListOver(target, {});
  EXPECT_EQ(r.exit_code, 3) << "plaintext: " << r.out;
  r = ListOver(target, {"--tls-ca", pki_.ca.cert, "--tls-cert", pki_.client.cert, "--tls-key",
                        pki_.client.key});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "over-tcp")) << r.out;
}

TEST_F(DaemonTlsTest, TlsMayListenOnAllInterfaces) {
  const std::string target = StartListening("0.0.0.0", MutualTls());
  CommandResult r = ListOver(target, TrustedClient());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "over-tcp")) << r.out;
}

TEST_F(DaemonTlsTest, CliTlsFlagsAreChecked) {
  const std::string target = StartListening("127.0.0.1", MutualTls());
  CommandResult r = ListOver(target, {"--tls-ca", pki_.ca.cert, "--tls-cert", pki_.client.cert});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--tls-cert and --tls-key go together")) << r.err;
  r = ListOver(target, {"--tls-ca", d_.base_dir() + "/no-such.pem"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "cannot read --tls-ca")) << r.err;
  r = RunCommand({SHMLANECTL_PATH, "--runtime-dir", d_.runtime_dir(), "--tls-ca", pki_.ca.cert,
                  "channels", "list"});
  EXPECT_EQ(r.exit_code, 2) << "TLS flags without --server";
  EXPECT_TRUE(absl::StrContains(r.err, "apply to --server only")) << r.err;
  r = RunCommand({SHMLANECTL_PATH, "--help"});
  for (const char* flag : {"--server", "--tls-ca", "--tls-cert", "--tls-key"}) {
    EXPECT_TRUE(absl::StrContains(r.out, flag)) << flag;
  }
}

// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo, the version
// gRPC 1.51 serves. Its protos are not installed, so the few fields used are
// encoded and decoded by number with UnknownFieldSet:
//   ServerReflectionRequest:  file_containing_symbol = 4, list_services = 7
//   ServerReflectionResponse: file_descriptor_response = 4 { repeated bytes
//     file_descriptor_proto = 1 }, list_services_response = 6 { repeated
//     ServiceResponse service = 1 { string name = 1 } }, error_response = 7
class ReflectionStream {
 public:
  explicit ReflectionStream(const std::shared_ptr<grpc::Channel>& channel) : stub_(channel) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(15)));
    call_ = stub_.PrepareCall(
        &ctx_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq_);
    call_->StartCall(this);
    ok_ = Await();
  }
  ~ReflectionStream() {
    ctx_.TryCancel();
    grpc::Status ignored;
    call_->Finish(&ignored, this);
    Await();
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  // Sends one request (field `number` = `value`); returns the response bytes.
  absl::StatusOr<std::string> Ask(int number, const std::string& value) {
    google::protobuf::UnknownFieldSet request;
    request.AddLengthDelimited(number, value);
    std::string bytes;
    request.SerializeToString(&bytes);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer out(&slice, 1);
    if (!ok_) return absl::UnavailableError("the reflection call did not start");
    call_->Write(out, this);
    if (!Await()) return absl::UnavailableError("cannot send a reflection request");
    grpc::ByteBuffer in;
    call_->Read(&in, this);
    if (!Await()) return absl::UnavailableError("no reflection response");
    std::vector<grpc::Slice> slices;
    if (!in.Dump(&slices).ok()) return absl::DataLossError("unreadable response");
    std::string response;
    for (const grpc::Slice& s : slices) {
      response.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return response;
  }

 private:
  // Waits for the one operation in flight.
  bool Await() {
    void* tag = nullptr;
    bool ok = false;
    return cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + absl::Seconds(15))) ==
               grpc::CompletionQueue::GOT_EVENT &&
           ok;
  }

  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool ok_ = false;
};

// The length-delimited values of field `number` in the serialized message
// `bytes` (a test failure if it does not parse).
std::vector<std::string> Fields(const std::string& bytes, int number) {
  google::protobuf::UnknownFieldSet set;
  if (!set.ParseFromString(bytes)) {
    ADD_FAILURE() << "unparsable reflection message";
    return {};
  }
  std::vector<std::string> out;
  for (int i = 0; i < set.field_count(); ++i) {
    const google::protobuf::UnknownField& f = set.field(i);
    if (f.number() == number && f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(f.length_delimited());
    }
  }
  return out;
}

TEST_F(DaemonTlsTest, ServerReflectionWorksOverMutualTls) {
  std::vector<std::string> flags = ServerTls();
  flags.insert(flags.end(), {"--tls-client-ca", pki_.ca.cert});
  const std::string target = StartListening("127.0.0.1", flags);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadText(pki_.ca.cert);
  ssl.pem_cert_chain = ReadText(pki_.client.cert);
  ssl.pem_private_key = ReadText(pki_.client.key);
  ReflectionStream stream(grpc::CreateChannel(target, grpc::SslCredentials(ssl)));

  absl::StatusOr<std::string> listed = stream.Ask(7, "*");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_TRUE(Fields(*listed, 7).empty()) << "error_response";
  std::set<std::string> services;
  for (const std::string& list : Fields(*listed, 6)) {
    for (const std::string& service : Fields(list, 1)) {
      for (const std::string& name : Fields(service, 1)) services.insert(name);
    }
  }
  for (const char* name :
       {"shmlane.v1.ChannelService", "shmlane.v1.AccessService", "grpc.health.v1.Health"}) {
    EXPECT_EQ(services.count(name), 1u) << name;
  }

  absl::StatusOr<std::string> file = stream.Ask(4, "shmlane.v1.ChannelService");
  ASSERT_TRUE(file.ok()) << file.status();
  const std::vector<std::string> responses = Fields(*file, 4);
  ASSERT_EQ(responses.size(), 1u) << "file_descriptor_response";
  bool found = false;
  for (const std::string& bytes : Fields(responses[0], 1)) {
    google::protobuf::FileDescriptorProto proto;
    ASSERT_TRUE(proto.ParseFromString(bytes));
    for (const google::protobuf::ServiceDescriptorProto& service : proto.service()) {
      if (proto.package() == "shmlane.v1" && service.name() == "ChannelService") {
        found = service.method_size() > 0;
      }
    }
  }
  EXPECT_TRUE(found) << "no descriptor with shmlane.v1.ChannelService and its methods";
}

}  // namespace
}  // namespace shmlane::testing
