// Access helpers for fields that live in shared memory: every load and store
// goes through std::atomic_ref so the compiler neither tears nor caches them,
// plus the memory orders of the wake-up protocol (see lane.cc).
//
// Thread safety: these are the synchronization primitives themselves.
#pragma once

#include <atomic>

namespace shmlane::dataplane::internal {

template <typename T>
inline T Load(const T& field, std::memory_order order) {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(order);
}
template <typename T>
inline void Store(T& field, T value, std::memory_order order) {
  std::atomic_ref<T>(field).store(value, order);
}

// ThreadSanitizer does not model std::atomic_thread_fence. Under TSan the
// Dekker pairs of the wake-up protocol use seq_cst accesses instead of
// relaxed/release accesses plus a fence; both give the guarantee we need (a
// single total order over the index store and the waiting-flag load).
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kTsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kTsan = true;
#else
inline constexpr bool kTsan = false;
#endif
#else
inline constexpr bool kTsan = false;
#endif

inline constexpr std::memory_order kIndexStore =
    kTsan ? std::memory_order_seq_cst : std::memory_order_release;
inline constexpr std::memory_order kIndexLoad =
    kTsan ? std::memory_order_seq_cst : std::memory_order_acquire;
inline constexpr std::memory_order kFlagOrder =
    kTsan ? std::memory_order_seq_cst : std::memory_order_relaxed;
// The waiter's store of its waiter word: release, so that a peer that reads
// the word with acquire also sees everything the waiter published before it
// announced itself (its index, need_bytes). Then the StoreLoad fence.
inline constexpr std::memory_order kParkStore =
    kTsan ? std::memory_order_seq_cst : std::memory_order_release;

// The StoreLoad barrier of the wake-up protocol.
inline void StoreLoadFence() {
  if constexpr (!kTsan) std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace shmlane::dataplane::internal
