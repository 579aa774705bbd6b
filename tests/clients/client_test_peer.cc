// The other process in the client integration tests: one role per run,
// driven by flags, reporting on stdout with one word per line the test
// waits for (ATTACHED, FULL, WROTE, DONE, CLOSED, STATUS).
//
//   client_test_peer produce  --dir D --channel C --frames N [--size S] [--index K]
//                             [--report-full] [--hold]
//   client_test_peer stall    --dir D --channel C          (consumer that never reads)
//   client_test_peer call     --dir D --channel C --calls N [--index K]
//   client_test_peer serve    --dir D --channel C [--answer N]  (echo server; after N
//                             requests it stops answering and waits to be killed)
//   client_test_peer attach   --dir D --channel C --role producer|consumer|client|server
//
// Frames of `produce` start with {u32 index, u32 0, u64 seq}.
// Exit codes: 0 done; 2 usage; 3 lane closed; 4 other write/call failure;
// `attach` exits with the attach status code.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"
#include "clients/request_reply.h"

namespace {

using shmlane::client::WriteResult;

std::string Flag(int argc, char** argv, std::string_view name, std::string fallback = "") {
  const std::string flag = "--" + std::string(name);
  for (int i = 2; i < argc; ++i) {
    if (argv[i] == flag) return i + 1 < argc && argv[i + 1][0] != '-' ? argv[i + 1] : "1";
  }
  return fallback;
}

void Say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int Produce(int argc, char** argv, shmlane::client::AttachOptions options) {
  const uint64_t frames = std::stoull(Flag(argc, argv, "frames", "1000"));
  const size_t size = std::max<size_t>(std::stoul(Flag(argc, argv, "size", "64")), 16);
  const uint32_t index = static_cast<uint32_t>(std::stoul(Flag(argc, argv, "index", "0")));
  const bool report_full = !Flag(argc, argv, "report-full").empty();
  options.client_name = absl::StrCat("producer-", index);
  auto producer = shmlane::client::Producer::Attach(Flag(argc, argv, "channel"), options);
  if (!producer.ok()) {
    Say(absl::StrCat("STATUS ", producer.status().ToString()));
    return static_cast<int>(producer.status().code());
  }
  Say("ATTACHED");
  std::vector<std::byte> frame(size);
  bool said_full = false;
  absl::Time full_at = absl::InfinitePast();
  for (uint64_t seq = 0; seq < frames; ++seq) {
    std::memcpy(frame.data(), &index, sizeof(index));
    std::memcpy(frame.data() + 8, &seq, sizeof(seq));
    WriteResult w = producer->TryWrite(frame);
    if (w == WriteResult::kFull) {
      if (report_full && !said_full) {
        said_full = true;
        full_at = absl::Now();
        Say("FULL");
      }
      w = producer->Write(frame);
    }
    if (w == WriteResult::kClosed) {
      Say(absl::StrCat("CLOSED after ", seq, " frames, ",
                       absl::ToDoubleMilliseconds(absl::Now() - full_at),
                       " ms after FULL: ", producer->status().ToString()));
      return 3;
    }
    if (w != WriteResult::kOk) {
      Say(absl::StrCat("FAILED ", shmlane::client::ToStatus(w).ToString()));
      return 4;
    }
  }
  Say(absl::StrCat("WROTE ", frames));
  if (!Flag(argc, argv, "hold").empty()) {
    for (;;) ::pause();  // until the test kills us
  }
  producer->Close();
  Say("DONE");
  return 0;
}

int Stall(int argc, char** argv, shmlane::client::AttachOptions options) {
  shmlane::client::Consumer::Options copts;
  static_cast<shmlane::client::AttachOptions&>(copts) = options;
  auto consumer = shmlane::client::Consumer::Attach(Flag(argc, argv, "channel"), copts);
  if (!consumer.ok()) {
    Say(absl::StrCat("STATUS ", consumer.status().ToString()));
    return static_cast<int>(consumer.status().code());
  }
  Say("ATTACHED");
  for (;;) ::pause();
}

int Call(int argc, char** argv, shmlane::client::AttachOptions options) {
  const uint64_t calls = std::stoull(Flag(argc, argv, "calls", "100"));
  const std::string index = Flag(argc, argv, "index", "0");
  options.client_name = "client-" + index;
  auto client = shmlane::client::Client::Attach(Flag(argc, argv, "channel"), options);
  if (!client.ok()) {
    Say(absl::StrCat("STATUS ", client.status().ToString()));
    return static_cast<int>(client.status().code());
  }
  Say("ATTACHED");
  for (uint64_t i = 0; i < calls; ++i) {
    const std::string request = absl::StrCat("client ", index, " call ", i);
    auto reply = client->Call(request, absl::Now() + absl::Seconds(10));
    if (!reply.ok()) {
      Say(absl::StrCat("FAILED call ", i, ": ", reply.status().ToString()));
      return absl::IsUnavailable(reply.status()) ? 3 : 4;
    }
    if (*reply != "echo: " + request) {
      Say(absl::StrCat("FAILED call ", i, ": wrong reply '", *reply, "'"));
      return 4;
    }
  }
  Say("DONE");
  return 0;
}

int Serve(int argc, char** argv, shmlane::client::AttachOptions options) {
  const uint64_t answer = std::stoull(Flag(argc, argv, "answer", "18446744073709551615"));
  shmlane::client::Server::Options sopts;
  static_cast<shmlane::client::AttachOptions&>(sopts) = options;
  sopts.client_name = "echo-server";
  auto server = shmlane::client::Server::Attach(Flag(argc, argv, "channel"), sopts);
  if (!server.ok()) {
    Say(absl::StrCat("STATUS ", server.status().ToString()));
    return static_cast<int>(server.status().code());
  }
  Say("ATTACHED");
  uint64_t served = 0;
  while (served < answer) {
    auto n = server->ServeOnce(
        [&](const shmlane::client::Server::Request& r, std::string* reply) {
          ++served;
          *reply = absl::StrCat("echo: ", std::string(r.data_as_string_view()));
          return absl::OkStatus();
        },
        absl::InfiniteFuture());
    if (!n.ok()) {
      Say(absl::StrCat("STATUS ", n.status().ToString()));
      return 4;
    }
  }
  Say(absl::StrCat("SERVED ", served));
  for (;;) ::pause();
}

int AttachOnly(int argc, char** argv, const shmlane::client::AttachOptions& options) {
  const std::string role = Flag(argc, argv, "role", "producer");
  const std::string channel = Flag(argc, argv, "channel");
  absl::Status status;
  if (role == "producer") {
    status = shmlane::client::Producer::Attach(channel, options).status();
  } else if (role == "consumer") {
    shmlane::client::Consumer::Options copts;
    static_cast<shmlane::client::AttachOptions&>(copts) = options;
    status = shmlane::client::Consumer::Attach(channel, copts).status();
  } else if (role == "client") {
    status = shmlane::client::Client::Attach(channel, options).status();
  } else {
    shmlane::client::Server::Options sopts;
    static_cast<shmlane::client::AttachOptions&>(sopts) = options;
    status = shmlane::client::Server::Attach(channel, sopts).status();
  }
  Say(absl::StrCat("STATUS ", status.ToString()));
  return static_cast<int>(status.code());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  shmlane::client::AttachOptions options;
  options.runtime_dir = Flag(argc, argv, "dir");
  const std::string_view mode = argv[1];
  if (mode == "produce") return Produce(argc, argv, options);
  if (mode == "stall") return Stall(argc, argv, options);
  if (mode == "call") return Call(argc, argv, options);
  if (mode == "serve") return Serve(argc, argv, options);
  if (mode == "attach") return AttachOnly(argc, argv, options);
  return 2;
}
