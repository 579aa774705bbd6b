#include "clients/internal/framing.h"

namespace shmlane::client::internal {

dataplane::WriteResult WriteFramed(dataplane::Producer& lane, const CallHeader& header,
                                   std::span<const std::byte> payload, absl::Time deadline,
                                   std::vector<std::byte>* scratch) {
  const size_t total = sizeof(CallHeader) + payload.size();
  dataplane::Reservation r = lane.Reserve(total);
  if (r.result == dataplane::WriteResult::kOk) {
    std::memcpy(r.data.data(), &header, sizeof(CallHeader));
    if (!payload.empty()) {
      std::memcpy(r.data.data() + sizeof(CallHeader), payload.data(), payload.size());
    }
    lane.Commit(total);
    return dataplane::WriteResult::kOk;
  }
  if (r.result != dataplane::WriteResult::kFull) return r.result;
  // Full: let Write apply the lane's policy (block until the deadline, fail
  // fast, or drop) on a contiguous copy.
  scratch->resize(total);
  std::memcpy(scratch->data(), &header, sizeof(CallHeader));
  if (!payload.empty()) {
    std::memcpy(scratch->data() + sizeof(CallHeader), payload.data(), payload.size());
  }
  return lane.Write(*scratch, deadline);
}

}  // namespace shmlane::client::internal
