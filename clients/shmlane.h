/* shmlane C ABI: attach to a channel as a producer or consumer (STREAM), or
 * as a publisher or subscriber (BROADCAST), and move frames through shared
 * memory. For C programs and foreign-function interfaces (Python ctypes,
 * Rust bindgen, Go cgo); C++ code should use clients/producer.h,
 * clients/consumer.h and clients/broadcast.h, which this wraps.
 *
 *   char err[256];
 *   shmlane_producer* p;
 *   if (shmlane_producer_attach(NULL, "telemetry", "sensor-1", &p, err, sizeof err) != 0) {
 *     fprintf(stderr, "%s\n", err);     // e.g. "shmlaned is not running at ..."
 *   }
 *   shmlane_producer_write(p, buf, len, -1);   // block until written
 *   shmlane_producer_close(p);
 *
 * Attach functions return 0 or a google.rpc.Code value (14 UNAVAILABLE: no
 * daemon; 7 PERMISSION_DENIED: no grant; 5 NOT_FOUND: no channel; ...) and
 * write a NUL-terminated message into `error` (cut to `error_len`).
 * Timeouts are nanoseconds: < 0 waits forever, 0 never blocks.
 *
 * Thread safety: a handle is used by one thread at a time, except
 * shmlane_consumer_interrupt, which any thread may call while the handle
 * lives. Handles are independent.
 */
#ifndef SHMLANE_CLIENTS_SHMLANE_H_
#define SHMLANE_CLIENTS_SHMLANE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum shmlane_result {
  SHMLANE_OK = 0,
  SHMLANE_FULL = 1,    /* write: the lane is full (non-blocking write or fail-fast policy) */
  SHMLANE_TIMEOUT = 2, /* the timeout passed */
  SHMLANE_CLOSED = 3, /* the peer is gone (write) or no producer is left and none can come (read) */
  SHMLANE_TOO_LARGE = 4,   /* write: larger than the channel's max frame */
  SHMLANE_TOO_SMALL = 5,   /* read: buffer too small; *length says what is needed; frame kept */
  SHMLANE_DROPPED = 6,     /* write: the lane was full and its policy dropped the frame */
  SHMLANE_BROKEN = 7,      /* the lane is corrupt (a peer scribbled on shared memory) */
  SHMLANE_INTERRUPTED = 8, /* read: shmlane_consumer_interrupt was called */
  SHMLANE_INVALID = 9,     /* a NULL handle or buffer */
  SHMLANE_DETACHED = 10,   /* subscriber: the daemon released its slot, or the publisher
                              detached it for lag (disconnect policy); attach again */
  SHMLANE_OVERWRITTEN = 11 /* subscriber release: the publisher overwrote the peeked frame
                              while it was held (drop-oldest): discard what was derived
                              from it; it is counted as missed */
} shmlane_result;

/* A short English name for a result ("ok", "full", ...). Never NULL. */
const char* shmlane_result_string(shmlane_result result);

typedef struct shmlane_producer shmlane_producer;
typedef struct shmlane_consumer shmlane_consumer;

/* runtime_dir and client_name may be NULL (SHMLANE_RUNTIME_DIR, then
 * $XDG_RUNTIME_DIR/shmlane, then /run/shmlane; the program's name). */
int shmlane_producer_attach(const char* runtime_dir, const char* channel, const char* client_name,
                            shmlane_producer** out, char* error, size_t error_len);
/* Copies one frame into the lane. timeout_ns 0: never blocks (SHMLANE_FULL
 * when there is no room); otherwise the channel's backpressure policy. */
shmlane_result shmlane_producer_write(shmlane_producer* producer, const void* data, size_t length,
                                      int64_t timeout_ns);
uint32_t shmlane_producer_max_frame_bytes(const shmlane_producer* producer);
/* Closes the lane cleanly (the consumer still reads what was written) and
 * frees the handle. NULL is ignored. */
void shmlane_producer_close(shmlane_producer* producer);

int shmlane_consumer_attach(const char* runtime_dir, const char* channel, const char* client_name,
                            shmlane_consumer** out, char* error, size_t error_len);
/* Copies the next frame from any producer into buffer. *length receives its
 * size; producer_id (may be NULL) the producer's attachment id. */
shmlane_result shmlane_consumer_read(shmlane_consumer* consumer, void* buffer, size_t capacity,
                                     size_t* length, uint64_t* producer_id, int64_t timeout_ns);
/* Makes a blocked (or the next) shmlane_consumer_read return
 * SHMLANE_INTERRUPTED. Any thread. */
void shmlane_consumer_interrupt(shmlane_consumer* consumer);
/* Number of producers attached now. */
size_t shmlane_consumer_producer_count(const shmlane_consumer* consumer);
/* Detaches and frees the handle. NULL is ignored. */
void shmlane_consumer_close(shmlane_consumer* consumer);

/* ---- BROADCAST: one publisher, many subscribers over one ring ----
 *
 *   shmlane_publisher* pub;
 *   shmlane_publisher_attach(NULL, "camera", NULL, &pub, err, sizeof err);
 *   shmlane_publisher_write(pub, frame, len, 10000000);     // up to 10 ms (block policy)
 *
 *   shmlane_subscriber* sub;
 *   shmlane_subscriber_attach(NULL, "camera", NULL, 0, &sub, err, sizeof err);
 *   shmlane_subscriber_read(sub, buf, sizeof buf, &len, &seq, &missed, -1);
 *
 * Attach errors as above; a second publisher gets 9 FAILED_PRECONDITION, a
 * STREAM channel 3 INVALID_ARGUMENT, a full channel 8 RESOURCE_EXHAUSTED.
 * The channel's slow-subscriber policy decides what a slow subscriber
 * costs: block makes the publisher wait (its timeout), drop-oldest laps the
 * subscriber (which learns how many frames it missed), disconnect detaches
 * it. Blocked calls spin or park as the channel's wait preference says. */
typedef struct shmlane_publisher shmlane_publisher;
typedef struct shmlane_subscriber shmlane_subscriber;

int shmlane_publisher_attach(const char* runtime_dir, const char* channel, const char* client_name,
                             shmlane_publisher** out, char* error, size_t error_len);
/* Copies one frame into the ring for every subscriber. timeout_ns 0 never
 * blocks (SHMLANE_FULL when a block-policy subscriber has no room);
 * otherwise block waits for the slowest subscriber until the timeout, and
 * the other policies never wait. */
shmlane_result shmlane_publisher_write(shmlane_publisher* publisher, const void* data,
                                       size_t length, int64_t timeout_ns);
/* Zero-copy: *data points at `length` writable bytes in the ring (valid
 * until commit); never blocks. Then shmlane_publisher_commit(used <=
 * length) publishes them. One reservation at a time. */
shmlane_result shmlane_publisher_reserve(shmlane_publisher* publisher, size_t length, void** data);
shmlane_result shmlane_publisher_commit(shmlane_publisher* publisher, size_t used);
/* Reads the daemon's news (subscribers that came or went) without blocking;
 * writes do it by themselves. SHMLANE_CLOSED once the daemon ended us. */
shmlane_result shmlane_publisher_poll(shmlane_publisher* publisher);
size_t shmlane_publisher_subscriber_count(const shmlane_publisher* publisher);
uint64_t shmlane_publisher_frames_published(const shmlane_publisher* publisher);
uint32_t shmlane_publisher_max_frame_bytes(const shmlane_publisher* publisher);
/* Closes the ring (subscribers read what was published, then see
 * SHMLANE_CLOSED), detaches and frees the handle. NULL is ignored. */
void shmlane_publisher_close(shmlane_publisher* publisher);

/* history_frames: where to start. < 0: the channel's history_frames; 0:
 * the live tail (only frames published from now on); N: up to N frames
 * still in the ring. */
int shmlane_subscriber_attach(const char* runtime_dir, const char* channel, const char* client_name,
                              int64_t history_frames, shmlane_subscriber** out, char* error,
                              size_t error_len);
/* Copies the next frame. *length gets its size (also on SHMLANE_TOO_SMALL,
 * the frame is then kept); seq (may be NULL) its sequence number, missed
 * (may be NULL) how many frames were lost just before it. timeout_ns 0:
 * SHMLANE_TIMEOUT at once when there is none. */
shmlane_result shmlane_subscriber_read(shmlane_subscriber* subscriber, void* buffer,
                                       size_t capacity, size_t* length, uint64_t* seq,
                                       uint64_t* missed, int64_t timeout_ns);
/* Zero-copy: *data points at the next frame in the read-only ring, valid
 * until shmlane_subscriber_release, which returns SHMLANE_OVERWRITTEN if
 * the publisher overwrote it meanwhile. Waits up to timeout_ns for one. */
shmlane_result shmlane_subscriber_peek(shmlane_subscriber* subscriber, const void** data,
                                       size_t* length, uint64_t* seq, uint64_t* missed,
                                       int64_t timeout_ns);
shmlane_result shmlane_subscriber_release(shmlane_subscriber* subscriber);
/* Frames lost (lapped, or overwritten while held) and read intact so far. */
uint64_t shmlane_subscriber_missed_frames(const shmlane_subscriber* subscriber);
uint64_t shmlane_subscriber_frames_read(const shmlane_subscriber* subscriber);
uint32_t shmlane_subscriber_max_frame_bytes(const shmlane_subscriber* subscriber);
/* Detaches (a block publisher stops waiting for it) and frees the handle.
 * NULL is ignored. */
void shmlane_subscriber_close(shmlane_subscriber* subscriber);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMLANE_CLIENTS_SHMLANE_H_ */
