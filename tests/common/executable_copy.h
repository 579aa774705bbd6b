// Test helper: a copy of a binary that any uid can execute. The build tree
// may lie under a directory other users cannot traverse (a root user's home
// is 0700, and so is a `mktemp -d` clone), so a child that drops to another
// uid before exec would fail to run the original. Copies live in one 0755
// temporary directory per test process, removed at exit.
//
// Thread safety: may be called from any thread (before fork, not after).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace shmlane::testing {

absl::StatusOr<std::string> ExecutableByAnyone(const std::string& binary);

}  // namespace shmlane::testing
