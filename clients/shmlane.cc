#include "clients/shmlane.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "clients/broadcast.h"
#include "clients/consumer.h"
#include "clients/producer.h"

struct shmlane_producer {
  shmlane::client::Producer producer;
};

struct shmlane_publisher {
  shmlane::client::Publisher publisher;
  bool reserved = false;  // a reservation is open
};

struct shmlane_subscriber {
  shmlane::client::Subscriber subscriber;
  bool peeked = false;  // a peeked frame is held
};

struct shmlane_consumer {
  shmlane::client::Consumer consumer;
  // A frame that did not fit the caller's buffer, returned by the next read.
  std::optional<shmlane::client::Frame> held;
  shmlane::client::Frame scratch;
};

namespace {

using shmlane::client::AttachOptions;
using shmlane::dataplane::WriteResult;

void CopyError(const absl::Status& status, char* error, size_t error_len) {
  if (error == nullptr || error_len == 0) return;
  const std::string text(status.message());
  const size_t n = std::min(text.size(), error_len - 1);
  std::memcpy(error, text.data(), n);
  error[n] = '\0';
}

AttachOptions OptionsFor(const char* runtime_dir, const char* client_name) {
  AttachOptions options;
  if (runtime_dir != nullptr) options.runtime_dir = runtime_dir;
  if (client_name != nullptr) options.client_name = client_name;
  return options;
}

absl::Time DeadlineFor(int64_t timeout_ns) {
  return timeout_ns < 0 ? absl::InfiniteFuture() : absl::Now() + absl::Nanoseconds(timeout_ns);
}

shmlane_result FromWrite(WriteResult r) {
  switch (r) {
    case WriteResult::kOk:
      return SHMLANE_OK;
    case WriteResult::kFull:
      return SHMLANE_FULL;
    case WriteResult::kTooLarge:
      return SHMLANE_TOO_LARGE;
    case WriteResult::kClosed:
      return SHMLANE_CLOSED;
    case WriteResult::kBroken:
      return SHMLANE_BROKEN;
    case WriteResult::kTimeout:
      return SHMLANE_TIMEOUT;
    case WriteResult::kDropped:
      return SHMLANE_DROPPED;
  }
  return SHMLANE_BROKEN;
}

shmlane_result FromRead(shmlane::dataplane::BroadcastReadResult r) {
  using shmlane::dataplane::BroadcastReadResult;
  switch (r) {
    case BroadcastReadResult::kOk:
      return SHMLANE_OK;
    case BroadcastReadResult::kEmpty:
    case BroadcastReadResult::kTimeout:
      return SHMLANE_TIMEOUT;
    case BroadcastReadResult::kClosed:
      return SHMLANE_CLOSED;
    case BroadcastReadResult::kBroken:
      return SHMLANE_BROKEN;
    case BroadcastReadResult::kTooSmall:
      return SHMLANE_TOO_SMALL;
    case BroadcastReadResult::kDetached:
      return SHMLANE_DETACHED;
  }
  return SHMLANE_BROKEN;
}

// Attach errors of every role: InvalidArgument for NULLs, else the
// status's code and message.
template <typename Handle, typename AttachFn>
int AttachHandle(const char* channel, Handle** out, char* error, size_t error_len,
                 AttachFn attach) {
  if (channel == nullptr || out == nullptr) {
    CopyError(absl::InvalidArgumentError("channel and out must not be NULL"), error, error_len);
    return static_cast<int>(absl::StatusCode::kInvalidArgument);
  }
  *out = nullptr;
  auto end = attach();
  if (!end.ok()) {
    CopyError(end.status(), error, error_len);
    return static_cast<int>(end.status().code());
  }
  *out = new (std::nothrow) Handle{std::move(*end)};
  if (*out == nullptr) {
    CopyError(absl::ResourceExhaustedError("out of memory"), error, error_len);
    return static_cast<int>(absl::StatusCode::kResourceExhausted);
  }
  CopyError(absl::OkStatus(), error, error_len);
  return 0;
}

}  // namespace

extern "C" {

const char* shmlane_result_string(shmlane_result result) {
  switch (result) {
    case SHMLANE_OK:
      return "ok";
    case SHMLANE_FULL:
      return "full";
    case SHMLANE_TIMEOUT:
      return "timeout";
    case SHMLANE_CLOSED:
      return "closed";
    case SHMLANE_TOO_LARGE:
      return "too large";
    case SHMLANE_TOO_SMALL:
      return "buffer too small";
    case SHMLANE_DROPPED:
      return "dropped";
    case SHMLANE_BROKEN:
      return "broken";
    case SHMLANE_INTERRUPTED:
      return "interrupted";
    case SHMLANE_INVALID:
      return "invalid argument";
    case SHMLANE_DETACHED:
      return "detached";
    case SHMLANE_OVERWRITTEN:
      return "overwritten";
  }
  return "unknown";
}

int shmlane_producer_attach(const char* runtime_dir, const char* channel, const char* client_name,
                            shmlane_producer** out, char* error, size_t error_len) {
  if (channel == nullptr || out == nullptr) {
    CopyError(absl::InvalidArgumentError("channel and out must not be NULL"), error, error_len);
    return static_cast<int>(absl::StatusCode::kInvalidArgument);
  }
  *out = nullptr;
  auto p = shmlane::client::Producer::Attach(channel, OptionsFor(runtime_dir, client_name));
  if (!p.ok()) {
    CopyError(p.status(), error, error_len);
    return static_cast<int>(p.status().code());
  }
  *out = new (std::nothrow) shmlane_producer{std::move(*p)};
  if (*out == nullptr) {
    CopyError(absl::ResourceExhaustedError("out of memory"), error, error_len);
    return static_cast<int>(absl::StatusCode::kResourceExhausted);
  }
  CopyError(absl::OkStatus(), error, error_len);
  return 0;
}

shmlane_result shmlane_producer_write(shmlane_producer* producer, const void* data, size_t length,
                                      int64_t timeout_ns) {
  if (producer == nullptr || (data == nullptr && length != 0)) return SHMLANE_INVALID;
  const std::span<const std::byte> frame(static_cast<const std::byte*>(data), length);
  if (timeout_ns == 0) return FromWrite(producer->producer.TryWrite(frame));
  return FromWrite(producer->producer.Write(frame, DeadlineFor(timeout_ns)));
}

uint32_t shmlane_producer_max_frame_bytes(const shmlane_producer* producer) {
  return producer == nullptr ? 0 : producer->producer.max_frame_bytes();
}

void shmlane_producer_close(shmlane_producer* producer) { delete producer; }

int shmlane_consumer_attach(const char* runtime_dir, const char* channel, const char* client_name,
                            shmlane_consumer** out, char* error, size_t error_len) {
  if (channel == nullptr || out == nullptr) {
    CopyError(absl::InvalidArgumentError("channel and out must not be NULL"), error, error_len);
    return static_cast<int>(absl::StatusCode::kInvalidArgument);
  }
  *out = nullptr;
  shmlane::client::Consumer::Options options;
  static_cast<AttachOptions&>(options) = OptionsFor(runtime_dir, client_name);
  auto c = shmlane::client::Consumer::Attach(channel, std::move(options));
  if (!c.ok()) {
    CopyError(c.status(), error, error_len);
    return static_cast<int>(c.status().code());
  }
  *out = new (std::nothrow) shmlane_consumer{std::move(*c), std::nullopt, {}};
  if (*out == nullptr) {
    CopyError(absl::ResourceExhaustedError("out of memory"), error, error_len);
    return static_cast<int>(absl::StatusCode::kResourceExhausted);
  }
  CopyError(absl::OkStatus(), error, error_len);
  return 0;
}

shmlane_result shmlane_consumer_read(shmlane_consumer* consumer, void* buffer, size_t capacity,
                                     size_t* length, uint64_t* producer_id, int64_t timeout_ns) {
  if (consumer == nullptr || length == nullptr || (buffer == nullptr && capacity != 0)) {
    return SHMLANE_INVALID;
  }
  if (!consumer->held.has_value()) {
    const absl::Status s = consumer->consumer.Read(&consumer->scratch, DeadlineFor(timeout_ns));
    if (!s.ok()) {
      if (absl::IsDeadlineExceeded(s)) return SHMLANE_TIMEOUT;
      if (absl::IsCancelled(s)) return SHMLANE_INTERRUPTED;
      if (absl::IsDataLoss(s)) return SHMLANE_BROKEN;
      return SHMLANE_CLOSED;
    }
    consumer->held.emplace(std::move(consumer->scratch));
    consumer->scratch = shmlane::client::Frame();
  }
  const shmlane::client::Frame& frame = *consumer->held;
  *length = frame.data.size();
  if (producer_id != nullptr) *producer_id = frame.peer.attachment_id;
  if (frame.data.size() > capacity) return SHMLANE_TOO_SMALL;
  if (buffer != nullptr && !frame.data.empty()) {
    std::memcpy(buffer, frame.data.data(), frame.data.size());
  }
  // Keep the buffer's capacity for the next read.
  consumer->scratch.data.swap(consumer->held->data);
  consumer->held.reset();
  return SHMLANE_OK;
}

void shmlane_consumer_interrupt(shmlane_consumer* consumer) {
  if (consumer != nullptr) consumer->consumer.Interrupt();
}

size_t shmlane_consumer_producer_count(const shmlane_consumer* consumer) {
  return consumer == nullptr ? 0 : consumer->consumer.peers().size();
}

void shmlane_consumer_close(shmlane_consumer* consumer) { delete consumer; }

// ------------------------------- BROADCAST ---------------------------------

int shmlane_publisher_attach(const char* runtime_dir, const char* channel, const char* client_name,
                             shmlane_publisher** out, char* error, size_t error_len) {
  return AttachHandle(channel, out, error, error_len, [&] {
    return shmlane::client::Publisher::Attach(channel, OptionsFor(runtime_dir, client_name));
  });
}

shmlane_result shmlane_publisher_write(shmlane_publisher* publisher, const void* data,
                                       size_t length, int64_t timeout_ns) {
  if (publisher == nullptr || (data == nullptr && length != 0)) return SHMLANE_INVALID;
  if (publisher->reserved) return SHMLANE_INVALID;  // commit the reservation first
  const std::span<const std::byte> frame(static_cast<const std::byte*>(data), length);
  if (timeout_ns == 0) return FromWrite(publisher->publisher.TryWrite(frame));
  return FromWrite(publisher->publisher.Write(frame, DeadlineFor(timeout_ns)));
}

shmlane_result shmlane_publisher_reserve(shmlane_publisher* publisher, size_t length, void** data) {
  if (publisher == nullptr || data == nullptr || publisher->reserved) return SHMLANE_INVALID;
  *data = nullptr;
  const shmlane::dataplane::Reservation r = publisher->publisher.Reserve(length);
  if (r.result != WriteResult::kOk) return FromWrite(r.result);
  *data = r.data.data();
  publisher->reserved = true;
  return SHMLANE_OK;
}

shmlane_result shmlane_publisher_commit(shmlane_publisher* publisher, size_t used) {
  if (publisher == nullptr || !publisher->reserved) return SHMLANE_INVALID;
  publisher->reserved = false;
  publisher->publisher.Commit(used);
  return SHMLANE_OK;
}

shmlane_result shmlane_publisher_poll(shmlane_publisher* publisher) {
  if (publisher == nullptr) return SHMLANE_INVALID;
  return publisher->publisher.Poll().ok() ? SHMLANE_OK : SHMLANE_CLOSED;
}

size_t shmlane_publisher_subscriber_count(const shmlane_publisher* publisher) {
  return publisher == nullptr ? 0 : publisher->publisher.subscribers();
}

uint64_t shmlane_publisher_frames_published(const shmlane_publisher* publisher) {
  return publisher == nullptr ? 0 : publisher->publisher.frames_published();
}

uint32_t shmlane_publisher_max_frame_bytes(const shmlane_publisher* publisher) {
  return publisher == nullptr ? 0 : publisher->publisher.max_frame_bytes();
}

void shmlane_publisher_close(shmlane_publisher* publisher) { delete publisher; }

int shmlane_subscriber_attach(const char* runtime_dir, const char* channel, const char* client_name,
                              int64_t history_frames, shmlane_subscriber** out, char* error,
                              size_t error_len) {
  shmlane::client::ReaderStart start;
  if (history_frames == 0) {
    start.mode = shmlane::client::ReaderStart::Mode::kLiveTail;
  } else if (history_frames > 0) {
    start.mode = shmlane::client::ReaderStart::Mode::kHistory;
    start.history_frames =
        static_cast<uint32_t>(std::min<int64_t>(history_frames, int64_t{UINT32_MAX}));
  }
  return AttachHandle(channel, out, error, error_len, [&] {
    return shmlane::client::Subscriber::Attach(channel, start,
                                               OptionsFor(runtime_dir, client_name));
  });
}

shmlane_result shmlane_subscriber_read(shmlane_subscriber* subscriber, void* buffer,
                                       size_t capacity, size_t* length, uint64_t* seq,
                                       uint64_t* missed, int64_t timeout_ns) {
  if (subscriber == nullptr || length == nullptr || (buffer == nullptr && capacity != 0) ||
      subscriber->peeked) {
    return SHMLANE_INVALID;
  }
  const std::span<std::byte> out(static_cast<std::byte*>(buffer), capacity);
  shmlane::client::FrameInfo info;
  *length = 0;
  const shmlane::client::BroadcastReadResult r =
      timeout_ns == 0 ? subscriber->subscriber.TryRead(out, length, &info)
                      : subscriber->subscriber.Read(out, length, DeadlineFor(timeout_ns), &info);
  if (r == shmlane::client::BroadcastReadResult::kOk) {
    if (seq != nullptr) *seq = info.seq;
    if (missed != nullptr) *missed = info.missed;
  }
  return FromRead(r);
}

shmlane_result shmlane_subscriber_peek(shmlane_subscriber* subscriber, const void** data,
                                       size_t* length, uint64_t* seq, uint64_t* missed,
                                       int64_t timeout_ns) {
  if (subscriber == nullptr || data == nullptr || length == nullptr || subscriber->peeked) {
    return SHMLANE_INVALID;
  }
  *data = nullptr;
  *length = 0;
  if (timeout_ns != 0) {
    const shmlane::client::BroadcastReadResult w =
        subscriber->subscriber.WaitReadable(DeadlineFor(timeout_ns));
    if (w != shmlane::client::BroadcastReadResult::kOk) return FromRead(w);
  }
  const shmlane::client::BroadcastPeek p = subscriber->subscriber.Peek();
  if (p.result != shmlane::client::BroadcastReadResult::kOk) return FromRead(p.result);
  *data = p.data.data();
  *length = p.data.size();
  if (seq != nullptr) *seq = p.seq;
  if (missed != nullptr) *missed = p.missed;
  subscriber->peeked = true;
  return SHMLANE_OK;
}

shmlane_result shmlane_subscriber_release(shmlane_subscriber* subscriber) {
  if (subscriber == nullptr || !subscriber->peeked) return SHMLANE_INVALID;
  subscriber->peeked = false;
  return subscriber->subscriber.Release() == shmlane::client::ReleaseResult::kOk
             ? SHMLANE_OK
             : SHMLANE_OVERWRITTEN;
}

uint64_t shmlane_subscriber_missed_frames(const shmlane_subscriber* subscriber) {
  return subscriber == nullptr ? 0 : subscriber->subscriber.missed_frames();
}

uint64_t shmlane_subscriber_frames_read(const shmlane_subscriber* subscriber) {
  return subscriber == nullptr ? 0 : subscriber->subscriber.frames_read();
}

uint32_t shmlane_subscriber_max_frame_bytes(const shmlane_subscriber* subscriber) {
  return subscriber == nullptr ? 0 : subscriber->subscriber.max_frame_bytes();
}

void shmlane_subscriber_close(shmlane_subscriber* subscriber) { delete subscriber; }

}  // extern "C"
