/* The processes of broadcast_c_test: a BROADCAST publisher and subscribers
 * written in C (C11) against the C ABI only (clients/shmlane.h). Reports on
 * stdout, one line per step the test waits for.
 *
 *   broadcast_c_peer publish DIR CHANNEL FRAMES   prints READY <subscribers>,
 *       ERRORS <second publisher> <no channel> <null>, DONE <published>
 *   broadcast_c_peer read DIR CHANNEL DELAY_MS    copying reads (after DELAY_MS)
 *   broadcast_c_peer peek DIR CHANNEL DELAY_MS    zero-copy peek/release
 *       both print ATTACHED, then CLOSED got=G missed=M counted=C bad=B
 *
 * Frame n: 8 bytes n (host order), then 8 + n % 56 bytes of (n + i) & 0xff.
 * Odd frames go through reserve/commit, even ones through write. A reader
 * checks every frame's content, that seq == previous + 1 + missed, and that
 * the handle's missed count equals the sum of the per-frame ones.
 * Exit status: 0 done; 1 a failed step; 2 usage. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/shmlane.h"

static size_t fill(unsigned char* p, uint64_t n) {
  const size_t len = 8 + 8 + (size_t)(n % 56);
  memcpy(p, &n, 8);
  for (size_t i = 8; i < len; ++i) p[i] = (unsigned char)((n + i) & 0xff);
  return len;
}

static int check(const unsigned char* p, size_t len, uint64_t seq) {
  unsigned char want[72];
  return len == fill(want, seq) && memcmp(p, want, len) == 0;
}

static int publish(const char* dir, const char* channel, uint64_t frames) {
  char err[256];
  shmlane_publisher* pub = NULL;
  shmlane_publisher* second = NULL;
  if (shmlane_publisher_attach(dir, channel, "c-publisher", &pub, err, sizeof err) != 0) {
    printf("ATTACH_FAILED %s\n", err);
    return 1;
  }
  printf("READY %zu\n", shmlane_publisher_subscriber_count(pub));
  /* The error conventions: google.rpc.Code values and a message. */
  const int twice = shmlane_publisher_attach(dir, channel, "c-second", &second, err, sizeof err);
  const int missing = shmlane_publisher_attach(dir, "no-such-channel", NULL, &second, err, 4);
  const int null = shmlane_publisher_attach(dir, NULL, NULL, &second, err, sizeof err);
  printf("ERRORS %d %d %d %d %d\n", twice, missing, null, second == NULL && strlen(err) > 0,
         shmlane_publisher_write(NULL, "x", 1, 0) == SHMLANE_INVALID);
  void* big = NULL;
  if (shmlane_publisher_reserve(pub, shmlane_publisher_max_frame_bytes(pub) + 1u, &big) !=
      SHMLANE_TOO_LARGE) {
    printf("TOO_LARGE_NOT_REPORTED\n");
    return 1;
  }
  fflush(stdout);
  for (uint64_t n = 0; n < frames; ++n) {
    unsigned char frame[72];
    shmlane_result r;
    if (n % 2 == 1) {
      void* data = NULL;
      r = shmlane_publisher_reserve(pub, sizeof frame, &data);
      if (r == SHMLANE_FULL) {
        /* Block policy, no room now: wait in a copying write instead. */
        r = shmlane_publisher_write(pub, frame, fill(frame, n), 10000000000LL);
      } else if (r == SHMLANE_OK) {
        r = shmlane_publisher_commit(pub, fill((unsigned char*)data, n));
      }
    } else {
      r = shmlane_publisher_write(pub, frame, fill(frame, n), 10000000000LL);
    }
    if (r != SHMLANE_OK) {
      printf("WRITE_FAILED %llu %s\n", (unsigned long long)n, shmlane_result_string(r));
      return 1;
    }
  }
  printf("DONE %llu\n", (unsigned long long)shmlane_publisher_frames_published(pub));
  shmlane_publisher_close(pub);
  return 0;
}

static int subscribe(const char* dir, const char* channel, int peek, long delay_ms) {
  char err[256];
  shmlane_subscriber* sub = NULL;
  if (shmlane_subscriber_attach(dir, channel, "c-subscriber", 0, &sub, err, sizeof err) != 0) {
    printf("ATTACH_FAILED %s\n", err);
    return 1;
  }
  printf("ATTACHED\n");
  fflush(stdout);
  if (delay_ms > 0) {
    /* A deliberately slow subscriber (the test's drop-oldest case). */
    struct timespec t = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  uint64_t got = 0, missed = 0, bad = 0, last = 0;
  int have_last = 0, small_checked = 0;
  shmlane_result r;
  for (;;) {
    uint64_t seq = 0, m = 0;
    size_t len = 0;
    int ok;
    if (peek) {
      const void* data = NULL;
      r = shmlane_subscriber_peek(sub, &data, &len, &seq, &m, 20000000000LL);
      if (r != SHMLANE_OK) break;
      ok = check((const unsigned char*)data, len, seq);
      if (shmlane_subscriber_release(sub) == SHMLANE_OVERWRITTEN) continue; /* counted missed */
    } else {
      unsigned char buf[72];
      if (!small_checked) {
        /* Too small: the frame is kept and its size reported. */
        small_checked = 1;
        r = shmlane_subscriber_read(sub, buf, 2, &len, NULL, NULL, 20000000000LL);
        if (r != SHMLANE_TOO_SMALL || len < 16) ++bad;
      }
      r = shmlane_subscriber_read(sub, buf, sizeof buf, &len, &seq, &m, 20000000000LL);
      if (r != SHMLANE_OK) break;
      ok = check(buf, len, seq);
    }
    if (!ok || (have_last ? seq != last + 1 + m : seq != m)) ++bad;
    missed += m;
    last = seq;
    have_last = 1;
    ++got;
  }
  printf("%s got=%llu missed=%llu counted=%llu bad=%llu read=%llu\n",
         r == SHMLANE_CLOSED ? "CLOSED" : shmlane_result_string(r), (unsigned long long)got,
         (unsigned long long)missed, (unsigned long long)shmlane_subscriber_missed_frames(sub),
         (unsigned long long)bad, (unsigned long long)shmlane_subscriber_frames_read(sub));
  shmlane_subscriber_close(sub);
  return r == SHMLANE_CLOSED ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc == 5 && strcmp(argv[1], "publish") == 0) {
    return publish(argv[2], argv[3], strtoull(argv[4], NULL, 10));
  }
  if (argc == 5 && (strcmp(argv[1], "read") == 0 || strcmp(argv[1], "peek") == 0)) {
    return subscribe(argv[2], argv[3], strcmp(argv[1], "peek") == 0, strtol(argv[4], NULL, 10));
  }
  fprintf(stderr, "usage: see the comment at the top of broadcast_c_peer.c\n");
  return 2;
}
