// Request/reply example, client side: sends numbered requests to the echo
// server, checks every reply, and prints the round-trip latency.
//
//   echo_client [--channel=echo] [--calls=10000] [--size=32] [--runtime-dir=DIR]
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/request_reply.h"

namespace {

std::string Flag(int argc, char** argv, std::string_view name, std::string fallback) {
  const std::string prefix = "--" + std::string(name) + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with(prefix)) return argv[i] + prefix.size();
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = std::stoi(Flag(argc, argv, "calls", "10000"));
  const size_t size = std::stoul(Flag(argc, argv, "size", "32"));
  shmlane::client::Client::Options options;
  options.runtime_dir = Flag(argc, argv, "runtime-dir", "");
  auto client = shmlane::client::Client::Attach(Flag(argc, argv, "channel", "echo"), options);
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
