// The command line the examples share, with CLI11: `--flag value` and
// `--flag=value` both work, --help prints the flags with their defaults and
// exits 0 before anything attaches, and a usage error (an unknown flag, a
// value that is not a number) is one line on stderr and exit status 2.
//
// Thread safety: call from main, before any other thread starts.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace shmlane::examples {

inline constexpr int kExitUsage = 2;

// Call first, before adding options: they inherit these defaults.
inline void InitApp(CLI::App& app) {
  app.option_defaults()->always_capture_default();  // --help shows each default
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.failure_message([](const CLI::App* a, const CLI::Error& e) {
    return a->get_name() + ": " + e.what() + " (see " + a->get_name() + " --help)\n";
  });
}

// --runtime-dir DIR into `dir`; empty leaves the choice to the library.
inline void AddRuntimeDirFlag(CLI::App& app, std::string* dir) {
  app.add_option("--runtime-dir", *dir,
                 "The daemon's runtime directory, where attach.sock is (default: "
                 "$SHMLANE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shmlane, else /run/shmlane)")
      ->type_name("DIR");
}

// Parses argv into `app`: the exit status when main should return now (0
// after --help, kExitUsage after a usage error), else nullopt.
inline std::optional<int> ParseFlags(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;  // prints the help or the error
  }
  return std::nullopt;
}

}  // namespace shmlane::examples
