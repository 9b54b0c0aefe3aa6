#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels.hpp"
#include "engine/model.hpp"

namespace baton::engine::testing {

/// The shared test model and tokenizer (never copied into the repository).
inline std::string shared_model(const char* name) {
  return std::string(BATON_SHARED_MODELS_DIR) + "/" + name;
}

/// A small GQA shape whose sizes are not multiples of the SIMD widths (head size 20,
/// hidden 172), so every kernel's tail runs.
inline model_config small_config() {
  return model_config{120, 172, 2, 6, 2, 300, 64, true};
}

/// A file name in the test temp dir, unique to this process: ctest runs tests in
/// parallel processes, and one rewriting a file another has mapped would crash it.
/// The file is removed when the test process exits.
inline std::string temp_path(const std::string& name) {
  struct removed_at_exit {
    std::vector<std::string> paths;
    ~removed_at_exit() {
      for (const auto& p : paths) std::remove(p.c_str());
    }
  };
  static removed_at_exit files;
  files.paths.push_back(::testing::TempDir() + std::to_string(::getpid()) + "-" + name);
  return files.paths.back();
}

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Writes `bytes` to temp_path(name) and returns that path.
inline std::string write_temp(const std::string& name, const std::vector<char>& bytes) {
  const std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

/// Writes a synthetic checkpoint into the test's temp dir and loads it.
inline model synthetic_model(const model_config& config, std::uint64_t seed,
                             const std::string& name) {
  const std::string path = temp_path(name);
  auto written = write_synthetic_model(path, config, seed);
  EXPECT_TRUE(written.has_value()) << (written ? "" : written.error().to_string());
  auto m = model::load(path);
  EXPECT_TRUE(m.has_value()) << (m ? "" : m.error().to_string());
  return std::move(*m);
}

/// "Scalar", "Avx2", "Avx512": names for tests parameterized by kernel path.
inline std::string kernel_test_name(const ::testing::TestParamInfo<kernel_path>& param) {
  switch (param.param) {
    case kernel_path::scalar: return "Scalar";
    case kernel_path::avx2: return "Avx2";
    case kernel_path::avx512: return "Avx512";
  }
  return "Unknown";
}

}  // namespace baton::engine::testing
