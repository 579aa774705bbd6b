// Request/reply example, client side: sends numbered requests to the echo
// server, checks every reply, and prints the round-trip latency.
//
//   echo_client [--channel echo] [--calls 10000] [--size 32] [--runtime-dir DIR]
//
// (`--flag=value` works as well; --help lists the flags.) Exit status: 0 ok,
// 1 attach failed, 2 a call failed (or a usage error), 3 a wrong reply.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/examples/example_flags.h"
#include "clients/request_reply.h"

int main(int argc, char** argv) {
  CLI::App app(
      "Request/reply example, client side: sends numbered requests to the echo server, checks "
      "every reply and prints the round-trip latency.",
      "echo_client");
  shmlane::examples::InitApp(app);
  std::string channel = "echo";
  int calls = 10000;
  size_t size = 32;
  shmlane::client::Client::Options options;
  app.add_option("--channel", channel, "The REQUEST_REPLY channel to call")->type_name("NAME");
  app.add_option("--calls", calls, "How many calls to make, one after the other")->type_name("N");
  app.add_option("--size", size, "Bytes per request (at least its \"request N \" text)")
      ->type_name("BYTES")
      ->check(CLI::NonNegativeNumber);  // CLI11 would take "-1" as 2^64 - 1
  shmlane::examples::AddRuntimeDirFlag(app, &options.runtime_dir);
  if (std::optional<int> exit = shmlane::examples::ParseFlags(app, argc, argv)) return *exit;

  auto client = shmlane::client::Client::Attach(channel, options);
  if (!client.ok()) {
    std::fprintf(stderr, "echo_client: %s\n", client.status().ToString().c_str());
    return 1;
  }

  std::vector<absl::Duration> rtts;
  rtts.reserve(static_cast<size_t>(std::max(calls, 0)));
  std::string request, reply;
  for (int i = 0; i < calls; ++i) {
    request = absl::StrCat("request ", i, " ");
    request.resize(std::max(size, request.size()), '.');
    const absl::Time start = absl::Now();
    const absl::Status s =
        client->Call(std::as_bytes(std::span(request)), &reply, start + absl::Seconds(2));
    if (!s.ok()) {
      std::fprintf(stderr, "echo_client: call %d: %s\n", i, s.ToString().c_str());
      return 2;
    }
    rtts.push_back(absl::Now() - start);
    if (reply != request) {
      std::fprintf(stderr, "echo_client: call %d: reply does not match the request\n", i);
      return 3;
    }
  }
  if (rtts.empty()) return 0;
  std::sort(rtts.begin(), rtts.end());
  auto at = [&](double q) {
    return rtts[static_cast<size_t>(q * static_cast<double>(rtts.size() - 1))];
  };
  std::printf("echo_client: %d calls, round trip p50 %s p99 %s max %s\n", calls,
              absl::FormatDuration(at(0.5)).c_str(), absl::FormatDuration(at(0.99)).c_str(),
              absl::FormatDuration(rtts.back()).c_str());
  return 0;
}
