// The command line of the bench binaries (shmlane-bench, shmlane-pair,
// shmlane-control-bench), on CLI11: the settings they share, validators for
// the values they take, and a parse that either goes on or says how to exit.
//
// Every option takes `--name value` and `--name=value`; the last of repeated
// options wins. `--help` (or -h) prints the grouped options with their
// defaults on stdout, exit status 0; a usage error is one line on stderr
// that names the argument, exit status kExitUsage.
//
// Thread safety: call from main, before the program starts anything else.
#pragma once

#include <optional>
#include <string>

#include "CLI/CLI.hpp"

namespace shmlane::bench {

inline constexpr int kExitUsage = 2;

// Shows every option's default in --help, lets the last of repeated options
// win, and widens the option column.
void ConfigureApp(CLI::App& app);

// A duration: plain seconds ("5", "0.5") or an absl duration ("5s",
// "500ms", "1m30s"). Rewrites the value as seconds, so that the option binds
// to a double. `zero_ok`: 0 is allowed (otherwise it must be > 0); negative
// durations never are.
CLI::Validator Duration(bool zero_ok = false);

// A power of two (ring sizes).
CLI::Validator PowerOfTwo();

// Parses argv into the options bound to `app`. nullopt: go on. Otherwise the
// exit status: 0 after --help, kExitUsage after a usage error (printed as
// "NAME: what (--help lists the options)").
std::optional<int> Parse(CLI::App& app, int argc, const char* const* argv);

}  // namespace shmlane::bench
