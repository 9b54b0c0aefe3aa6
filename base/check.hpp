#pragma once

#include <cstdio>
#include <cstdlib>

/// Always-on assertion for programming errors (broken invariants), never for input from
/// a file or the network: those return baton::error. Aborts with file, line and `why`.
#define BATON_CHECK(cond, why)                                                                     \
  do {                                                                                             \
    if (!(cond)) [[unlikely]] {                                                                    \
      std::fprintf(stderr, "%s:%d: BATON_CHECK(%s) failed: %s\n", __FILE__, __LINE__, #cond, why); \
      std::abort();                                                                                \
    }                                                                                              \
  } while (false)
