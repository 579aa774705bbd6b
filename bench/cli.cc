#include "bench/cli.h"

#include <cmath>
#include <cstdint>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace shmlane::bench {

void ConfigureApp(CLI::App& app) {
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  app.get_formatter()->column_width(36);
}

CLI::Validator Duration(bool zero_ok) {
  return CLI::Validator(
      [zero_ok](std::string& value) -> std::string {
        const std::string text(absl::StripAsciiWhitespace(value));
        double seconds = 0;
        absl::Duration d;
        if (absl::SimpleAtod(text, &seconds)) {
          // Plain seconds.
        } else if (absl::ParseDuration(text, &d) && d != absl::InfiniteDuration() &&
                   d != -absl::InfiniteDuration()) {
          seconds = absl::ToDoubleSeconds(d);
        } else {
          return absl::StrCat("not a duration: '", value, "' (seconds, or e.g. 500ms, 2s)");
        }
        if (!std::isfinite(seconds) || seconds < 0 || (!zero_ok && seconds == 0)) {
          return absl::StrCat("'", value, "' must be ", zero_ok ? ">= 0" : "> 0");
        }
        value = absl::StrFormat("%.17g", seconds);
        return "";
      },
      "", "DURATION");
}

CLI::Validator PowerOfTwo() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        uint64_t n = 0;
        if (!absl::SimpleAtoi(value, &n) || n == 0 || (n & (n - 1)) != 0) {
          return absl::StrCat("'", value, "' is not a power of two");
        }
        return "";
      },
      "power of 2", "POWER_OF_TWO");
}

std::optional<int> Parse(CLI::App& app, int argc, const char* const* argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      // --help (CLI::CallForHelp).
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "%s: %s (--help lists the options)\n", app.get_name().c_str(), e.what());
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace shmlane::bench
