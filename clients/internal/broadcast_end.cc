#include "clients/internal/broadcast_end.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace shmlane::client::internal {
namespace {

absl::StatusOr<dataplane::UniqueFd> Dup(const std::vector<dataplane::UniqueFd>& fds, uint32_t index,
                                        const char* what) {
  if (index >= fds.size()) {
    return absl::DataLossError(absl::StrCat("shmlaned referred to fd index ", index, " for ", what,
                                            " but sent only ", fds.size(), " fds"));
  }
  const int fd = ::fcntl(fds[index].get(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot duplicate the ", what, " fd: ", std::strerror(errno)));
  }
  return dataplane::UniqueFd(fd);
}

absl::StatusOr<std::shared_ptr<const dataplane::Doorbell>> Bell(
    const std::vector<dataplane::UniqueFd>& fds, uint32_t index, const char* what) {
  absl::StatusOr<dataplane::UniqueFd> fd = Dup(fds, index, what);
  if (!fd.ok()) return fd.status();
  absl::StatusOr<dataplane::Doorbell> bell = dataplane::Doorbell::Adopt(*std::move(fd));
  if (!bell.ok()) return bell.status();
  return std::make_shared<const dataplane::Doorbell>(*std::move(bell));
}

}  // namespace

absl::StatusOr<SlotEnd> TakeSlot(const v1::BroadcastDescription& d,
                                 const std::vector<dataplane::UniqueFd>& fds,
                                 dataplane::Access page_access) {
  if (!d.has_slot()) return absl::DataLossError("shmlaned described a subscriber without a slot");
  const uint32_t page = d.page_fd_index(), reader = d.reader_bell_fd_index(),
                 writer = d.writer_bell_fd_index();
  if (page == reader || page == writer || reader == writer ||
      (d.has_ring() &&
       (d.ring_fd_index() == page || d.ring_fd_index() == reader || d.ring_fd_index() == writer))) {
    return absl::DataLossError(
        absl::StrCat("slot ", d.slot(), "'s description names one fd for two purposes"));
  }
  SlotEnd out;
  out.slot = d.slot();
  out.subscriber_attachment = d.subscriber_attachment_id();
  out.subscriber_name = d.subscriber_name().substr(0, 63);
  absl::StatusOr<dataplane::UniqueFd> page_fd = Dup(fds, page, "cursor page");
  if (!page_fd.ok()) return page_fd.status();
  absl::StatusOr<dataplane::Segment> seg =
      dataplane::Segment::Map(*std::move(page_fd), page_access);
  if (!seg.ok()) return seg.status();
  out.page = *std::move(seg);
  absl::StatusOr<std::shared_ptr<const dataplane::Doorbell>> rb = Bell(fds, reader, "reader bell");
  if (!rb.ok()) return rb.status();
  out.reader_bell = *std::move(rb);
  absl::StatusOr<std::shared_ptr<const dataplane::Doorbell>> wb = Bell(fds, writer, "writer bell");
  if (!wb.ok()) return wb.status();
  out.writer_bell = *std::move(wb);
  return out;
}

absl::StatusOr<dataplane::Segment> TakeRing(const v1::BroadcastDescription& d,
                                            const std::vector<dataplane::UniqueFd>& fds,
                                            dataplane::Access access) {
  if (!d.has_ring()) return absl::DataLossError("shmlaned sent no broadcast ring");
  absl::StatusOr<dataplane::UniqueFd> fd = Dup(fds, d.ring_fd_index(), "broadcast ring");
  if (!fd.ok()) return fd.status();
  return dataplane::Segment::Map(*std::move(fd), access);
}

}  // namespace shmlane::client::internal
