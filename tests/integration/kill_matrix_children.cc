// The kill matrix's producer and consumer processes (kill_matrix_children.h).
#include "tests/integration/kill_matrix_children.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/consumer.h"
#include "clients/producer.h"

namespace shmlane::testing::kill_matrix {
namespace {

using dataplane::testing::NowNs;

// ---------------------------------------------------------------------------
// The frames.

struct FrameHeader {
  uint32_t producer;
  uint32_t incarnation;
  uint64_t seq;
  uint64_t sent_ns;
  uint32_t payload_bytes;
  uint32_t checksum;  // FNV-1a over the fields above and the payload
};
static_assert(sizeof(FrameHeader) == 32);

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint32_t Fnv1a(std::span<const std::byte> bytes, uint32_t h = 2166136261u) {
  for (std::byte b : bytes) h = (h ^ static_cast<uint8_t>(b)) * 16777619u;
  return h;
}

uint32_t Checksum(const FrameHeader& h, std::span<const std::byte> payload) {
  FrameHeader copy = h;
  copy.checksum = 0;
  return Fnv1a(payload, Fnv1a(std::as_bytes(std::span(&copy, 1))));
}

// Builds frame (producer, incarnation, seq): 8..135 payload bytes, each a
// function of the frame's identity, so that a frame from the wrong place or
// with a torn payload fails the check.
size_t BuildFrame(uint32_t producer, uint32_t incarnation, uint64_t seq, std::byte* out) {
  const uint64_t key = Mix((uint64_t{producer} << 56) ^ (uint64_t{incarnation} << 40) ^ seq);
  FrameHeader h{producer,
                incarnation,
                seq,
                static_cast<uint64_t>(NowNs()),
                static_cast<uint32_t>(8 + key % 128),
                0};
  std::byte* payload = out + sizeof(h);
  for (uint32_t i = 0; i < h.payload_bytes; ++i) {
    payload[i] = static_cast<std::byte>(Mix(key + i / 8) >> (8 * (i % 8)));
  }
  h.checksum = Checksum(h, std::span(payload, h.payload_bytes));
  std::memcpy(out, &h, sizeof(h));
  return sizeof(h) + h.payload_bytes;
}

// The frame's header if it is intact; nullopt (and why) if not.
std::optional<FrameHeader> CheckFrame(std::span<const std::byte> data, std::string* why) {
  FrameHeader h{};
  if (data.size() < sizeof(h)) {
    *why = absl::StrCat("a frame of ", data.size(), " bytes");
    return std::nullopt;
  }
  std::memcpy(&h, data.data(), sizeof(h));
  if (data.size() != sizeof(h) + h.payload_bytes) {
    *why = absl::StrCat("p", h.producer, ".", h.incarnation, " seq ", h.seq, ": ", data.size(),
                        " bytes, header says ", sizeof(h) + h.payload_bytes);
    return std::nullopt;
  }
  std::byte expected[sizeof(FrameHeader) + 160];
  BuildFrame(h.producer, h.incarnation, h.seq, expected);
  FrameHeader e{};
  std::memcpy(&e, expected, sizeof(e));
  if (h.checksum != Checksum(h, data.subspan(sizeof(h))) || h.payload_bytes != e.payload_bytes ||
      std::memcmp(data.data() + sizeof(h), expected + sizeof(h), h.payload_bytes) != 0) {
    *why = absl::StrCat("p", h.producer, ".", h.incarnation, " seq ", h.seq, ": bad checksum");
    return std::nullopt;
  }
  return h;
}

client::AttachOptions Options(const TestDaemon& d, const std::string& name) {
  client::AttachOptions o;
  o.runtime_dir = d.runtime_dir();
  o.client_name = name;
  return o;
}

// Attach with retries while the daemon is restarting (Unavailable) or still
// holds a dead consumer's place (FailedPrecondition), up to kBound.
template <typename Fn>
auto AttachRetrying(Fn attach) {
  const absl::Time give_up = absl::Now() + kBound;
  for (;;) {
    auto r = attach();
    if (r.ok() || absl::Now() >= give_up ||
        !(absl::IsUnavailable(r.status()) || absl::IsFailedPrecondition(r.status()))) {
      return r;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Children.

// Producer i, incarnation `inc`: writes frames 0, 1, ... in bursts of 4 with a
// short sleep between (8 of them share 2 vCPUs with the consumer and the
// daemon), records what Write committed, and pauses when told.
int ProducerMain(const TestDaemon& d, Shared* sh, int i, uint32_t inc) {
  auto p = AttachRetrying([&] {
    return client::Producer::Attach(kChannel, Options(d, absl::StrCat("p", i, ".", inc)));
  });
  if (!p.ok()) {
    std::fprintf(stderr, "p%d.%u: attach failed: %s\n", i, inc, p.status().ToString().c_str());
    sh->Set(slot::ProducerFailed(i), 1);
    return 10;
  }
  sh->Set(slot::LaneId(i), p->peer().lane_id);
  sh->Set(slot::Committed(i), 0);
  sh->Set(slot::Ready(i), inc + 1);
  std::byte frame[sizeof(FrameHeader) + 160];
  for (uint64_t seq = 0;; ++seq) {
    while (sh->Get(slot::kPauseProducers) != 0 && sh->Get(slot::kStop) == 0) {
      sh->Set(slot::Paused(i), inc + 1);
      absl::SleepFor(absl::Microseconds(500));
    }
    sh->Set(slot::Paused(i), 0);
    if (sh->Get(slot::kStop) != 0) return 0;
    const size_t n = BuildFrame(static_cast<uint32_t>(i), inc, seq, frame);
    const client::WriteResult r =
        p->Write(std::span<const std::byte>(frame, n), absl::Now() + kWriteDeadline);
    if (r != client::WriteResult::kOk) {
      std::fprintf(stderr, "p%d.%u: frame %lu not written: %s\n", i, inc,
                   static_cast<unsigned long>(seq),
                   client::ToStatus(r, p->status().ToString()).ToString().c_str());
      sh->Set(slot::ProducerFailed(i), 1);
      return 12;
    }
    sh->Set(slot::Committed(i), seq + 1);
    if (seq % 4 == 3) absl::SleepFor(absl::Microseconds(400));
  }
}

namespace {

// What the consumer knows about one producer incarnation.
struct Stream {
  uint64_t next = 0;     // the next seq it must see
  uint64_t dup_end = 0;  // seqs below this may come again (unreleased by a killed consumer)
  bool dead = false;     // its kDetached came
};

}  // namespace

int ConsumerMain(const TestDaemon& d, Shared* sh, uint32_t inc) {
  std::map<std::pair<int, uint32_t>, Stream> streams;
  bool failed = false;
  auto fail = [&](const std::string& why) {
    if (failed) return;
    failed = true;
    std::fprintf(stderr, "consumer c%u: %s\n", inc, why.c_str());
    sh->Set(slot::kConsumerFailed, 1);
  };
  auto parse = [](const std::string& name, int* id, uint32_t* pinc) {
    std::vector<std::string> parts = absl::StrSplit(name.substr(name.empty() ? 0 : 1), '.');
    return name.size() > 1 && name[0] == 'p' && parts.size() == 2 &&
           absl::SimpleAtoi(parts[0], id) && absl::SimpleAtoi(parts[1], pinc) && *id >= 0 &&
           *id < kProducers;
  };
  for (int i = 0; i < kProducers; ++i) sh->Set(slot::Live(i), 0);
  client::Consumer::Options o;
  static_cast<client::AttachOptions&>(o) = Options(d, absl::StrCat("c", inc));
  o.on_peer_event = [&](const client::PeerEvent& e) {
    int id = 0;
    uint32_t pinc = 0;
    if (!parse(e.peer.name, &id, &pinc)) {
      fail(absl::StrCat("an event for an unknown peer '", e.peer.name, "': ", e.status.ToString()));
      return;
    }
    const uint64_t bit = uint64_t{1} << (pinc % 64);
    if (e.kind == client::PeerEvent::Kind::kAttached) {
      sh->Set(slot::Live(id), sh->Get(slot::Live(id)) | bit);
      return;
    }
    Stream& s = streams[{id, pinc}];
    s.dead = true;
    sh->Set(slot::DeathSeen(id), Pack(pinc, s.next));
    sh->Set(slot::DeathLane(id), e.peer.lane_id);
    sh->Set(slot::Live(id), sh->Get(slot::Live(id)) & ~bit);
  };
  auto c = AttachRetrying([&] { return client::Consumer::Attach(kChannel, o); });
  if (!c.ok()) {
    fail(absl::StrCat("attach failed: ", c.status().ToString()));
    return 10;
  }
  // A restarted consumer (durable channel) continues each producer's stream
  // after what its predecessor released.
  std::array<uint64_t, kProducers> released{}, intent{}, intent_pos{};
  std::array<bool, kProducers> first_checked{};
  for (int i = 0; i < kProducers; ++i) {
    released[i] = sh->Get(slot::Released(i));
    intent[i] = sh->Get(slot::Intent(i));
    intent_pos[i] = sh->Get(slot::IntentPos(i));
    const uint64_t seen = sh->Get(slot::Seen(i));
    if (inc > 0 && released[i] != 0) {
      Stream& s = streams[{i, static_cast<uint32_t>(IncOf(released[i]))}];
      s.next = NOf(released[i]);
      if (IncOf(seen) == IncOf(released[i])) s.dup_end = NOf(seen);
    } else {
      first_checked[i] = true;
    }
  }
  sh->Set(slot::kConsumerReady, inc + 1);
  int64_t last_ns = 0;
  bool first = true;
  // One frame: identity, order, duplicates. Returns false after a failure.
  auto check = [&](std::span<const std::byte> data, uint64_t lane_id,
                   std::optional<uint64_t> position) {
    std::string why;
    std::optional<FrameHeader> h = CheckFrame(data, &why);
    if (!h.has_value()) {
      fail(why);
      return false;
    }
    const int id = static_cast<int>(h->producer);
    if (id < 0 || id >= kProducers) {
      fail(absl::StrCat("a frame from producer ", id));
      return false;
    }
    Stream& s = streams[{id, h->incarnation}];
    const std::string who = absl::StrCat("p", id, ".", h->incarnation);
    if (s.dead) {
      fail(absl::StrCat(who, " seq ", h->seq, " arrived after its death was reported"));
      return false;
    }
    if (!first_checked[id] && position.has_value() && h->incarnation == IncOf(released[id])) {
      // The first frame after a consumer restart: exactly the one after the
      // last released, or the one whose release the kill interrupted.
      first_checked[id] = true;
      const bool interrupted = intent[id] != released[id];
      const bool redelivered = interrupted && h->seq + 1 == NOf(intent[id]);
      if (!redelivered && h->seq != NOf(released[id]) &&
          !(interrupted && h->seq == NOf(intent[id]))) {
        fail(absl::StrCat(who, ": the restarted consumer's first frame is seq ", h->seq,
                          ", its predecessor released up to seq ", NOf(released[id]),
                          " (lost or replayed released frames)"));
        return false;
      }
      if (redelivered && *position != intent_pos[id]) {
        fail(absl::StrCat(who, " seq ", h->seq, " came again at position ", *position,
                          ", it was at ", intent_pos[id]));
        return false;
      }
      if (!redelivered && *position <= intent_pos[id] &&
          sh->Get(slot::ReleasedLane(id)) == lane_id) {
        fail(absl::StrCat(who, " seq ", h->seq, " at position ", *position,
                          ", not after the released one at ", intent_pos[id]));
        return false;
      }
      // Either way the stream goes on from this frame: a redelivered one, or
      // the one after a release the kill interrupted only after it was done
      // (the predecessor died between Release() and recording it).
      if (redelivered || (interrupted && h->seq == NOf(intent[id]))) s.next = h->seq;
    }
    if (h->seq != s.next) {
      fail(absl::StrCat(who, ": expected seq ", s.next, ", got ", h->seq));
      return false;
    }
    if (h->seq < s.dup_end) sh->Set(slot::kDuplicates, sh->Get(slot::kDuplicates) + 1);
    ++s.next;
    sh->Set(slot::Seen(id), Pack(h->incarnation, s.next));
    sh->Set(slot::kFramesChecked, sh->Get(slot::kFramesChecked) + 1);
    const int64_t now = NowNs();
    if (first) {
      sh->Set(slot::kFirstFrameNs, static_cast<uint64_t>(now));
      first = false;
    }
    const uint64_t reset = sh->Get(slot::kStallReset);
    if (reset != sh->Get(slot::kStallResetSeen)) {
      sh->Set(slot::kMaxGapNs, 0);
      sh->Set(slot::kStallResetSeen, reset);
    } else if (last_ns != 0) {
      sh->Set(slot::kMaxGapNs,
              std::max<uint64_t>(sh->Get(slot::kMaxGapNs), static_cast<uint64_t>(now - last_ns)));
    }
    last_ns = now;
    return true;
  };
  client::Frame frame;
  while (sh->Get(slot::kStop) == 0 && !failed) {
    if (sh->Get(slot::kPauseConsumer) != 0) {
      sh->Set(slot::kConsumerPaused, 1);
      absl::SleepFor(absl::Microseconds(500));
      last_ns = 0;  // a pause is not a stall
      continue;
    }
    sh->Set(slot::kConsumerPaused, 0);
    const absl::Time deadline = absl::Now() + absl::Milliseconds(100);
    if (kKillConsumers) {
      auto f = c->Peek(deadline);
      if (absl::IsDeadlineExceeded(f.status())) continue;
      if (!f.ok()) {
        fail(absl::StrCat("Peek: ", f.status().ToString()));
        break;
      }
      const std::span<const std::byte> bytes = std::as_bytes(std::span(f->data));
      if (!check(bytes, f->peer->lane_id, f->position)) break;
      FrameHeader h{};
      std::memcpy(&h, bytes.data(), sizeof(h));
      const int id = static_cast<int>(h.producer);
      sh->Set(slot::IntentPos(id), f->position);
      sh->Set(slot::Intent(id), Pack(h.incarnation, h.seq + 1));
      c->Release();
      sh->Set(slot::ReleasedLane(id), f->peer->lane_id);
      sh->Set(slot::Released(id), Pack(h.incarnation, h.seq + 1));
    } else {
      absl::Status s = c->Read(&frame, deadline);
      if (absl::IsDeadlineExceeded(s)) continue;
      if (!s.ok()) {
        fail(absl::StrCat("Read: ", s.ToString()));
        break;
      }
      if (!check(std::as_bytes(std::span(frame.data)), frame.peer.lane_id, std::nullopt)) break;
    }
  }
  return failed ? 20 : 0;
}

}  // namespace shmlane::testing::kill_matrix
