#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace baton::engine {

/// The SIMD code path of the dot-product kernels. Results are bit-identical among nodes
/// that use the same path (and engine version); different paths round differently.
enum class kernel_path { scalar, avx2, avx512 };

[[nodiscard]] std::string_view to_string(kernel_path path);
[[nodiscard]] std::optional<kernel_path> parse_kernel_path(std::string_view name);
/// Whether this CPU can run `path` (checked with __builtin_cpu_supports).
[[nodiscard]] bool supported(kernel_path path);
/// The fastest path this CPU supports.
[[nodiscard]] kernel_path best_kernel_path();

/// Every dot product of length n has one fixed reduction order per path, whatever the
/// tile, batch or thread it runs in: avx512 keeps 16 lanes (masked tail) and avx2 8 lanes
/// (scalar tail) of fused multiply-adds, then a fixed horizontal sum; scalar adds
/// left to right without fusion, as llama2.c does.
[[nodiscard]] float dot(kernel_path path, const float* a, const float* b, std::size_t n);

/// out[t * out_stride + r] = dot(rows + r * row_stride, queries + t * query_stride, n) for
/// r in [0, count) and t in [0, n_queries): attention scores of a few queries against keys
/// stored row_stride floats apart, with the same per-element order as dot().
void dot_tile(kernel_path path, const float* rows, std::size_t row_stride, std::size_t count,
              const float* queries, std::size_t query_stride, std::size_t n_queries, std::size_t n,
              float* out, std::size_t out_stride);

/// out[j] += weights[i] * rows[i * row_stride + j] for i = 0, 1, ... count-1 in turn and j
/// in [0, n), each a separate multiply and add (no FMA), so every path gives llama2.c's
/// attention-value result bit for bit.
void weighted_sum(kernel_path path, const float* weights, const float* rows, std::size_t row_stride,
                  std::size_t count, std::size_t n, float* out);

/// out[t * out_stride + r] = dot(w + r * n, x + t * n, n) for tokens t in [0, tokens) and
/// rows r in [row_begin, row_end). Tiled so each block of weight rows is read once per
/// block of tokens that fits in cache; the tiling never changes any result.
void matmul(kernel_path path, const float* w, const float* x, float* out, std::size_t n,
            std::size_t tokens, std::size_t out_stride, std::size_t row_begin, std::size_t row_end);

/// Floats per vector on `path` (1 for scalar).
[[nodiscard]] std::size_t lanes(kernel_path path);

/// For measuring FMA peak: `iterations` rounds of 12 independent vector FMA chains,
/// i.e. iterations * 12 * lanes(path) * 2 flops. The result only defeats dead-code removal.
[[nodiscard]] float fma_burn(kernel_path path, std::uint64_t iterations);

}  // namespace baton::engine
