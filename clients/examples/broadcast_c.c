/* A BROADCAST publisher and subscriber in C, through the C ABI
 * (clients/shmlane.h):
 *
 *   broadcast_c subscribe CHANNEL          reads until the publisher closes
 *   broadcast_c publish CHANNEL [FRAMES]   publishes FRAMES (default 1000) to the
 *                                          subscribers attached (start them first)
 *
 * The publisher writes "frame N" zero-copy (reserve/commit); the subscriber
 * reads in place (peek/release) and prints what it got and what it missed.
 * SHMLANE_RUNTIME_DIR picks the daemon. Exit status: 0, 1 on a failure,
 * 2 on bad usage. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/shmlane.h"

static int usage(void) {
  fprintf(stderr,
          "usage: broadcast_c subscribe CHANNEL\n"
          "       broadcast_c publish CHANNEL [FRAMES]\n");
  return 2;
}

static int publish(const char* channel, uint64_t frames) {
  char err[256];
  shmlane_publisher* pub = NULL;
  if (shmlane_publisher_attach(NULL, channel, "broadcast_c", &pub, err, sizeof err) != 0) {
    fprintf(stderr, "attach: %s\n", err);
    return 1;
  }
  printf("READY %zu\n", shmlane_publisher_subscriber_count(pub));
  fflush(stdout);
  for (uint64_t n = 0; n < frames; ++n) {
    void* data = NULL;
    shmlane_result r;
    /* Zero-copy when there is room now; else a copying write that waits. */
    if (shmlane_publisher_reserve(pub, 32, &data) == SHMLANE_OK) {
      const int len = snprintf((char*)data, 32, "frame %llu", (unsigned long long)n);
      r = shmlane_publisher_commit(pub, (size_t)len);
    } else {
      char frame[32];
      const int len = snprintf(frame, sizeof frame, "frame %llu", (unsigned long long)n);
      r = shmlane_publisher_write(pub, frame, (size_t)len, 5000000000LL);
    }
    if (r != SHMLANE_OK) {
      fprintf(stderr, "frame %llu: %s\n", (unsigned long long)n, shmlane_result_string(r));
      shmlane_publisher_close(pub);
      return 1;
    }
  }
  printf("DONE %llu\n", (unsigned long long)shmlane_publisher_frames_published(pub));
  shmlane_publisher_close(pub); /* subscribers read the rest, then see closed */
  return 0;
}

static int subscribe(const char* channel) {
  char err[256];
  shmlane_subscriber* sub = NULL;
  if (shmlane_subscriber_attach(NULL, channel, "broadcast_c", -1, &sub, err, sizeof err) != 0) {
    fprintf(stderr, "attach: %s\n", err);
    return 1;
  }
  printf("ATTACHED\n");
  fflush(stdout);
  uint64_t got = 0, bad = 0, seq = 0, missed = 0;
  const void* data;
  size_t len;
  shmlane_result r;
  while ((r = shmlane_subscriber_peek(sub, &data, &len, &seq, &missed, 10000000000LL)) ==
         SHMLANE_OK) {
    char want[32];
    const int n = snprintf(want, sizeof want, "frame %llu", (unsigned long long)seq);
    const int same = len == (size_t)n && memcmp(data, want, len) == 0;
    if (shmlane_subscriber_release(sub) == SHMLANE_OK) { /* else it was overwritten: skip */
      ++got;
      bad += !same;
    }
  }
  printf("%s got=%llu missed=%llu bad=%llu\n", r == SHMLANE_CLOSED ? "CLOSED" : "FAILED",
         (unsigned long long)got, (unsigned long long)shmlane_subscriber_missed_frames(sub),
         (unsigned long long)bad);
  shmlane_subscriber_close(sub);
  return r == SHMLANE_CLOSED && bad == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage();
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "publish") == 0) {
    return publish(argv[2], argc > 3 ? strtoull(argv[3], NULL, 10) : 1000);
  }
  if (argc == 3 && strcmp(argv[1], "subscribe") == 0) return subscribe(argv[2]);
  return usage();
}
