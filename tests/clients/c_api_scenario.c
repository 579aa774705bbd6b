/* The C ABI used from C (this file is compiled as C11, so the header must
 * be valid C): a producer and a consumer in one process exchange frames.
 * Called by client_integration_test with a live daemon and a STREAM channel.
 * Returns 0, or the number of the step that failed, with a message. */
#include <stdio.h>
#include <string.h>

#include "clients/shmlane.h"

int shmlane_c_api_scenario(const char* runtime_dir, const char* channel, char* message,
                           size_t message_len);

int shmlane_c_api_scenario(const char* runtime_dir, const char* channel, char* message,
                           size_t message_len) {
  shmlane_consumer* consumer = NULL;
  shmlane_producer* producer = NULL;
  char buffer[64];
  size_t length = 0;
  uint64_t producer_id = 0;
  int i;
  int step = 0;

  if (shmlane_consumer_attach(runtime_dir, channel, "c-consumer", &consumer, message,
                              message_len) != 0) {
    return 1;
  }
  if (shmlane_producer_attach(runtime_dir, channel, "c-producer", &producer, message,
                              message_len) != 0) {
    step = 2;
    goto done;
  }
  for (i = 0; i < 100; ++i) {
    char frame[32];
    const int n = snprintf(frame, sizeof frame, "c frame %d", i);
    if (shmlane_producer_write(producer, frame, (size_t)n, -1) != SHMLANE_OK) {
      snprintf(message, message_len, "write %d failed", i);
      step = 3;
      goto done;
    }
  }
  /* A buffer that is too small keeps the frame and says what it needs. */
  if (shmlane_consumer_read(consumer, buffer, 2, &length, &producer_id, 1000000000) !=
          SHMLANE_TOO_SMALL ||
      length != strlen("c frame 0")) {
    snprintf(message, message_len, "a too-small buffer was not reported");
    step = 4;
    goto done;
  }
  for (i = 0; i < 100; ++i) {
    char expected[32];
    const int n = snprintf(expected, sizeof expected, "c frame %d", i);
    const shmlane_result r =
        shmlane_consumer_read(consumer, buffer, sizeof buffer, &length, &producer_id, 1000000000);
    if (r != SHMLANE_OK || length != (size_t)n || memcmp(buffer, expected, length) != 0) {
      snprintf(message, message_len, "read %d: %s", i, shmlane_result_string(r));
      step = 5;
      goto done;
    }
  }
  if (shmlane_consumer_read(consumer, buffer, sizeof buffer, &length, NULL, 0) != SHMLANE_TIMEOUT) {
    snprintf(message, message_len, "an empty channel did not time out");
    step = 6;
    goto done;
  }
  if (shmlane_consumer_producer_count(consumer) != 1 || producer_id == 0) {
    snprintf(message, message_len, "producer bookkeeping is wrong");
    step = 7;
    goto done;
  }
  shmlane_consumer_interrupt(consumer);
  if (shmlane_consumer_read(consumer, buffer, sizeof buffer, &length, NULL, -1) !=
      SHMLANE_INTERRUPTED) {
    snprintf(message, message_len, "interrupt did not end a blocking read");
    step = 8;
    goto done;
  }
done:
  shmlane_producer_close(producer);
  shmlane_consumer_close(consumer);
  return step;
}
