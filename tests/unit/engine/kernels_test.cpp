#include "engine/kernels.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

std::vector<float> filled(std::size_t n, std::uint32_t seed) {
  std::vector<float> v(n);
  for (auto& x : v) {
    seed = seed * 1664525U + 1013904223U;
    x = static_cast<float>(seed >> 8) / 16777216.0f - 0.5f;
  }
  return v;
}

class Kernels : public ::testing::TestWithParam<kernel_path> {
 protected:
  void SetUp() override {
    if (!supported(GetParam())) GTEST_SKIP() << "kernel path not supported here";
  }
};

TEST_P(Kernels, MatmulEqualsDotWhateverTheTiling) {
  // Every output of a matmul must be the bits of dot() on its row and token, for any
  // number of tokens, any row range and any length (SIMD tails included).
  for (const std::size_t n : {1U, 7U, 16U, 20U, 33U, 172U}) {
    const std::size_t rows = 11;
    const auto w = filled(rows * n, 1);
    for (const std::size_t tokens : {1U, 3U, 4U, 9U}) {
      const auto x = filled(tokens * n, 2);
      std::vector<float> out(tokens * rows, -1.0f);
      matmul(GetParam(), w.data(), x.data(), out.data(), n, tokens, rows, 0, 5);
      matmul(GetParam(), w.data(), x.data(), out.data(), n, tokens, rows, 5, rows);
      for (std::size_t t = 0; t < tokens; ++t) {
        for (std::size_t r = 0; r < rows; ++r) {
          const float expected = dot(GetParam(), w.data() + r * n, x.data() + t * n, n);
          EXPECT_EQ(std::memcmp(&out[t * rows + r], &expected, sizeof(float)), 0)
              << "n " << n << " tokens " << tokens << " row " << r << " token " << t;
        }
      }
    }
  }
}

TEST_P(Kernels, DotTileEqualsDot) {
  const std::size_t n = 20;
  const std::size_t stride = 28;
  const std::size_t query_stride = 24;
  const auto rows = filled(9 * stride, 3);
  const auto queries = filled(6 * query_stride, 4);
  for (const std::size_t n_queries : {1U, 6U}) {
    std::vector<float> out(n_queries * 10);
    dot_tile(GetParam(), rows.data(), stride, 9, queries.data(), query_stride, n_queries, n,
             out.data(), 10);
    for (std::size_t t = 0; t < n_queries; ++t) {
      for (std::size_t i = 0; i < 9; ++i) {
        const float expected =
            dot(GetParam(), rows.data() + i * stride, queries.data() + t * query_stride, n);
        EXPECT_EQ(std::memcmp(&out[t * 10 + i], &expected, sizeof(float)), 0) << i << " " << t;
      }
    }
  }
}

TEST_P(Kernels, DotTileOfOneQueryEqualsDotForWholeBlocks) {
  // One query against 16-row blocks takes a transposed horizontal sum on some paths.
  for (const std::size_t n : {5U, 16U, 20U, 64U, 100U}) {
    const std::size_t count = 37;
    const std::size_t stride = n + 3;
    const auto rows = filled(count * stride, 9);
    const auto query = filled(n, 10);
    std::vector<float> out(count, -1.0f);
    dot_tile(GetParam(), rows.data(), stride, count, query.data(), n, 1, n, out.data(), count);
    for (std::size_t i = 0; i < count; ++i) {
      const float expected = dot(GetParam(), rows.data() + i * stride, query.data(), n);
      EXPECT_EQ(std::memcmp(&out[i], &expected, sizeof(float)), 0) << "n " << n << " row " << i;
    }
  }
}

TEST_P(Kernels, DotIsCloseToDoublePrecision) {
  const auto a = filled(333, 5);
  const auto b = filled(333, 6);
  double exact = 0;
  for (std::size_t i = 0; i < a.size(); ++i) exact += static_cast<double>(a[i]) * b[i];
  EXPECT_NEAR(dot(GetParam(), a.data(), b.data(), a.size()), exact, 1e-4);
}

TEST_P(Kernels, WeightedSumMatchesScalarBitForBit) {
  for (const std::size_t n : {8U, 20U, 64U, 100U}) {
    const auto weights = filled(13, 7);
    const auto rows = filled(13 * n, 8);
    std::vector<float> simd(n, 0.25f);
    std::vector<float> scalar(n, 0.25f);
    weighted_sum(GetParam(), weights.data(), rows.data(), n, 13, n, simd.data());
    weighted_sum(kernel_path::scalar, weights.data(), rows.data(), n, 13, n, scalar.data());
    EXPECT_EQ(std::memcmp(simd.data(), scalar.data(), n * sizeof(float)), 0) << n;
  }
}

TEST_P(Kernels, FmaBurnReturnsFiniteValue) {
  EXPECT_TRUE(std::isfinite(fma_burn(GetParam(), 1000)));
  EXPECT_GE(lanes(GetParam()), 1U);
}

INSTANTIATE_TEST_SUITE_P(Paths, Kernels,
                         ::testing::Values(kernel_path::scalar, kernel_path::avx2,
                                           kernel_path::avx512),
                         testing::kernel_test_name);

TEST(KernelPath, ParsesNamesAndPicksASupportedPath) {
  EXPECT_EQ(parse_kernel_path("scalar"), kernel_path::scalar);
  EXPECT_EQ(parse_kernel_path("avx2"), kernel_path::avx2);
  EXPECT_EQ(parse_kernel_path("avx512f"), kernel_path::avx512);
  EXPECT_FALSE(parse_kernel_path("neon"));
  EXPECT_TRUE(supported(best_kernel_path()));
  EXPECT_TRUE(supported(kernel_path::scalar));
}

}  // namespace
}  // namespace baton::engine
