// main() for data-plane test binaries: GoogleTest plus the hang watchdog.
#include "gtest/gtest.h"
#include "tests/dataplane/watchdog.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  shmlane::testing::InstallTestWatchdog();
  return RUN_ALL_TESTS();
}
