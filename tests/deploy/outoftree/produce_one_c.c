/* The C ABI's twin of produce_one.cc: attach as a producer, write one frame.
 * Usage: produce_one_c RUNTIME_DIR CHANNEL. */
#include <stdio.h>
#include <string.h>

#include "clients/shmlane.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s RUNTIME_DIR CHANNEL\n", argv[0]);
    return 2;
  }
  char error[256];
  shmlane_producer* producer = NULL;
  int rc = shmlane_producer_attach(argv[1], argv[2], "outoftree-c", &producer, error, sizeof error);
  if (rc != 0) {
    fprintf(stderr, "produce_one_c: attach: code %d: %s\n", rc, error);
    return 1;
  }
  const char frame[] = "hello from C outside the tree";
  shmlane_result result = shmlane_producer_write(producer, frame, strlen(frame), 5000000000LL);
  if (result != SHMLANE_OK) {
    fprintf(stderr, "produce_one_c: write: %s\n", shmlane_result_string(result));
    shmlane_producer_close(producer);
    return 1;
  }
  printf("produce_one_c: wrote %zu bytes to %s\n", strlen(frame), argv[2]);
  shmlane_producer_close(producer);
  return 0;
}
