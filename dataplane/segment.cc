#include "dataplane/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace shmlane::dataplane {
namespace {

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::Status(err == ENOMEM || err == EMFILE || err == ENFILE
                          ? absl::StatusCode::kResourceExhausted
                          : absl::StatusCode::kInternal,
                      absl::StrCat(what, ": ", std::strerror(err)));
}

constexpr int kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

}  // namespace

absl::StatusOr<Segment> Segment::Create(std::string_view debug_name, size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("segment size must be positive");
  std::string name =
      absl::StrCat("shmlane:", absl::string_view(debug_name.data(), debug_name.size()));
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoStatus("memfd_create", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return ErrnoStatus("ftruncate on new memfd", errno);
  }
  // Seal before anyone else can hold the fd: from here on nobody can change
  // the size, so a mapping of `bytes` can never fault with SIGBUS.
  if (::fcntl(fd.get(), F_ADD_SEALS, kRequiredSeals) != 0) {
    return ErrnoStatus("sealing memfd", errno);
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap of new memfd", errno);
  return Segment(std::move(fd), static_cast<std::byte*>(p), bytes, Access::kReadWrite);
}

absl::StatusOr<Segment> Segment::Map(UniqueFd fd, Access access) {
  if (!fd.valid()) return absl::InvalidArgumentError("segment fd is not valid");
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0) {
    return absl::DataLossError(
        "segment fd is not a sealable memfd: refusing to map a file a peer could truncate");
  }
  if ((seals & (F_SEAL_SHRINK | F_SEAL_SEAL)) != (F_SEAL_SHRINK | F_SEAL_SEAL)) {
    return absl::DataLossError(
        "segment memfd is not sealed against shrinking: a peer could make us fault");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("fstat of segment", errno);
  if (st.st_size <= 0) return absl::DataLossError("segment memfd is empty");
  const auto bytes = static_cast<size_t>(st.st_size);
  const int prot = access == Access::kReadOnly ? PROT_READ : PROT_READ | PROT_WRITE;
  void* p = ::mmap(nullptr, bytes, prot, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap of segment", errno);
  return Segment(std::move(fd), static_cast<std::byte*>(p), bytes, access);
}

Segment::Segment(Segment&& other) noexcept
    : fd_(std::move(other.fd_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      access_(other.access_) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    Unmap();
    fd_ = std::move(other.fd_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    access_ = other.access_;
  }
  return *this;
}

Segment::~Segment() { Unmap(); }

void Segment::Unmap() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

absl::StatusOr<UniqueFd> Segment::DupFd() const {
  UniqueFd copy(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy.valid()) return ErrnoStatus("dup of segment fd", errno);
  return copy;
}

}  // namespace shmlane::dataplane
