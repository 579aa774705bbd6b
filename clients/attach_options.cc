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

std::string AttachSocketPath(std::string_view explicit_dir) {
  return absl::StrCat(ResolveRuntimeDir(explicit_dir), "/attach.sock");
}

}  // namespace shmlane::client
