// The 16-byte call header request/reply frames carry (request_reply.h), and
// writing a header plus payload as one frame without an extra copy when the
// lane has room.
//
// Thread safety: free functions; the lane is the caller's.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "absl/time/time.h"
#include "dataplane/lane.h"

namespace shmlane::client::internal {

static_assert(std::endian::native == std::endian::little,
              "the call header is little-endian; add byte swaps for this target");

struct CallHeader {
  uint64_t call_id = 0;
  int32_t code = 0;  // replies: google.rpc.Code; requests: 0
  uint32_t reserved = 0;
};
static_assert(sizeof(CallHeader) == 16);

// Reads the header of an untrusted frame; false when it is too short.
inline bool DecodeCallHeader(std::span<const std::byte> frame, CallHeader* header) {
  if (frame.size() < sizeof(CallHeader)) return false;
  std::memcpy(header, frame.data(), sizeof(CallHeader));
  return true;
}

// Writes header + payload as one frame: straight into a reservation when the
// lane has room now, else through `scratch` and the lane's blocking Write.
dataplane::WriteResult WriteFramed(dataplane::Producer& lane, const CallHeader& header,
                                   std::span<const std::byte> payload, absl::Time deadline,
                                   std::vector<std::byte>* scratch);

}  // namespace shmlane::client::internal
