// Internal pieces shared by broadcast.cc, broadcast_writer.cc and
// broadcast_reader.cc: geometry validation, record sizes, frame header
// access and broken codes. Not part of the API.
//
// Thread safety: stateless helpers; shared fields go through std::atomic_ref.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "dataplane/broadcast.h"
#include "dataplane/broadcast_layout.h"
#include "dataplane/internal/shm_access.h"
#include "dataplane/segment.h"

namespace shmlane::dataplane::internal {

using BroadcastGeometry = BroadcastWriter::Geometry;

// The fences of the overwrite check (broadcast_writer.cc, AdvanceOldest;
// broadcast_reader.cc, Overwritten). ThreadSanitizer does not model fences
// (and GCC refuses them under -fsanitize=thread): there the `oldest` store
// and load are seq_cst instead, as the lane's Dekker pairs are.
inline void OverwriteReleaseFence() {
  if constexpr (!kTsan) std::atomic_thread_fence(std::memory_order_release);
}
inline void OverwriteAcquireFence() {
  if constexpr (!kTsan) std::atomic_thread_fence(std::memory_order_acquire);
}
inline constexpr std::memory_order kOldestOrder =
    kTsan ? std::memory_order_seq_cst : std::memory_order_relaxed;

inline constexpr uint32_t kHeaderBytes = sizeof(BroadcastFrameHeader);

// Broken codes stored for observers (docs/shm_layout.md).
enum BrokenCode : uint32_t {
  kBadPublish = 1,
  kBadOldest = 2,
  kBadFrameLength = 3,
  kBadFrameFlags = 4,
  kBadPadding = 5,
  kBadSequence = 6,
  kBadOwnRecord = 7,  // writer: a record in its own ring is not what it wrote
};

inline constexpr uint64_t kAlign = kBroadcastRecordAlign;
// Records are 16-aligned so that a padding record (16-byte header) always
// fits before the ring's end.
constexpr uint64_t Record(uint64_t payload, bool stamped) {
  return (kHeaderBytes + (stamped ? 8 : 0) + payload + kAlign - 1) & ~(kAlign - 1);
}

// A frame header is two 8-byte words, each one relaxed atomic access: the
// writer may rewrite it at any moment (a torn pair is caught by the
// overwrite check that follows every read).
inline BroadcastFrameHeader LoadFrameHeader(const std::byte* at) {
  const uint64_t w = Load(*reinterpret_cast<const uint64_t*>(at), std::memory_order_relaxed);
  const uint64_t seq = Load(*reinterpret_cast<const uint64_t*>(at + 8), std::memory_order_relaxed);
  return {static_cast<uint32_t>(w), static_cast<uint32_t>(w >> 32), seq};
}
inline void StoreFrameHeader(std::byte* at, BroadcastFrameHeader h) {
  Store(*reinterpret_cast<uint64_t*>(at), uint64_t{h.length} | (uint64_t{h.flags} << 32),
        std::memory_order_relaxed);
  Store(*reinterpret_cast<uint64_t*>(at + 8), h.seq, std::memory_order_relaxed);
}

inline absl::Status ErrnoError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Validates a ring segment's header against the mapping's real size;
// DataLoss (with what is wrong) if it is not a usable broadcast ring.
absl::StatusOr<BroadcastGeometry> ReadBroadcastGeometry(const Segment& segment);

// Validates a cursor page (magic, version, size) and that it is `slot`'s.
absl::StatusOr<ReaderPage*> CheckReaderPage(const Segment& page, uint32_t slot);

// True if `fd` was opened O_RDONLY.
inline bool ReadOnlyFd(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_ACCMODE) == O_RDONLY;
}

}  // namespace shmlane::dataplane::internal
