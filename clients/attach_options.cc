#include "clients/attach_options.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace shmlane::client {

std::string ResolveRuntimeDir(std::string_view explicit_dir) {
  if (!explicit_dir.empty()) return std::string(explicit_dir);
  if (const char* dir = std::getenv("SHMLANE_RUNTIME_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat(xdg, "/shmlane");
  }
  return "/run/shmlane";
}

dataplane::WaitOptions ResolveWait(const AttachOptions& options, int channel_preference) {
  dataplane::WaitOptions w = options.wait;
  if (options.wait_preference.has_value()) {
    w.preference = *options.wait_preference;
    return w;
  }
  // shmlane.v1.WaitPreference numbers equal dataplane::WaitPreference's
  // (wait_strategy.h); anything else, UNSPECIFIED included, is balanced.
  switch (channel_preference) {
    case static_cast<int>(dataplane::WaitPreference::kLatency):
      w.preference = dataplane::WaitPreference::kLatency;
      break;
    case static_cast<int>(dataplane::WaitPreference::kEfficiency):
      w.preference = dataplane::WaitPreference::kEfficiency;
      break;
    default:
      w.preference = dataplane::WaitPreference::kBalanced;
  }
  return w;
}

std::string AttachSocketPath(std::string_view explicit_dir) {
  return absl::StrCat(ResolveRuntimeDir(explicit_dir), "/attach.sock");
}

}  // namespace shmlane::client
