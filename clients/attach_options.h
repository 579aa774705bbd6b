// Options every shmlane client shares: where the daemon is, who we are, how
// long attaching may take and how blocking calls wait.
//
// The runtime directory is resolved in this order: AttachOptions::runtime_dir,
// then $SHMLANE_RUNTIME_DIR, then $XDG_RUNTIME_DIR/shmlane, then /run/shmlane.
// The attach socket is <runtime directory>/attach.sock.
//
// Thread safety: plain values and a pure function of the environment.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "dataplane/lane.h"
#include "dataplane/unique_fd.h"

namespace shmlane::client {

struct AttachOptions {
  // Runtime directory of the daemon; empty: resolve from the environment.
  std::string runtime_dir;
  // For humans (events, metrics, the peer's view); empty: the program's name.
  // At most 63 bytes; longer names are cut.
  std::string client_name;
  // Bound on connecting and the attach handshake.
  absl::Duration attach_timeout = absl::Seconds(5);
  // How blocking calls wait (a consumer or server for frames, a producer on
  // a full ring, a client for its reply; dataplane/wait_strategy.h).
  // `wait.spin` is the spin budget of the latency preference and the bound
  // of balanced's; `wait.preference` is not used: the preference is the
  // channel's (delivered at attach, ChannelSpec.wait_preference) unless
  // `wait_preference` overrides it for this endpoint.
  dataplane::WaitOptions wait;
  std::optional<dataplane::WaitPreference> wait_preference;
  // Who the daemon must be. The client checks the attach socket's
  // SO_PEERCRED before it sends anything: by default the daemon must run as
  // root or as the owner of the runtime directory, so that another user who
  // can write a shared directory cannot pose as the daemon and receive our
  // frames. Set this to accept exactly one other uid.
  std::optional<uint32_t> expected_daemon_uid;
};

// The wait options of an endpoint: `options.wait.spin`, and the override
// `options.wait_preference`, else the channel's preference as the daemon sent
// it (a shmlane.v1.WaitPreference number; 0 or an unknown value: balanced).
dataplane::WaitOptions ResolveWait(const AttachOptions& options, int channel_preference);

// The runtime directory `explicit_dir` (when not empty) or the environment
// names (see above).
std::string ResolveRuntimeDir(std::string_view explicit_dir = {});

// <ResolveRuntimeDir(explicit_dir)>/attach.sock
std::string AttachSocketPath(std::string_view explicit_dir = {});

// The other end of a lane, as the daemon described it.
struct Peer {
  uint64_t lane_id = 0;        // the lane (unique within the daemon's lifetime)
  uint64_t attachment_id = 0;  // the peer's attachment
  std::string name;            // the peer's client_name: chosen by the peer, not proof
  // The peer's identity as the kernel reported it to the daemon
  // (SO_PEERCRED): trust these, not `name`. Valid when has_credentials.
  bool has_credentials = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid = 0;
  // The peer process's pidfd, as the kernel took it when the peer connected
  // to the daemon (SO_PEERPIDFD): it names that process even after its pid
  // is reused. Poll it for POLLIN to learn that the process exited, or
  // signal it with pidfd_send_signal(2). Null where the kernel (before 6.5)
  // or the daemon does not provide one. The copies of a Peer share it; it is
  // closed when the last goes.
  std::shared_ptr<const dataplane::UniqueFd> pidfd;
  // pidfd's number, or -1 when there is none; valid while this Peer lives.
  int pidfd_fd() const { return pidfd != nullptr ? pidfd->get() : -1; }
};

// A peer came or went. Delivered on the thread that called the consumer's or
// server's Read/Poll/Wait/Serve, from inside that call.
struct PeerEvent {
  enum class Kind { kAttached, kDetached };
  Kind kind = Kind::kAttached;
  Peer peer;
  // kDetached: OK when the peer closed cleanly and every frame was read;
  // Unavailable when the daemon removed the lane (the reason says why);
  // DataLoss when the lane was corrupt. A kDetached event with lane_id 0
  // reports lanes the daemon offered that could not be used (status says
  // why); they were never attached.
  absl::Status status;
};
using PeerEventFn = std::function<void(const PeerEvent&)>;

}  // namespace shmlane::client
