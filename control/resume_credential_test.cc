#include "control/resume_credential.h"

#include <set>
#include <string>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

TEST(ResumeCredentialTest, Sha256OfKnownInput) {
  // FIPS 180-2, appendix B.1.
  EXPECT_EQ(absl::BytesToHexString(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ResumeCredentialTest, FreshCredentialsAre32RandomBytes) {
  std::set<std::string> seen;
  for (int i = 0; i < 64; ++i) {
    absl::StatusOr<std::string> c = NewResumeCredential();
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_EQ(c->size(), kResumeCredentialBytes);
    EXPECT_TRUE(seen.insert(*c).second) << "a credential repeated";
  }
}

TEST(ResumeCredentialTest, MatchesOnlyItsOwnHash) {
  absl::StatusOr<std::string> c = NewResumeCredential();
  ASSERT_TRUE(c.ok());
  const std::string hash = Sha256(*c);
  EXPECT_TRUE(CredentialMatches(*c, hash));
  std::string flipped = *c;
  flipped[31] = static_cast<char>(flipped[31] ^ 1);
  EXPECT_FALSE(CredentialMatches(flipped, hash));
  EXPECT_FALSE(CredentialMatches(c->substr(0, 31), hash)) << "a short credential matched";
  EXPECT_FALSE(CredentialMatches(*c, hash.substr(0, 31))) << "a short hash matched";
  EXPECT_FALSE(CredentialMatches("", "")) << "empty matched empty";
  EXPECT_FALSE(CredentialMatches(hash, hash)) << "the hash itself is not the credential";
}

}  // namespace
}  // namespace shmlane::control
