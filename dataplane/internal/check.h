// SHMLANE_CHECK / SHMLANE_DCHECK: invariants of our own memory only. Never use
// them on a value read from shared memory (validate those, see lane.cc).
#pragma once

#include <cstdio>
#include <cstdlib>

#define SHMLANE_CHECK(cond)                                                                 \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: SHMLANE_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

#ifdef NDEBUG
#define SHMLANE_DCHECK(cond) \
  do {                       \
  } while (0)
#else
#define SHMLANE_DCHECK(cond) SHMLANE_CHECK(cond)
#endif
