// `shmlanectl top` (see top.h): samples GetChannelStats, turns two samples
// into rates, and draws them as a table that fits the terminal.
#include "clients/cli/top.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/cli/output.h"
#include "nlohmann/json.hpp"

namespace shmlane::cli {
namespace {

// ---------------------------------------------------------------------------
// Samples and rates.

struct ChannelSample {
  std::string name;
  uint32_t producers = 0;
  v1::LaneStats total;
};

struct Sample {
  absl::Time at;
  std::vector<ChannelSample> channels;
};

// One row of the view.
struct Row {
  std::string name;
  uint32_t producers = 0;
  std::optional<double> frames_per_s;  // received; unset on the first sample
  std::optional<double> bytes_per_s;   // received
  std::optional<double> drops_per_s;
  std::optional<double> backpressure_per_s;
  std::optional<double> wakeups_per_frame;  // unset when no frame was received
  uint64_t occupancy_bytes = 0;
  uint64_t capacity_bytes = 0;
  double p99_s = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
};

double Seconds(const google::protobuf::Duration& d) {
  return static_cast<double>(d.seconds()) + static_cast<double>(d.nanos()) / 1e9;
}

// Every channel (all pages) with its totals. Channels deleted between the
// list and the stats call are left out.
grpc::Status TakeSample(v1::ChannelService::Stub* stub, absl::Duration timeout, Sample* out) {
  out->channels.clear();
  v1::ListChannelsRequest list;
  list.set_page_size(1000);
  std::vector<ChannelSample> channels;
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ListChannelsResponse page;
    grpc::Status s = stub->ListChannels(&ctx, list, &page);
    if (!s.ok()) return s;
    for (const v1::Channel& c : page.channels()) {
      ChannelSample cs;
      cs.name = c.spec().name();
      cs.producers = c.attached_producers();
      channels.push_back(std::move(cs));
    }
    if (page.next_page_token().empty()) break;
    list.set_page_token(page.next_page_token());
  }
  for (ChannelSample& cs : channels) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::GetChannelStatsRequest req;
    req.set_name(cs.name);
    v1::ChannelStats stats;
    grpc::Status s = stub->GetChannelStats(&ctx, req, &stats);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) continue;
    if (!s.ok()) return s;
    cs.total = stats.total();
    out->channels.push_back(std::move(cs));
  }
  out->at = absl::Now();
  return grpc::Status::OK;
}

// The increase of a counter; a counter that went back (the channel was
// re-created, the daemon restarted) counts from 0.
double Delta(uint64_t now, uint64_t before) {
  return static_cast<double>(now >= before ? now - before : now);
}

std::vector<Row> MakeRows(const Sample* before, const Sample& now) {
  std::map<std::string, const v1::LaneStats*> old;
  if (before != nullptr) {
    for (const ChannelSample& c : before->channels) old[c.name] = &c.total;
  }
  const double dt = before == nullptr ? 0 : absl::ToDoubleSeconds(now.at - before->at);
  std::vector<Row> rows;
  for (const ChannelSample& c : now.channels) {
    Row r;
    r.name = c.name;
    r.producers = c.producers;
    const v1::LaneStats& t = c.total;
    r.occupancy_bytes = t.occupancy_bytes();
    r.capacity_bytes = t.capacity_bytes();
    r.p99_s = Seconds(t.latency_p99());
    r.frames_sent = t.frames_sent();
    r.frames_received = t.frames_received();
    auto it = old.find(c.name);
    if (it != old.end() && dt > 0) {
      const v1::LaneStats& o = *it->second;
      const double frames = Delta(t.frames_received(), o.frames_received());
      r.frames_per_s = frames / dt;
      r.bytes_per_s = Delta(t.bytes_received(), o.bytes_received()) / dt;
      r.drops_per_s = Delta(t.dropped_frames(), o.dropped_frames()) / dt;
      r.backpressure_per_s = Delta(t.backpressure_events(), o.backpressure_events()) / dt;
      if (frames > 0) r.wakeups_per_frame = Delta(t.wakeups(), o.wakeups()) / frames;
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Sorting.

struct SortKey {
  std::string name;   // as --sort takes it
  char key;           // the key that selects it
  std::string label;  // as the header shows it
};

const std::vector<SortKey>& Keys() {
  static const auto* keys = new std::vector<SortKey>{
      {"frames", 'f', "frames/s"},
      {"bytes", 'm', "MB/s"},
      {"lag", 'l', "lag"},
      {"p99", 'p', "p99"},
      {"drops", 'd', "drops/s"},
      {"backpressure", 'b', "bp/s"},
      {"wakeups", 'w', "wake/frame"},
      {"producers", 'c', "producers"},
      {"name", 'n', "name"},
  };
  return *keys;
}

double SortValue(const Row& r, const std::string& key) {
  if (key == "frames") return r.frames_per_s.value_or(-1);
  if (key == "bytes") return r.bytes_per_s.value_or(-1);
  if (key == "lag") {
    return r.capacity_bytes == 0
               ? -1
               : static_cast<double>(r.occupancy_bytes) / static_cast<double>(r.capacity_bytes);
  }
  if (key == "p99") return r.p99_s;
  if (key == "drops") return r.drops_per_s.value_or(-1);
  if (key == "backpressure") return r.backpressure_per_s.value_or(-1);
  if (key == "wakeups") return r.wakeups_per_frame.value_or(-1);
  if (key == "producers") return r.producers;
  return 0;
}

void SortRows(std::vector<Row>& rows, const std::string& key, bool reverse) {
  std::sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
    if (key != "name") {
      const double va = SortValue(a, key), vb = SortValue(b, key);
      if (va != vb) return va > vb;  // highest first
    }
    return a.name < b.name;  // names are unique: a total order
  });
  if (reverse) std::reverse(rows.begin(), rows.end());
}

// ---------------------------------------------------------------------------
// Formatting: every cell fits its column, so nothing is ever cut.

// A count or rate in at most 5 characters: 0, 12, 999, 1.2k, 12.3k, 123k, 1.2M ...
std::string Compact(double v) {
  if (v < 0 || !std::isfinite(v)) return "-";
  static constexpr const char* kSuffix[] = {"", "k", "M", "G", "T", "P"};
  size_t i = 0;
  while (v >= 999.5 && i + 1 < std::size(kSuffix)) {
    v /= 1000;
    ++i;
  }
  if (i == 0)
    return v < 9.95 && v != std::floor(v) ? absl::StrFormat("%.1f", v) : absl::StrFormat("%.0f", v);
  return v < 99.95 ? absl::StrFormat("%.1f%s", v, kSuffix[i])
                   : absl::StrFormat("%.0f%s", v, kSuffix[i]);
}

// Bytes in powers of two, at most 4 characters: 0, 512, 4.0K, 64K, 1.5M, 1.0G.
std::string Size(uint64_t bytes) {
  static constexpr const char* kSuffix[] = {"", "K", "M", "G", "T"};
  auto v = static_cast<double>(bytes);
  size_t i = 0;
  while (v >= 999.5 && i + 1 < std::size(kSuffix)) {
    v /= 1024;
    ++i;
  }
  if (i == 0) return absl::StrFormat("%.0f", v);
  return v < 9.95 ? absl::StrFormat("%.1f%s", v, kSuffix[i])
                  : absl::StrFormat("%.0f%s", v, kSuffix[i]);
}

// MB/s (10^6 bytes) in at most 6 characters.
std::string MegabytesPerSecond(std::optional<double> bytes_per_s) {
  if (!bytes_per_s) return "-";
  const double mb = *bytes_per_s / 1e6;
  if (mb < 99.95) return absl::StrFormat("%.1f", mb);
  return Compact(mb);
}

// 812ns, 1.2us, 34us, 1.2ms, 34ms, 1.2s, 34s, 999s, 17m.
std::string ShortDuration(double s) {
  if (s <= 0) return "-";
  if (s >= 999.5) return absl::StrFormat("%.0fm", s / 60);
  struct Unit {
    double scale;
    const char* name;
  };
  for (const Unit u : {Unit{1, "s"}, Unit{1e-3, "ms"}, Unit{1e-6, "us"}}) {
    if (s >= u.scale * 0.9995) {
      const double v = s / u.scale;
      return v < 9.95 ? absl::StrFormat("%.1f%s", v, u.name) : absl::StrFormat("%.0f%s", v, u.name);
    }
  }
  return absl::StrFormat("%.0fns", s * 1e9);
}

std::string Lag(const Row& r) {
  if (r.capacity_bytes == 0) return "-";
  return absl::StrCat(Size(r.occupancy_bytes), "/", Size(r.capacity_bytes));
}

std::string Ratio(std::optional<double> v) {
  if (!v) return "-";
  return *v < 9.9995 ? absl::StrFormat("%.3f", *v) : Compact(*v);
}

// Columns after the name: header and width (right-aligned).
struct Column {
  const char* header;
  int width;
};
constexpr Column kColumns[] = {{"FRAMES/S", 8}, {"MB/S", 6}, {"LAG", 9},    {"P99", 6},
                               {"DROP/S", 6},   {"BP/S", 6}, {"WAKE/F", 6}, {"PROD", 4}};
constexpr int kMinNameWidth = 14;
constexpr int kMaxNameWidth = 63;

int NumbersWidth() {
  int w = 0;
  for (const Column& c : kColumns) w += 1 + c.width;
  return w;
}

// The name column grows with the terminal (14 at 80 columns).
int NameWidth(int terminal_width) {
  return std::clamp(terminal_width - NumbersWidth() - 1, kMinNameWidth, kMaxNameWidth);
}

std::string Fit(const std::string& text, int width) {
  if (static_cast<int>(text.size()) <= width) return text;
  return text.substr(0, static_cast<size_t>(width - 1)) + "~";
}

std::string FormatLine(const std::string& name, const std::vector<std::string>& cells,
                       int name_width) {
  std::string line = absl::StrFormat("%-*s", name_width, Fit(name, name_width));
  for (size_t i = 0; i < cells.size(); ++i) {
    absl::StrAppend(&line, " ", absl::StrFormat("%*s", kColumns[i].width, cells[i]));
  }
  return line;
}

std::vector<std::string> TableLines(const std::vector<Row>& rows, int terminal_width) {
  const int nw = NameWidth(terminal_width);
  std::vector<std::string> headers;
  for (const Column& c : kColumns) headers.emplace_back(c.header);
  std::vector<std::string> lines = {FormatLine("CHANNEL", headers, nw)};
  for (const Row& r : rows) {
    lines.push_back(FormatLine(
        r.name,
        {r.frames_per_s ? Compact(*r.frames_per_s) : "-", MegabytesPerSecond(r.bytes_per_s), Lag(r),
         ShortDuration(r.p99_s), r.drops_per_s ? Compact(*r.drops_per_s) : "-",
         r.backpressure_per_s ? Compact(*r.backpressure_per_s) : "-", Ratio(r.wakeups_per_frame),
         Compact(r.producers)},
        nw));
  }
  return lines;
}

nlohmann::json RowsJson(const std::vector<Row>& rows, absl::Duration interval) {
  auto opt = [](std::optional<double> v) -> nlohmann::json {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  };
  nlohmann::json channels = nlohmann::json::array();
  for (const Row& r : rows) {
    channels.push_back({
        {"name", r.name},
        {"producers", r.producers},
        {"frames_per_second", opt(r.frames_per_s)},
        {"bytes_per_second", opt(r.bytes_per_s)},
        {"occupancy_bytes", r.occupancy_bytes},
        {"capacity_bytes", r.capacity_bytes},
        {"lag_ratio", r.capacity_bytes == 0
                          ? nlohmann::json(nullptr)
                          : nlohmann::json(static_cast<double>(r.occupancy_bytes) /
                                           static_cast<double>(r.capacity_bytes))},
        {"latency_p99_seconds", r.p99_s},
        {"drops_per_second", opt(r.drops_per_s)},
        {"backpressure_per_second", opt(r.backpressure_per_s)},
        {"wakeups_per_frame", opt(r.wakeups_per_frame)},
        {"frames_sent", r.frames_sent},
        {"frames_received", r.frames_received},
    });
  }
  return {{"interval_seconds", absl::ToDoubleSeconds(interval)}, {"channels", channels}};
}

int FailWith(const grpc::Status& s) {
  std::fprintf(stderr, "shmlanectl: %s: %s\n", CodeName(s.error_code()).c_str(),
               s.error_message().c_str());
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ? kExitUnavailable : kExitFailed;
}

// ---------------------------------------------------------------------------
// The terminal.

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_resized = 0;

void OnStop(int) { g_stop = 1; }
void OnResize(int) { g_resized = 1; }

void WriteAll(const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// Alternate screen, hidden cursor and unbuffered, unechoed keys while alive;
// everything restored on destruction.
class Screen {
 public:
  Screen() {
    if (::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      keys_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    WriteAll("\x1b[?1049h\x1b[?25l");
  }
  ~Screen() {
    WriteAll("\x1b[?25h\x1b[?1049l");
    if (keys_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;
  bool keys() const { return keys_; }

  static std::pair<int, int> Size() {
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
      return {ws.ws_col, ws.ws_row};
    }
    return {80, 24};
  }

 private:
  termios saved_{};
  bool keys_ = false;
};

// Waits until `deadline` or a key; returns the key, or 0.
char WaitForKey(bool keys, absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  pollfd pfd{STDIN_FILENO, POLLIN, 0};
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
  const int n = ::poll(keys ? &pfd : nullptr, keys ? 1 : 0, ms);
  if (n <= 0) return 0;
  if ((pfd.revents & (POLLHUP | POLLERR)) != 0) return 0;
  char c = 0;
  return ::read(STDIN_FILENO, &c, 1) == 1 ? c : 0;
}

std::string SortLabel(const std::string& name) {
  for (const SortKey& k : Keys()) {
    if (k.name == name) return k.label;
  }
  return name;
}

void Draw(bool tty, const std::vector<Row>& rows, const std::string& target,
          const TopOptions& options, const std::string& sort, bool reverse,
          const std::string& error) {
  const auto [width, height] = tty ? Screen::Size() : std::pair<int, int>{80, 1 << 20};
  std::vector<std::string> lines;
  lines.push_back(
      // The target last: on a narrow terminal it is what gets shortened.
      Fit(absl::StrCat("shmlanectl top - ",
                       absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()), " - ",
                       rows.size(), rows.size() == 1 ? " channel" : " channels", " - every ",
                       absl::FormatDuration(options.interval), " - ", target),
          width));
  lines.push_back(Fit(absl::StrCat("sort: ", SortLabel(sort), reverse ? " (reversed)" : "",
                                   "   keys: q quit, f m l p d b w c n sort, r reverse"),
                      width));
  lines.push_back(error.empty() ? "" : Fit(absl::StrCat("error: ", error), width));
  std::vector<std::string> table = TableLines(rows, width);
  const size_t room = height > 4 ? static_cast<size_t>(height) - lines.size() : 1;
  if (table.size() > room) {
    const size_t hidden = table.size() - (room - 1);
    table.resize(room - 1);
    table.push_back(absl::StrCat("... ", hidden, " more (a taller terminal shows them)"));
  }
  for (std::string& l : table) lines.push_back(Fit(l, width));
  if (!tty) {  // a pipe or a file: one table per refresh, no escapes
    std::string text;
    for (const std::string& l : lines) absl::StrAppend(&text, l, "\n");
    WriteAll(absl::StrCat(text, "\n"));
    return;
  }
  std::string frame = "\x1b[H";
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StrAppend(&frame, lines[i], "\x1b[K", i + 1 < lines.size() ? "\r\n" : "");
  }
  absl::StrAppend(&frame, "\x1b[J");
  WriteAll(frame);
}

std::string TargetOf(const Connection& c) {
  return c.server.empty() ? absl::StrCat(c.runtime_dir, "/control.sock") : c.server;
}

int RunOnce(v1::ChannelService::Stub* stub, const Connection& connection,
            const TopOptions& options) {
  Sample first, second;
  if (grpc::Status s = TakeSample(stub, connection.timeout, &first); !s.ok()) return FailWith(s);
  absl::SleepFor(options.interval);
  if (grpc::Status s = TakeSample(stub, connection.timeout, &second); !s.ok()) return FailWith(s);
  std::vector<Row> rows = MakeRows(&first, second);
  SortRows(rows, options.sort, false);
  if (connection.json) {
    std::printf("%s\n", RowsJson(rows, second.at - first.at).dump(2).c_str());
  } else {
    for (const std::string& line : TableLines(rows, Screen::Size().first)) {
      std::printf("%s\n", line.c_str());
    }
  }
  return kExitOk;
}

}  // namespace

const std::vector<std::string>& TopSortKeys() {
  static const auto* names = [] {
    auto* v = new std::vector<std::string>;
    for (const SortKey& k : Keys()) v->push_back(k.name);
    return v;
  }();
  return *names;
}

int RunTop(v1::ChannelService::Stub* stub, const Connection& connection,
           const TopOptions& options) {
  if (options.once) return RunOnce(stub, connection, options);

  struct sigaction stop {};
  stop.sa_handler = OnStop;
  ::sigaction(SIGINT, &stop, nullptr);
  ::sigaction(SIGTERM, &stop, nullptr);
  ::sigaction(SIGHUP, &stop, nullptr);
  struct sigaction resize {};
  resize.sa_handler = OnResize;
  ::sigaction(SIGWINCH, &resize, nullptr);

  const std::string target = TargetOf(connection);
  std::string sort = options.sort;
  bool reverse = false;
  std::optional<Sample> previous;
  std::vector<Row> rows;
  std::string error;
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  std::optional<Screen> screen;
  if (tty) screen.emplace();
  const bool keys = screen.has_value() && screen->keys();
  absl::Time next = absl::Now();
  while (g_stop == 0) {
    if (absl::Now() >= next) {
      Sample now;
      grpc::Status s = TakeSample(stub, connection.timeout, &now);
      if (s.ok()) {
        rows = MakeRows(previous ? &*previous : nullptr, now);
        previous = std::move(now);
        error.clear();
      } else {
        error = absl::StrCat(CodeName(s.error_code()), ": ", s.error_message());
      }
      next = absl::Now() + options.interval;
      SortRows(rows, sort, reverse);
      Draw(tty, rows, target, options, sort, reverse, error);
    }
    const char key = WaitForKey(keys, next);
    if (key == 'q' || key == 'Q') break;
    bool redraw = g_resized != 0;
    g_resized = 0;
    if (key == 'r') {
      reverse = !reverse;
      redraw = true;
    }
    for (const SortKey& k : Keys()) {
      if (key == k.key) {
        sort = k.name;
        redraw = true;
      }
    }
    if (redraw) {
      SortRows(rows, sort, reverse);
      Draw(tty, rows, target, options, sort, reverse, error);
    }
  }
  return kExitOk;
}

}  // namespace shmlane::cli
