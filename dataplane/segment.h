// Segment: one anonymous shared-memory object (memfd) and its mapping.
//
// A segment is created once at its final size and sealed against shrinking
// and growing (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), so that no peer
// holding the fd can truncate it and make the others fault with SIGBUS. It has
// no name in any file system: only processes handed the fd can map it, and
// its memory returns to the kernel when the last fd and mapping are gone.
//
// Thread safety: a Segment is an immutable handle after construction; the
// bytes it maps are shared with other processes and must be accessed through
// the lane's atomic protocol (see lane.h), never assumed stable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "dataplane/unique_fd.h"

namespace shmlane::dataplane {

enum class Access { kReadWrite, kReadOnly };

class Segment {
 public:
  // Creates a sealed memfd of `bytes` bytes (CLOEXEC) and maps it read-write.
  // `debug_name` shows in /proc/<pid>/fd and /proc/<pid>/maps only.
  static absl::StatusOr<Segment> Create(std::string_view debug_name, size_t bytes);

  // Maps an existing segment. Fails with DataLoss when the fd is not a sealed
  // memfd (a peer could shrink it under us) or has zero size.
  static absl::StatusOr<Segment> Map(UniqueFd fd, Access access);

  Segment() = default;
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  int fd() const { return fd_.get(); }
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  Access access() const { return access_; }
  bool valid() const { return data_ != nullptr; }

  // A new fd referring to the same memfd (for handing to another process).
  absl::StatusOr<UniqueFd> DupFd() const;

 private:
  Segment(UniqueFd fd, std::byte* data, size_t size, Access access)
      : fd_(std::move(fd)), data_(data), size_(size), access_(access) {}
  void Unmap();

  UniqueFd fd_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  Access access_ = Access::kReadOnly;
};

}  // namespace shmlane::dataplane
