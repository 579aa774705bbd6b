#include "control/state_writer.h"

#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "control/runtime_dir.h"
#include "gtest/gtest.h"

namespace shmlane::control {
namespace {

// The "registry": a change counter; the state file holds its value.
struct Counter {
  absl::Mutex mu;
  uint64_t value ABSL_GUARDED_BY(mu) = 0;
  uint64_t Change() {
    absl::MutexLock lock(&mu);
    return ++value;
  }
  std::string Snapshot() {
    absl::MutexLock lock(&mu);
    return absl::StrCat(value);
  }
};

uint64_t ReadValue(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, 1 << 10);
  uint64_t v = 0;
  if (!text.ok() || !absl::SimpleAtoi(*text, &v)) return 0;
  return v;
}

// 16 threads, each making 20 changes and waiting for each to be durable:
// every wait ends with a file that holds the change, and writes that arrive
// together share one write.
TEST(StateWriterTest, ConcurrentChangesShareWritesAndEachIsDurableWhenTold) {
  const std::string path = ::testing::TempDir() + "/group-commit.state";
  Counter counter;
  StateWriter writer(path, [&]() -> absl::StatusOr<std::string> {
    // A slow disk, so requests pile up behind each write.
    absl::SleepFor(absl::Milliseconds(2));
    return counter.Snapshot();
  });
  constexpr int kThreads = 16, kChanges = 20;
  std::atomic<int> not_covered{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kChanges; ++i) {
        const uint64_t mine = counter.Change();
        if (!writer.PersistAndWait().ok()) ++failed;
        // Later writes may have overtaken it, never an earlier state.
        if (ReadValue(path) < mine) ++not_covered;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(not_covered.load(), 0) << "a change was acknowledged before a write covered it";
  EXPECT_EQ(writer.requests(), uint64_t{kThreads * kChanges});
  std::printf("%d changes in %llu writes\n", kThreads * kChanges,
              static_cast<unsigned long long>(writer.writes()));
  // With 16 waiting threads and a 2 ms write, batches are large; one write
  // per change would be 320.
  EXPECT_LE(writer.writes(), writer.requests() / 2);
  EXPECT_EQ(ReadValue(path), uint64_t{kThreads * kChanges});
}

TEST(StateWriterTest, AFailedWriteReachesEveryRequesterItCovered) {
  StateWriter writer("/nonexistent-dir-for-shmlane-test/state",
                     []() -> absl::StatusOr<std::string> { return std::string("x"); });
  const absl::Status s = writer.PersistAndWait();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent-dir-for-shmlane-test"), absl::string_view::npos) << s;
  StateWriter unserializable(::testing::TempDir() + "/never-written", []() {
    return absl::StatusOr<std::string>(absl::InternalError("cannot serialize"));
  });
  EXPECT_EQ(unserializable.PersistAndWait().message(), "cannot serialize");
  EXPECT_NE(::access((::testing::TempDir() + "/never-written").c_str(), F_OK), 0);
}

TEST(StateWriterTest, DestructionServesWhatIsQueued) {
  const std::string path = ::testing::TempDir() + "/queued.state";
  std::atomic<int> told{0};
  {
    StateWriter writer(path, []() -> absl::StatusOr<std::string> { return std::string("7"); });
    for (int i = 0; i < 5; ++i) {
      writer.Persist([&](absl::Status s) {
        if (s.ok()) ++told;
      });
    }
  }
  EXPECT_EQ(told.load(), 5);
  EXPECT_EQ(ReadValue(path), 7u);
}

}  // namespace
}  // namespace shmlane::control
