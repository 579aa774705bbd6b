// The exporter's own parts, without a daemon: the process_* metrics read from
// /proc/self, the bounded method label of the request-duration histogram,
// the duration histogram's buckets, and the families Collect() returns.
#include "control/exporter.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <map>
#include <string>

#include "absl/time/clock.h"
#include "control/daemon_metrics.h"
#include "control/event_bus.h"
#include "control/registry.h"
#include "gtest/gtest.h"
#include "shmlane/version.h"

namespace shmlane::control {
namespace {

namespace v1 = ::shmlane::v1;

TEST(ProcessStatsTest, ReadsThisProcess) {
  const ProcessStats ps = ReadProcessStats();
  ASSERT_TRUE(ps.cpu_seconds && ps.resident_bytes && ps.virtual_bytes && ps.start_time_seconds &&
              ps.open_fds && ps.max_fds);
  EXPECT_GE(*ps.cpu_seconds, 0);
  EXPECT_GT(*ps.resident_bytes, 1 << 20);
  EXPECT_GE(*ps.virtual_bytes, *ps.resident_bytes);
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  EXPECT_LE(*ps.start_time_seconds, now + 1);
  EXPECT_GT(*ps.start_time_seconds, now - 3600) << "this test started within the hour";
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  EXPECT_EQ(*ps.max_fds, static_cast<double>(lim.rlim_cur));
  // One more open fd is seen as one more.
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(*ReadProcessStats().open_fds, *ps.open_fds + 1);
  ::close(fd);
}

TEST(ControlMethodLabelTest, OnlyMethodsThatExist) {
  EXPECT_EQ(ControlMethodLabel("/shmlane.v1.ChannelService/CreateChannel"), "CreateChannel");
  EXPECT_EQ(ControlMethodLabel("/shmlane.v1.AccessService/SetQuota"), "SetQuota");
  EXPECT_EQ(ControlMethodLabel("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
  // A caller cannot mint label values.
  EXPECT_EQ(ControlMethodLabel("/shmlane.v1.ChannelService/NoSuchMethod"), "other");
  EXPECT_EQ(ControlMethodLabel("/shmlane.v1.NoSuchService/CreateChannel"), "other");
  EXPECT_EQ(ControlMethodLabel("/some.Other/Method"), "other");
  EXPECT_EQ(ControlMethodLabel("garbage"), "other");
  EXPECT_EQ(ControlMethodLabel(""), "other");
  EXPECT_EQ(ControlMethodLabel(nullptr), "other");
}

TEST(DurationHistogramTest, UpperBoundsAreInclusive) {
  DurationHistogram h;
  h.Observe(absl::Microseconds(100));  // exactly the first bound
  h.Observe(absl::Microseconds(101));  // the second bucket
  h.Observe(absl::Seconds(11));        // above the last bound: +Inf
  h.Observe(-absl::Seconds(1));        // clock went back: counted as 0
  EXPECT_EQ(h.buckets[0], 2u);
  EXPECT_EQ(h.buckets[1], 1u);
  EXPECT_EQ(h.buckets[kDurationBuckets - 1], 1u);
  EXPECT_EQ(h.count, 4u);
  EXPECT_NEAR(h.sum_seconds, 11.000201, 1e-9);
}

class ExporterTest : public ::testing::Test {
 protected:
  ExporterTest() : registry_({.daemon_uid = 1000, .metrics = &metrics_, .events = &events_}) {}

  std::map<std::string, prometheus::MetricFamily> Families(bool per_lane) {
    Exporter exporter(&registry_, &metrics_, per_lane);
    std::map<std::string, prometheus::MetricFamily> out;
    for (prometheus::MetricFamily& f : exporter.Collect()) out[f.name] = std::move(f);
    return out;
  }

  DaemonMetrics metrics_;
  EventBus events_;
  Registry registry_;
};

TEST_F(ExporterTest, BuildInfoProcessAndChannelFamilies) {
  v1::CreateChannelRequest req;
  req.mutable_spec()->set_name("demo");
  ASSERT_TRUE(registry_.CreateChannel(req).ok());
  metrics_.ObserveAttachHandshake("ok", absl::Milliseconds(2));
  metrics_.ObserveControlRequest("CreateChannel", "OK", absl::Microseconds(300));
  auto f = Families(false);

  ASSERT_EQ(f.count("shmlane_build_info"), 1u);
  ASSERT_EQ(f["shmlane_build_info"].metric.size(), 1u);
  EXPECT_EQ(f["shmlane_build_info"].metric[0].label[0].name, "version");
  EXPECT_EQ(f["shmlane_build_info"].metric[0].label[0].value, SHMLANE_VERSION);
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_start_time_seconds",
                           "process_open_fds", "process_max_fds"}) {
    EXPECT_EQ(f.count(name), 1u) << name;
  }
  EXPECT_EQ(f["shmlane_channels"].metric[0].gauge.value, 1);
  // Live and draining lanes, 0 of each.
  ASSERT_EQ(f["shmlane_lanes"].metric.size(), 2u);
  EXPECT_EQ(f["shmlane_broken_lanes_total"].metric.size(), 1u);

  const auto& handshakes = f["shmlane_attach_handshake_duration_seconds"].metric;
  ASSERT_EQ(handshakes.size(), 1u);
  EXPECT_EQ(handshakes[0].histogram.sample_count, 1u);
  EXPECT_EQ(handshakes[0].histogram.bucket.size(), kDurationBuckets);
  // 2 ms lands at le=0.0025 and everything above it.
  for (const auto& b : handshakes[0].histogram.bucket) {
    EXPECT_EQ(b.cumulative_count, b.upper_bound >= 0.0025 ? 1u : 0u) << b.upper_bound;
  }
  const auto& durations = f["shmlane_control_request_duration_seconds"].metric;
  ASSERT_EQ(durations.size(), 1u);
  EXPECT_EQ(durations[0].label.size(), 2u);  // method, code
}

}  // namespace
}  // namespace shmlane::control
