#include "tests/common/executable_copy.h"

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace shmlane::testing {
namespace {

int Remove(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

std::string* copies_dir = nullptr;

void RemoveCopies() {
  if (copies_dir != nullptr) ::nftw(copies_dir->c_str(), Remove, 16, FTW_DEPTH | FTW_PHYS);
}

}  // namespace

absl::StatusOr<std::string> ExecutableByAnyone(const std::string& binary) {
  static std::mutex mu;
  static auto* copies = new std::map<std::string, std::string>();
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = copies->find(binary); it != copies->end()) return it->second;
  if (copies_dir == nullptr) {
    std::string tmpl = "/tmp/shmlane-test-bin-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr || ::chmod(tmpl.c_str(), 0755) != 0) {
      return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
    }
    copies_dir = new std::string(tmpl);
    std::atexit(RemoveCopies);
  }
  const std::string copy =
      absl::StrCat(*copies_dir, "/", std::filesystem::path(binary).filename().string());
  std::error_code ec;
  std::filesystem::copy_file(binary, copy, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec || ::chmod(copy.c_str(), 0755) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot copy ", binary, " to ", copy, " for another uid: ", ec.message()));
  }
  (*copies)[binary] = copy;
  return copy;
}

}  // namespace shmlane::testing
