/* shmlane C ABI: attach to a channel as a producer or consumer and move
 * frames through shared memory. For C programs and foreign-function
 * interfaces (Python ctypes, Rust bindgen, Go cgo); C++ code should use
 * clients/producer.h and clients/consumer.h, which this wraps.
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
  SHMLANE_INVALID = 9      /* a NULL handle or buffer */
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMLANE_CLIENTS_SHMLANE_H_ */
