// Resume credentials: the secret a holder of an attachment or a lane presents
// to hand it back to a restarted daemon (attach.proto, Resume). The daemon
// makes one per attachment and per lane, sends it only to the holders, and
// keeps (and persists) only its SHA-256, so the state file alone cannot be
// used to resume a lane.
//
// Thread safety: stateless functions.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shmlane::control {

inline constexpr size_t kResumeCredentialBytes = 32;

// kResumeCredentialBytes from the kernel's CSPRNG (getrandom).
absl::StatusOr<std::string> NewResumeCredential();
// SHA-256 of `bytes` (32 raw bytes).
std::string Sha256(absl::string_view bytes);
// Whether `presented` hashes to `sha256`, in time independent of where they
// differ.
bool CredentialMatches(absl::string_view presented, absl::string_view sha256);

}  // namespace shmlane::control
