// `shmlanectl top`: a live view of every channel, refreshed every
// --interval, one row per channel with frames/s and MB/s received, lag
// (ring occupancy / capacity of the live lanes), p99 latency, drops/s,
// backpressure events/s, wake-ups per frame and attached producers.
//
// It reads counters through GetChannelStats only (and the channel list and
// producer counts through ListChannels), never by mapping lanes, so it works
// over --server as well as on the daemon's node. Rates are differences of two
// samples divided by the time between them. p99 is the daemon's figure since
// the channel started (GetChannelStats keeps no window).
//
// On a terminal it redraws the screen (alternate screen, cursor hidden) and
// reads keys: q quits, n/f/m/l/p/d/b/w/c sort by name, frames/s, MB/s, lag,
// p99, drops/s, backpressure/s, wake-ups/frame, producers, r reverses. Rows
// fit the terminal's width (80 columns or more) and height. With --once it
// takes two samples one interval apart, prints one table (or, with --json,
// one JSON document) and exits.
//
// Thread safety: RunTop is called once, from main.
#pragma once

#include <string>
#include <vector>

#include "clients/cli/flags.h"
#include "shmlane/v1/control.grpc.pb.h"

namespace shmlane::cli {

// The sort keys of --sort, in the order the help lists them.
const std::vector<std::string>& TopSortKeys();

// Runs the view until q (or one table with options.once). Returns kExitOk,
// or with --once kExitUnavailable / kExitFailed when the daemon cannot be
// read.
int RunTop(v1::ChannelService::Stub* stub, const Connection& connection, const TopOptions& options);

}  // namespace shmlane::cli
