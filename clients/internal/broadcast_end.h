// Turning a BroadcastDescription plus the fds of its packet into mapped
// segments and doorbells, for Publisher and Subscriber (clients/broadcast.h).
// Every fd index is checked against the packet; a description that names one
// fd for two purposes, or lacks what its place in the protocol requires, is
// DataLoss.
//
// Thread safety: free functions on values; no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/doorbell.h"
#include "dataplane/segment.h"
#include "dataplane/unique_fd.h"
#include "shmlane/v1/attach.pb.h"

namespace shmlane::client::internal {

// One reader slot: its cursor page and both bells.
struct SlotEnd {
  uint32_t slot = 0;
  uint64_t subscriber_attachment = 0;
  std::string subscriber_name;
  dataplane::Segment page;
  std::shared_ptr<const dataplane::Doorbell> reader_bell;  // the subscriber parks on it
  std::shared_ptr<const dataplane::Doorbell> writer_bell;  // the publisher parks on it
};

// Maps the slot of `d` (the page with `page_access`).
absl::StatusOr<SlotEnd> TakeSlot(const shmlane::v1::BroadcastDescription& d,
                                 const std::vector<dataplane::UniqueFd>& fds,
                                 dataplane::Access page_access);

// Maps the ring of `d` with `access` (a subscriber's fd is O_RDONLY: only
// kReadOnly can work).
absl::StatusOr<dataplane::Segment> TakeRing(const shmlane::v1::BroadcastDescription& d,
                                            const std::vector<dataplane::UniqueFd>& fds,
                                            dataplane::Access access);

}  // namespace shmlane::client::internal
