#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "base/error.hpp"

namespace baton::engine {

/// A whole file mapped read-only into memory (RAII over mmap). Move-only; the bytes stay
/// at the same address for the object's lifetime, so pointers into them survive moves.
class mapped_file {
 public:
  mapped_file() = default;
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& other) noexcept;
  mapped_file& operator=(mapped_file&& other) noexcept;
  ~mapped_file();

  /// Maps `path`; fails with errc::not_found if it cannot be opened and
  /// errc::invalid_argument if it is empty or not a regular file.
  [[nodiscard]] static expected<mapped_file> open(const std::string& path);

  /// The file's bytes; empty for a default-constructed object.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace baton::engine
