#include "control/resume_credential.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace shmlane::control {

absl::StatusOr<std::string> NewResumeCredential() {
  std::string out(kResumeCredentialBytes, '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::getrandom(out.data() + got, out.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(n);
  }
  return out;
}

std::string Sha256(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    return std::string();  // matches nothing (CredentialMatches wants 32 bytes)
  }
  return std::string(reinterpret_cast<const char*>(digest), len);
}

bool CredentialMatches(absl::string_view presented, absl::string_view sha256) {
  if (presented.size() != kResumeCredentialBytes || sha256.size() != 32) return false;
  const std::string got = Sha256(presented);
  return got.size() == 32 && CRYPTO_memcmp(got.data(), sha256.data(), 32) == 0;
}

}  // namespace shmlane::control
