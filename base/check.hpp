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

namespace baton {

/// The value under `key` in `map`, which an invariant says is there: a broken invariant
/// aborts with `why` (BATON_CHECK) instead of throwing from somewhere else, as .at() would.
template <class Map, class Key>
[[nodiscard]] auto& must_find(Map& map, const Key& key, const char* why) {
  auto it = map.find(key);
  BATON_CHECK(it != map.end(), why);
  return it->second;
}

}  // namespace baton
