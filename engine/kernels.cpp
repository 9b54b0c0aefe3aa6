#include "engine/kernels.hpp"

// GCC 12's AVX-512 headers build "undefined" vectors from themselves, which
// -Wuninitialized reports wherever they are inlined; the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <array>

#include "base/check.hpp"

namespace baton::engine {
namespace {

constexpr std::size_t tile_rows = 4;
constexpr std::size_t tile_tokens = 4;
/// Token blocks are sized so their activations (tokens x n floats) stay in L2.
constexpr std::size_t token_block_bytes = 256 * 1024;

/// w rows are w_stride floats apart, x rows x_stride floats apart.
using tile_fn = void (*)(const float* w, std::size_t w_stride, const float* x, std::size_t x_stride,
                         float* out, std::size_t n, std::size_t out_stride);

// Each tile computes R x T independent dot products; every one of them follows exactly
// the reduction order `dot` documents, so tile shapes never change a result.

template <int R, int T>
void tile_scalar(const float* w, std::size_t w_stride, const float* x, std::size_t x_stride,
                 float* out, std::size_t n, std::size_t out_stride) {
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      const float* a = w + static_cast<std::size_t>(r) * w_stride;
      const float* b = x + static_cast<std::size_t>(t) * x_stride;
      float sum = 0.0f;
      for (std::size_t k = 0; k < n; ++k) sum += a[k] * b[k];
      out[static_cast<std::size_t>(t) * out_stride + static_cast<std::size_t>(r)] = sum;
    }
  }
}

__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  __m128 sum1 = _mm_add_ss(sum2, _mm_movehdup_ps(sum2));
  return _mm_cvtss_f32(sum1);
}

template <int R, int T>
__attribute__((target("avx2,fma"))) void tile_avx2(const float* w, std::size_t w_stride,
                                                   const float* x, std::size_t x_stride, float* out,
                                                   std::size_t n, std::size_t out_stride) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  std::size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t)
      xv[t] = _mm256_loadu_ps(x + static_cast<std::size_t>(t) * x_stride + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(w + static_cast<std::size_t>(r) * w_stride + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      const float* a = w + static_cast<std::size_t>(r) * w_stride;
      const float* b = x + static_cast<std::size_t>(t) * x_stride;
      float sum = hsum256(acc[r][t]);
      for (std::size_t j = k; j < n; ++j) sum += a[j] * b[j];
      out[static_cast<std::size_t>(t) * out_stride + static_cast<std::size_t>(r)] = sum;
    }
  }
}

// The 16 lanes are folded in a fixed order: upper half onto lower, then as hsum256.
__attribute__((target("avx512f,avx2,fma"))) inline float hsum512(__m512 v) {
  const __m512 folded = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  return hsum256(_mm512_castps512_ps256(folded));
}

/// hsum512 of each of the 16 vectors, as one vector (lane r = hsum512(v[r])). The sums
/// run as a transposed tree that performs, lane for lane, exactly hsum512's additions
/// (upper 256 bits onto lower, upper 128 onto lower, then pairs), so the bits agree.
__attribute__((target("avx512f,avx2,fma"))) inline __m512 hsum512x16(const __m512* v) {
  __m512 halves[8];  // vectors 2j, 2j+1: their 8 folded lanes each
  for (int j = 0; j < 8; ++j) {
    halves[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x44),
                              _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xEE));
  }
  __m512 quarters[4];  // vectors 4m .. 4m+3: 4 lanes each
  for (int m = 0; m < 4; ++m) {
    quarters[m] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * m], halves[2 * m + 1], 0x88),
                                _mm512_shuffle_f32x4(halves[2 * m], halves[2 * m + 1], 0xDD));
  }
  __m512 pairs[2];  // per 128-bit lane q: vectors 8p+q and 8p+4+q, 2 lanes each
  for (int p = 0; p < 2; ++p) {
    pairs[p] = _mm512_add_ps(
        _mm512_shuffle_ps(quarters[2 * p], quarters[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
        _mm512_shuffle_ps(quarters[2 * p], quarters[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // Lane 4q + m now ends up holding the sum of vector 4m + q.
  const __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm512_shuffle_ps(pairs[0], pairs[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, sums);
}

/// out[t * out_stride + r] = hsum512(acc[r][t]) for a whole 4 x 4 tile, with one
/// transposed sum instead of 16 separate ones (same bits, see hsum512x16).
__attribute__((target("avx512f,avx2,fma"))) inline void store_sums_4x4(const __m512 (*acc)[4],
                                                                       float* out,
                                                                       std::size_t out_stride) {
  __m512 by_token[16];
  for (int t = 0; t < 4; ++t) {
    for (int r = 0; r < 4; ++r) by_token[t * 4 + r] = acc[r][t];
  }
  const __m512 sums = hsum512x16(by_token);
  _mm_storeu_ps(out, _mm512_extractf32x4_ps(sums, 0));
  _mm_storeu_ps(out + out_stride, _mm512_extractf32x4_ps(sums, 1));
  _mm_storeu_ps(out + 2 * out_stride, _mm512_extractf32x4_ps(sums, 2));
  _mm_storeu_ps(out + 3 * out_stride, _mm512_extractf32x4_ps(sums, 3));
}

template <int R, int T>
__attribute__((target("avx512f,avx2,fma"))) void tile_avx512(const float* w, std::size_t w_stride,
                                                             const float* x, std::size_t x_stride,
                                                             float* out, std::size_t n,
                                                             std::size_t out_stride) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  std::size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t)
      xv[t] = _mm512_loadu_ps(x + static_cast<std::size_t>(t) * x_stride + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_loadu_ps(w + static_cast<std::size_t>(r) * w_stride + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (k < n) {
    const auto mask = static_cast<__mmask16>((1U << (n - k)) - 1U);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) {
      xv[t] = _mm512_maskz_loadu_ps(mask, x + static_cast<std::size_t>(t) * x_stride + k);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_maskz_loadu_ps(mask, w + static_cast<std::size_t>(r) * w_stride + k);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if constexpr (R == 4 && T == 4) {
    store_sums_4x4(acc, out, out_stride);
  } else {
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        out[static_cast<std::size_t>(t) * out_stride + static_cast<std::size_t>(r)] =
            hsum512(acc[r][t]);
      }
    }
  }
}

/// out[r] = dot(rows + r * row_stride, query, n) for r in [0, 16) on the avx512 path: one
/// query against a block of keys, with the 16 horizontal sums done together. Row by row,
/// so the keys are read in address order (the prefetcher keeps up).
__attribute__((target("avx512f,avx2,fma"))) void dot16_avx512(const float* rows,
                                                              std::size_t row_stride,
                                                              const float* query, std::size_t n,
                                                              float* out) {
  const std::size_t full = n / 16 * 16;
  const auto mask = static_cast<__mmask16>((1U << (n - full)) - 1U);
  __m512 acc[16];
  for (std::size_t r = 0; r < 16; ++r) {
    const float* row = rows + r * row_stride;
    __m512 sum = _mm512_setzero_ps();
    for (std::size_t k = 0; k < full; k += 16) {
      sum = _mm512_fmadd_ps(_mm512_loadu_ps(row + k), _mm512_loadu_ps(query + k), sum);
    }
    if (full < n) {
      sum = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, row + full),
                            _mm512_maskz_loadu_ps(mask, query + full), sum);
    }
    acc[r] = sum;
  }
  _mm512_storeu_ps(out, hsum512x16(acc));
}

using tile_table = std::array<std::array<tile_fn, tile_tokens>, tile_rows>;

template <template <int, int> class Tile>
constexpr tile_table make_table() {
  return {{{Tile<1, 1>::fn, Tile<1, 2>::fn, Tile<1, 3>::fn, Tile<1, 4>::fn},
           {Tile<2, 1>::fn, Tile<2, 2>::fn, Tile<2, 3>::fn, Tile<2, 4>::fn},
           {Tile<3, 1>::fn, Tile<3, 2>::fn, Tile<3, 3>::fn, Tile<3, 4>::fn},
           {Tile<4, 1>::fn, Tile<4, 2>::fn, Tile<4, 3>::fn, Tile<4, 4>::fn}}};
}

template <int R, int T>
struct scalar_tile {
  static constexpr tile_fn fn = &tile_scalar<R, T>;
};
template <int R, int T>
struct avx2_tile {
  static constexpr tile_fn fn = &tile_avx2<R, T>;
};
template <int R, int T>
struct avx512_tile {
  static constexpr tile_fn fn = &tile_avx512<R, T>;
};

constexpr tile_table scalar_table = make_table<scalar_tile>();
constexpr tile_table avx2_table = make_table<avx2_tile>();
constexpr tile_table avx512_table = make_table<avx512_tile>();

const tile_table& table_for(kernel_path path) {
  switch (path) {
    case kernel_path::avx512: return avx512_table;
    case kernel_path::avx2: return avx2_table;
    case kernel_path::scalar: break;
  }
  return scalar_table;
}

void weighted_sum_scalar(const float* weights, const float* rows, std::size_t row_stride,
                         std::size_t count, std::size_t n, float* out) {
  for (std::size_t i = 0; i < count; ++i) {
    const float a = weights[i];
    const float* v = rows + i * row_stride;
    for (std::size_t j = 0; j < n; ++j) out[j] += a * v[j];
  }
}

/// Keeps up to 64 output columns in four registers while streaming the rows.
__attribute__((target("avx512f,avx2,fma"))) void weighted_sum_avx512(const float* weights,
                                                                     const float* rows,
                                                                     std::size_t row_stride,
                                                                     std::size_t count,
                                                                     std::size_t n, float* out) {
  for (std::size_t j0 = 0; j0 < n; j0 += 64) {
    __mmask16 masks[4];
    for (std::size_t c = 0; c < 4; ++c) {
      const std::size_t begin = j0 + c * 16;
      const std::size_t width = begin >= n ? 0 : std::min<std::size_t>(16, n - begin);
      masks[c] = static_cast<__mmask16>((1U << width) - 1U);
    }
    __m512 acc[4];
    for (std::size_t c = 0; c < 4; ++c) acc[c] = _mm512_maskz_loadu_ps(masks[c], out + j0 + c * 16);
    for (std::size_t i = 0; i < count; ++i) {
      const __m512 a = _mm512_set1_ps(weights[i]);
      const float* v = rows + i * row_stride + j0;
      for (std::size_t c = 0; c < 4; ++c) {
        const __m512 x = _mm512_maskz_loadu_ps(masks[c], v + c * 16);
        acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(a, x));
      }
    }
    for (std::size_t c = 0; c < 4; ++c) _mm512_mask_storeu_ps(out + j0 + c * 16, masks[c], acc[c]);
  }
}

/// Hints the cache lines of [p, p + bytes) into L2 (not L1, which the tile being computed
/// needs); never faults.
void prefetch(const char* p, std::size_t bytes) {
  for (std::size_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 2);
}

constexpr int burn_chains = 12;

float burn_scalar(std::uint64_t iterations) {
  float acc[burn_chains];
  for (int i = 0; i < burn_chains; ++i) acc[i] = static_cast<float>(i);
  const float a = 0.999f;
  const float b = 0.001f;
  for (std::uint64_t it = 0; it < iterations; ++it) {
    for (auto& v : acc) v = v * a + b;
  }
  float sum = 0.0f;
  for (const float v : acc) sum += v;
  return sum;
}

__attribute__((target("avx2,fma"))) float burn_avx2(std::uint64_t iterations) {
  __m256 acc[burn_chains];
  for (int i = 0; i < burn_chains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999f);
  const __m256 b = _mm256_set1_ps(0.001f);
  for (std::uint64_t it = 0; it < iterations; ++it) {
    for (auto& v : acc) v = _mm256_fmadd_ps(v, a, b);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < burn_chains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  return hsum256(sum);
}

__attribute__((target("avx512f,avx2,fma"))) float burn_avx512(std::uint64_t iterations) {
  __m512 acc[burn_chains];
  for (int i = 0; i < burn_chains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999f);
  const __m512 b = _mm512_set1_ps(0.001f);
  for (std::uint64_t it = 0; it < iterations; ++it) {
    for (auto& v : acc) v = _mm512_fmadd_ps(v, a, b);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < burn_chains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return hsum512(sum);
}

}  // namespace

std::size_t lanes(kernel_path path) {
  switch (path) {
    case kernel_path::avx512: return 16;
    case kernel_path::avx2: return 8;
    case kernel_path::scalar: break;
  }
  return 1;
}

float fma_burn(kernel_path path, std::uint64_t iterations) {
  switch (path) {
    case kernel_path::avx512: return burn_avx512(iterations);
    case kernel_path::avx2: return burn_avx2(iterations);
    case kernel_path::scalar: break;
  }
  return burn_scalar(iterations);
}

std::string_view to_string(kernel_path path) {
  switch (path) {
    case kernel_path::scalar: return "scalar";
    case kernel_path::avx2: return "avx2-fma";
    case kernel_path::avx512: return "avx512f";
  }
  return "unknown";
}

std::optional<kernel_path> parse_kernel_path(std::string_view name) {
  for (auto path : {kernel_path::scalar, kernel_path::avx2, kernel_path::avx512}) {
    if (name == to_string(path)) return path;
  }
  if (name == "avx2") return kernel_path::avx2;
  if (name == "avx512") return kernel_path::avx512;
  return std::nullopt;
}

bool supported(kernel_path path) {
  switch (path) {
    case kernel_path::scalar: return true;
    case kernel_path::avx2:
      return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0;
    case kernel_path::avx512: return __builtin_cpu_supports("avx512f") != 0;
  }
  return false;
}

kernel_path best_kernel_path() {
  if (supported(kernel_path::avx512)) return kernel_path::avx512;
  if (supported(kernel_path::avx2)) return kernel_path::avx2;
  return kernel_path::scalar;
}

float dot(kernel_path path, const float* a, const float* b, std::size_t n) {
  float out = 0.0f;
  table_for(path)[0][0](a, n, b, n, &out, n, 1);
  return out;
}

void weighted_sum(kernel_path path, const float* weights, const float* rows, std::size_t row_stride,
                  std::size_t count, std::size_t n, float* out) {
  // Separate multiply and add make every path agree, so AVX2 reuses the scalar loop.
  if (path == kernel_path::avx512) {
    weighted_sum_avx512(weights, rows, row_stride, count, n, out);
  } else {
    weighted_sum_scalar(weights, rows, row_stride, count, n, out);
  }
}

void dot_tile(kernel_path path, const float* rows, std::size_t row_stride, std::size_t count,
              const float* queries, std::size_t query_stride, std::size_t n_queries, std::size_t n,
              float* out, std::size_t out_stride) {
  const tile_table& table = table_for(path);
  std::size_t first = 0;
  if (path == kernel_path::avx512 && n_queries == 1) {
    for (; first + 16 <= count; first += 16) {
      dot16_avx512(rows + first * row_stride, row_stride, queries, n, out + first);
    }
  }
  for (std::size_t r = first; r < count; r += tile_rows) {
    const std::size_t m = std::min(tile_rows, count - r);
    for (std::size_t t = 0; t < n_queries; t += tile_tokens) {
      const std::size_t q = std::min(tile_tokens, n_queries - t);
      table[m - 1][q - 1](rows + r * row_stride, row_stride, queries + t * query_stride,
                          query_stride, out + t * out_stride + r, n, out_stride);
    }
  }
}

void matmul(kernel_path path, const float* w, const float* x, float* out, std::size_t n,
            std::size_t tokens, std::size_t out_stride, std::size_t row_begin,
            std::size_t row_end) {
  BATON_CHECK(row_begin <= row_end && row_end <= out_stride, "matmul rows out of range");
  const tile_table& table = table_for(path);
  const std::size_t token_block =
      std::max(tile_tokens, token_block_bytes / (n * sizeof(float)) / tile_tokens * tile_tokens);
  for (std::size_t t0 = 0; t0 < tokens; t0 += token_block) {
    const std::size_t t_end = std::min(tokens, t0 + token_block);
    const std::size_t token_tiles = (t_end - t0 + tile_tokens - 1) / tile_tokens;
    for (std::size_t r = row_begin; r < row_end; r += tile_rows) {
      const std::size_t rows = std::min(tile_rows, row_end - r);
      // The next rows' weights (contiguous after these), fetched a share per token tile.
      const std::size_t next_rows = std::min(tile_rows, row_end - r - rows);
      const auto* next = reinterpret_cast<const char*>(w + (r + rows) * n);
      const std::size_t next_bytes = next_rows * n * sizeof(float);
      const std::size_t share = (next_bytes + token_tiles * 64 - 1) / (token_tiles * 64) * 64;
      for (std::size_t t = t0; t < t_end; t += tile_tokens) {
        const std::size_t cols = std::min(tile_tokens, t_end - t);
        const std::size_t from = (t - t0) / tile_tokens * share;
        if (from < next_bytes) prefetch(next + from, std::min(share, next_bytes - from));
        table[rows - 1][cols - 1](w + r * n, n, x + t * n, n, out + t * out_stride + r, n,
                                  out_stride);
      }
    }
  }
}

}  // namespace baton::engine
