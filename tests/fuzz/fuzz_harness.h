// Shared pieces of the mid-call fuzz targets (consumer_fuzz.cc,
// producer_fuzz.cc): input decoding, the call deadline oracle and its
// watchdog, frames whose content the receiver can check, and the adversary's
// atomic view of a lane's shared memory.
//
// The targets run the victim on libFuzzer's thread and a hostile peer on a
// second thread that acts while the victim is inside its calls. Every blocking
// call of the victim is bracketed by a CallGuard: it must return within its
// deadline plus kSlack, else the target aborts with a message (and, if the
// call never returns, the watchdog thread sends SIGABRT to the victim so that
// libFuzzer prints the victim's stack and saves the input).
//
// Thread safety: CallGuard and Watchdog are for the victim thread; FrameLog
// is written by one producer thread and read by one consumer thread; the
// ShmView helpers may run anywhere (every access is a std::atomic_ref).
#pragma once

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dataplane/lane.h"
#include "dataplane/lane_layout.h"

namespace shmlane::fuzz {

namespace sd = ::shmlane::dataplane;

inline uint64_t NowNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// How late a call may return past its deadline. Generous on purpose: ASan on
// a loaded 2-vCPU machine can stall a thread for tens of milliseconds, and
// the defects this catches (re-parking through a doorbell flood, loops
// without a deadline check) overshoot without bound. SHMLANE_FUZZ_SLACK_MS
// overrides it.
inline uint64_t SlackNs() {
  static const uint64_t slack = [] {
    const char* env = std::getenv("SHMLANE_FUZZ_SLACK_MS");
    const long ms = env != nullptr ? std::strtol(env, nullptr, 10) : 50;
    return static_cast<uint64_t>(ms > 0 ? ms : 50) * 1'000'000u;
  }();
  return slack;
}

// SHMLANE_FUZZ_TRACE=1 prints every guarded call and its duration (for
// understanding a reproducer; off while fuzzing).
inline bool Tracing() {
  static const bool on = std::getenv("SHMLANE_FUZZ_TRACE") != nullptr;
  return on;
}

// A victim that sits on a published frame this long while waiting for one
// has missed a wake-up (the lost-wake-up oracles).
inline constexpr uint64_t kReactNs = 50'000'000;

// Oracles tied to one listed defect of issue 8 can be switched off by name
// (SHMLANE_FUZZ_SKIP=park-after-deadline,lost-wakeup,defer-publish,invalid-bell)
// to measure coverage on code that still has that defect; the generic
// oracles (deadline + slack, crashes, exact delivery, sticky kBroken) cannot.
//   park-after-deadline  issue 8 item 1 (re-parking through a doorbell flood)
//   lost-wakeup          item 2 (a peer swallows the consumer's wake-ups)
//   defer-publish        item 3 (Write parks with frames left unpublished)
//   invalid-bell         item 8 (Attach takes an fd -1 doorbell)
inline bool OracleEnabled(std::string_view name) {
  static const char* skip = std::getenv("SHMLANE_FUZZ_SKIP");
  if (skip == nullptr) return true;
  std::string_view list(skip);
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (list.substr(0, comma) == name) return false;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return true;
}

// Set once an oracle has failed, so that the watchdog does not report the
// abort in progress as a second hang.
inline std::atomic<bool> g_failing{false};

[[noreturn]] inline void Fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void Fail(const char* fmt, ...) {
  g_failing.store(true);
  va_list args;
  va_start(args, fmt);
  std::fputs("\nFUZZ ORACLE: ", stderr);
  std::vfprintf(stderr, fmt, args);
  std::fputc('\n', stderr);
  va_end(args);
  std::abort();
}

// Bytes of the input, read front to back; reads past the end give zeros so
// that every prefix of an input is itself a valid script.
class Bytes {
 public:
  Bytes() = default;
  Bytes(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool empty() const { return n_ == 0; }
  size_t size() const { return n_; }
  template <typename T>
  T Get() {
    T v{};
    const size_t k = n_ < sizeof(T) ? n_ : sizeof(T);
    std::memcpy(&v, p_, k);
    p_ += k;
    n_ -= k;
    return v;
  }
  uint8_t U8() { return Get<uint8_t>(); }
  uint16_t U16() { return Get<uint16_t>(); }
  uint64_t U64() { return Get<uint64_t>(); }
  // Splits off the next `n` bytes (fewer at the end).
  Bytes Take(size_t n) {
    const size_t k = n < n_ ? n : n_;
    Bytes head(p_, k);
    p_ += k;
    n_ -= k;
    return head;
  }

 private:
  const uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

// Relative deadlines a script can ask for. Index 0 is "already past"
// (InfinitePast), 1 is "now".
inline constexpr std::array<int64_t, 8> kDeadlineUs = {-1, 0, 200, 1000, 2000, 5000, 20000, 100000};

// A victim that parks this many times after its deadline has passed (by
// more than kParkGraceNs) keeps re-parking instead of returning: the
// doorbell-flood defect (issue 8 item 1) in its scheduling-independent form.
// A correct wait may start at most one park that races with its deadline.
inline constexpr uint64_t kParkGraceNs = 1'000'000;
inline constexpr uint64_t kMaxParksAfterDeadline = 3;

// The victim's watchdog: one process-wide thread that looks every 1 ms at the
// call in progress. When the call is past its limit, it prints what it was
// and sends SIGABRT to the victim thread (libFuzzer then reports a crash with
// the victim's stack, inside the blocked call). When the call is past its
// deadline + kParkGraceNs, it notes the victim's park counter once so that
// the call can tell how often it parked after its deadline.
class Watchdog {
 public:
  static Watchdog& Get() {
    static Watchdog* w = new Watchdog();  // never destroyed: the thread runs to exit
    return *w;
  }
  // `parks` (may be null) is a counter in shared memory that the victim
  // increments each time it parks.
  void Arm(const char* what, uint64_t deadline_ns, uint64_t limit_ns, const uint64_t* parks) {
    what_.store(what, std::memory_order_relaxed);
    victim_.store(pthread_self(), std::memory_order_relaxed);
    parks_.store(parks, std::memory_order_relaxed);
    deadline_.store(deadline_ns, std::memory_order_relaxed);
    baseline_.store(kNone, std::memory_order_relaxed);
    limit_.store(limit_ns, std::memory_order_release);
  }
  // Returns the park counter noted after the deadline, or kNone.
  uint64_t Disarm() {
    limit_.store(0, std::memory_order_seq_cst);
    // The watchdog may be between reading limit_ and storing a baseline;
    // wait for that to finish so the next call starts clean.
    while (busy_.load(std::memory_order_seq_cst)) std::this_thread::yield();
    return baseline_.load(std::memory_order_relaxed);
  }
  static constexpr uint64_t kNone = ~uint64_t{0};

 private:
  Watchdog() {
    std::thread([this] { Run(); }).detach();
  }
  void Run() {
    for (;;) {
      ::usleep(1000);
      busy_.store(true, std::memory_order_seq_cst);
      const uint64_t limit = limit_.load(std::memory_order_seq_cst);
      if (limit == 0 || g_failing.load()) {
        busy_.store(false, std::memory_order_seq_cst);
        continue;
      }
      const uint64_t now = NowNs();
      const uint64_t* parks = parks_.load(std::memory_order_relaxed);
      if (parks != nullptr && baseline_.load(std::memory_order_relaxed) == kNone &&
          now > deadline_.load(std::memory_order_relaxed) + kParkGraceNs) {
        baseline_.store(std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(parks))
                            .load(std::memory_order_relaxed),
                        std::memory_order_relaxed);
      }
      busy_.store(false, std::memory_order_seq_cst);
      // 20 ms more than the limit: the call's own check reports a late
      // return with exact figures; this is for calls that never return.
      if (now > limit + 20'000'000 && limit_.load(std::memory_order_acquire) == limit) {
        g_failing.store(true);
        std::fprintf(stderr,
                     "\nFUZZ ORACLE: %s is still blocked %.1f ms after its deadline + slack; "
                     "sending SIGABRT to the victim thread for its stack\n",
                     what_.load(std::memory_order_relaxed), static_cast<double>(now - limit) / 1e6);
        ::pthread_kill(victim_.load(std::memory_order_relaxed), SIGABRT);
        ::sleep(5);
        std::abort();
      }
    }
  }
  std::atomic<uint64_t> limit_{0};
  std::atomic<uint64_t> deadline_{0};
  std::atomic<uint64_t> baseline_{kNone};
  std::atomic<const uint64_t*> parks_{nullptr};
  std::atomic<bool> busy_{false};
  std::atomic<const char*> what_{""};
  std::atomic<pthread_t> victim_{};
};

// Tells the adversary whether the victim is inside a call right now, so that
// its "while the victim is in a call" actions land mid-call.
struct VictimState {
  std::atomic<uint32_t> in_call{0};
  std::atomic<uint32_t> calls{0};  // calls entered so far
  std::atomic<bool> done{false};   // the victim's script has ended
};

// Brackets one call of the victim. `timeout_ns` < 0: the call must not block
// at all (it still gets the slack). `parks`: the victim's park counter in
// shared memory, for blocking calls (the park-after-deadline oracle).
class CallGuard {
 public:
  CallGuard(VictimState& state, const char* what, int64_t timeout_ns,
            const uint64_t* parks = nullptr)
      : state_(state), what_(what), start_(NowNs()), parks_(parks) {
    deadline_ = start_ + static_cast<uint64_t>(timeout_ns > 0 ? timeout_ns : 0);
    limit_ = deadline_ + SlackNs();
    Watchdog::Get().Arm(what, deadline_, limit_, parks);
    state_.calls.fetch_add(1, std::memory_order_relaxed);
    state_.in_call.store(1, std::memory_order_release);
  }
  ~CallGuard() { Done(); }
  CallGuard(const CallGuard&) = delete;
  CallGuard& operator=(const CallGuard&) = delete;

  // Returns the time the call returned.
  uint64_t Done() {
    if (end_ != 0) return end_;
    end_ = NowNs();
    state_.in_call.store(0, std::memory_order_release);
    const uint64_t baseline = Watchdog::Get().Disarm();
    const uint64_t parks = parks_ != nullptr
                               ? std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(parks_))
                                     .load(std::memory_order_relaxed)
                               : 0;
    if (Tracing()) {
      std::fprintf(stderr, "call %-28s %9.3f ms (limit %9.3f ms)", what_,
                   static_cast<double>(end_ - start_) / 1e6,
                   static_cast<double>(limit_ - start_) / 1e6);
      if (baseline != Watchdog::kNone) {
        std::fprintf(stderr, ", %lu parks after the deadline", parks - baseline);
      }
      std::fputc('\n', stderr);
    }
    if (end_ > limit_) {
      Fail("%s returned %.1f ms after its deadline + %.0f ms slack (took %.1f ms)", what_,
           static_cast<double>(end_ - limit_) / 1e6, static_cast<double>(SlackNs()) / 1e6,
           static_cast<double>(end_ - start_) / 1e6);
    }
    if (baseline != Watchdog::kNone && parks - baseline > kMaxParksAfterDeadline &&
        OracleEnabled("park-after-deadline")) {
      Fail(
          "%s parked %lu more times after its deadline had passed (returned %.1f ms late): a "
          "wake-up, such as a doorbell flood, re-parks it without a deadline check",
          what_, parks - baseline, static_cast<double>(end_ - deadline_) / 1e6);
    }
    return end_;
  }
  uint64_t start() const { return start_; }

 private:
  VictimState& state_;
  const char* what_;
  uint64_t start_;
  const uint64_t* parks_;
  uint64_t deadline_ = 0;
  uint64_t limit_ = 0;
  uint64_t end_ = 0;
};

// A deadline for the API (absl::Time) and the budget for the guard.
struct Deadline {
  absl::Time at;
  int64_t timeout_ns;  // for CallGuard
};
inline Deadline MakeDeadline(uint8_t selector, int64_t* budget_us) {
  int64_t us = kDeadlineUs[selector % kDeadlineUs.size()];
  // Long waits are rationed per input so that one input stays well under a
  // second; beyond the budget they shrink to 1 ms.
  if (us > 1000) {
    if (*budget_us < us) us = 1000;
    *budget_us -= us;
  }
  if (us < 0) return {absl::InfinitePast(), 0};
  return {absl::Now() + absl::Microseconds(us), us * 1000};
}

// Frame contents the receiver can check: byte i of frame `seq` of lane
// `salt` is FrameByte(salt, seq, i), and the producer records each frame's
// length in the FrameLog before it can become visible.
inline std::byte FrameByte(uint32_t salt, uint32_t seq, size_t i) {
  const uint32_t x =
      seq * 0x9e3779b1u + static_cast<uint32_t>(i) * 0x85ebca6bu + salt * 0x27d4eb2fu;
  return static_cast<std::byte>((x >> 13) ^ (x >> 24) ^ static_cast<uint32_t>(i >> 8));
}
inline void FillFrame(uint32_t salt, uint32_t seq, std::span<std::byte> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = FrameByte(salt, seq, i);
}

// What one producer thread has written, for the consumer thread's oracle.
// The length of frame `seq` is stored before the frame is committed, so a
// consumer that sees the frame (after its acquire load of the tail) sees the
// length too. `published` and the times are stored after the call that
// published returned (so they are late, never early: the lost-wake-up oracle
// built on them errs on the lenient side).
struct FrameLog {
  static constexpr uint32_t kMax = 1u << 12;
  std::array<std::atomic<uint32_t>, kMax> len{};
  std::array<std::atomic<uint64_t>, kMax> published_ns{};
  std::atomic<uint32_t> committed{0};  // frames whose length is final
  std::atomic<uint32_t> published{0};  // frames known to be visible to the consumer
  std::atomic<bool> closed{false};     // the producer called Close()
};

// Verifies that `frame` is frame number `seq` of the log: exact length and
// content (the caller passes its count of frames received, so this also checks
// the order). Fails the input on a mismatch.
inline void CheckFrame(const char* lane, uint32_t salt, const FrameLog& log, uint32_t seq,
                       std::span<const std::byte> frame) {
  const uint32_t committed = log.committed.load(std::memory_order_acquire);
  if (seq >= committed) {
    Fail("%s: received frame #%u of %zu bytes but the producer committed only %u frames", lane, seq,
         frame.size(), committed);
  }
  const uint32_t want = log.len[seq % FrameLog::kMax].load(std::memory_order_relaxed);
  if (frame.size() != want) {
    Fail("%s: frame #%u has %zu bytes, %u were written", lane, seq, frame.size(), want);
  }
  for (size_t i = 0; i < frame.size(); ++i) {
    if (frame[i] != FrameByte(salt, seq, i)) {
      Fail("%s: frame #%u differs at byte %zu of %zu (got 0x%02x, wrote 0x%02x)", lane, seq, i,
           frame.size(), static_cast<unsigned>(frame[i]),
           static_cast<unsigned>(FrameByte(salt, seq, i)));
    }
  }
}

// The adversary's view of a lane: its own mapping of the segment, and every
// access a relaxed std::atomic_ref (the victim reads the same words with
// atomics, so this is not a data race in C++ terms; if the victim reads one
// with a plain load, that is the victim's race, see issue 8 item 7).
struct ShmView {
  std::byte* base = nullptr;
  uint64_t ring_bytes = 0;
  uint32_t max_frame = 0;

  template <typename T>
  T Load(size_t off) const {
    return std::atomic_ref<T>(*reinterpret_cast<T*>(base + off)).load(std::memory_order_relaxed);
  }
  template <typename T>
  void Store(size_t off, T v) const {
    std::atomic_ref<T>(*reinterpret_cast<T*>(base + off)).store(v, std::memory_order_relaxed);
  }
  uint64_t tail() const { return Load<uint64_t>(offsetof(sd::LaneBlocks, producer_index)); }
  uint64_t head() const { return Load<uint64_t>(offsetof(sd::LaneBlocks, consumer_index)); }
};

// A word of shared memory the adversary can write: a header-page field or
// an 8-byte slot of the ring (a frame header when it sits at a record start).
struct Target {
  size_t off = 0;  // from the start of the mapping
  bool wide = true;
  bool ring = false;
};

// Header-page fields by selector: the indices, the waiter and closed flags
// of both sides, the supervisor word, geometry fields that must not be
// re-read, counters, or any 8-byte word of the page.
inline Target PickField(const ShmView& v, uint8_t selector, uint64_t raw) {
  using B = sd::LaneBlocks;
  switch (selector % 12) {
    case 0:
      return {offsetof(B, producer_index), true};
    case 1:
      return {offsetof(B, producer_control) + offsetof(sd::ProducerControl, waiting), false};
    case 2:
      return {offsetof(B, producer_control) + offsetof(sd::ProducerControl, closed), false};
    case 3:
      return {offsetof(B, consumer_index), true};
    case 4:
      return {offsetof(B, consumer_control) + offsetof(sd::ConsumerControl, waiting), false};
    case 5:
      return {offsetof(B, consumer_control) + offsetof(sd::ConsumerControl, closed), false};
    case 6:
      return {offsetof(B, supervisor), false};
    case 7:
      return {offsetof(sd::LaneHeader, ring_bytes), true};
    case 8:
      return {offsetof(sd::LaneHeader, max_frame_bytes), false};
    case 9:
      return {offsetof(B, producer_counters) + offsetof(sd::ProducerCounters, broken), false};
    case 10:
      return {offsetof(B, consumer_counters) + offsetof(sd::ConsumerCounters, frames), true};
    default:
      (void)v;
      return {static_cast<size_t>(raw % sd::kLaneHeaderBytes) & ~size_t{7}, true};
  }
}

// Ring slots by selector: the record at the consumer's head (the next frame
// it reads), at the producer's tail (the next one it writes), the one after
// the head's record, or any slot.
inline Target PickSlot(const ShmView& v, uint8_t selector, uint64_t raw) {
  const uint64_t mask = v.ring_bytes - 1;
  uint64_t pos = 0;
  switch (selector % 4) {
    case 0:
      pos = v.head();
      break;
    case 1:
      pos = v.tail();
      break;
    case 2: {
      const uint64_t h = v.head();
      const uint32_t len = v.Load<uint32_t>(sd::kLaneHeaderBytes + (h & mask & ~uint64_t{7}));
      pos = h + sd::internal::RecordBytes(len % (v.ring_bytes + 1), false);
      break;
    }
    default:
      pos = raw >> 32;
      break;
  }
  return {sd::kLaneHeaderBytes + (pos & mask & ~uint64_t{7}), true, true};
}

// A value for a target, computed from the live lane so that scribbles land
// near the edges the victim checks: one record ahead or behind, misaligned,
// a whole ring ahead, padding that does or does not end the ring, a length
// one past the limit.
inline uint64_t PickValue(const ShmView& v, const Target& t, uint8_t selector, uint64_t raw) {
  const uint64_t cur = t.wide ? v.Load<uint64_t>(t.off) : v.Load<uint32_t>(t.off);
  const uint64_t tail = v.tail();
  const uint64_t head = v.head();
  if (t.ring) {
    const uint64_t offset = t.off - sd::kLaneHeaderBytes;
    const uint64_t to_end = v.ring_bytes - offset;
    const uint64_t avail = tail - head;
    uint32_t len = 0;
    switch ((selector >> 3) % 10) {
      case 0:
        len = static_cast<uint32_t>(raw);
        break;
      case 1:
        len = 0;
        break;
      case 2:
        len = v.max_frame;
        break;
      case 3:
        len = v.max_frame + 1;
        break;
      case 4:
        len = static_cast<uint32_t>(to_end);
        break;
      case 5:
        len = static_cast<uint32_t>(to_end - 8);
        break;
      case 6:
        len = static_cast<uint32_t>(v.ring_bytes);
        break;
      case 7:
        len = static_cast<uint32_t>(avail);
        break;
      case 8:
        len = static_cast<uint32_t>(avail - 8);
        break;
      default:
        len = static_cast<uint32_t>(cur) + 8;
        break;
    }
    static constexpr uint32_t kFlags[8] = {
        0, sd::kFrameFlagPadding, sd::kFrameFlagTimestamp, 3, 4, 0x80000000u, 0, 0};
    uint32_t flags = kFlags[selector % 8];
    if (selector % 8 >= 6) flags = static_cast<uint32_t>(raw >> 32);
    return uint64_t{len} | (uint64_t{flags} << 32);
  }
  switch (selector % 16) {
    case 0:
      return raw;
    case 1:
      return cur + 8;
    case 2:
      return cur - 8;
    case 3:
      return cur + 1;
    case 4:
      return tail + v.ring_bytes;
    case 5:
      return tail + v.ring_bytes + 8;
    case 6:
      return head;
    case 7:
      return tail;
    case 8:
      return 0;
    case 9:
      return ~uint64_t{0};
    case 10:
      return head - 8;
    case 11:
      return tail + 8 * (raw % 64);
    case 12:
      return 1;
    case 13:
      return cur ^ raw;
    case 14:
      return tail - 8;
    default:
      return head + v.ring_bytes;
  }
}

inline void Poke(const ShmView& v, const Target& t, uint64_t value) {
  if (t.wide) {
    v.Store<uint64_t>(t.off, value);
  } else {
    v.Store<uint32_t>(t.off, static_cast<uint32_t>(value));
  }
}

// Raw eventfd access for the adversary: it holds the same fds a hostile
// peer would hold, and uses them as such a peer could.
inline void RingFd(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof(one));
}
inline void DrainFd(int fd) {
  uint64_t v = 0;
  [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof(v));
}

// Durations of the adversary's loops: index 0 means "as long as the victim
// stays in its current call" (capped), the others are fixed.
inline constexpr std::array<uint64_t, 8> kLoopUs = {0, 20, 100, 500, 1000, 2000, 5000, 0};
inline constexpr uint64_t kWhileInCallCapNs = 400'000'000;

// Runs `step` in a tight loop for the selected duration, or while the victim
// is inside a call. Returns how many steps ran.
template <typename F>
uint64_t Loop(const VictimState& victim, uint8_t selector, F step) {
  const uint64_t us = kLoopUs[selector % kLoopUs.size()];
  const uint64_t start = NowNs();
  uint64_t n = 0;
  if (us == 0) {
    // Wait briefly for the victim to enter a call, then keep going while it
    // is in one.
    while (victim.in_call.load(std::memory_order_acquire) == 0 &&
           !victim.done.load(std::memory_order_acquire) && NowNs() - start < 5'000'000) {
      step();
      ++n;
    }
    while (victim.in_call.load(std::memory_order_acquire) != 0 &&
           NowNs() - start < kWhileInCallCapNs) {
      step();
      ++n;
    }
  } else {
    while (NowNs() - start < us * 1000) {
      step();
      ++n;
    }
  }
  if (Tracing()) {
    std::fprintf(stderr, "  peer loop: %lu steps in %.3f ms\n", n,
                 static_cast<double>(NowNs() - start) / 1e6);
  }
  return n;
}

// Waits (up to 5 ms) until the victim is inside a call.
inline void AwaitCall(const VictimState& victim) {
  const uint64_t start = NowNs();
  while (victim.in_call.load(std::memory_order_acquire) == 0 &&
         !victim.done.load(std::memory_order_acquire) && NowNs() - start < 5'000'000) {
    std::this_thread::yield();
  }
}

}  // namespace shmlane::fuzz
