#pragma once

// Reading TOML files with errors that point into them: every failure names
// file:line:column, the key's dotted path and what was expected. Shared by the topology
// (runtime/topology.cpp) and the simulator's fleet and workload files (sim/).

#include <array>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "base/error.hpp"

namespace baton {

/// The bytes of `file`; errc::not_found "FILE: cannot open the WHAT" when it cannot be read.
[[nodiscard]] expected<std::string> read_toml_file(const std::filesystem::path& file,
                                                   std::string_view what);

/// Parses `text` as TOML; errc::invalid_argument "file:line:column: what" when it is not.
[[nodiscard]] expected<toml::table> parse_toml(std::string_view text, std::string_view file);

/// "a string", "an integer", ...: a node type for messages.
[[nodiscard]] std::string_view toml_type_name(toml::node_type t);

/// Records the first error, positioned at a TOML source region.
class toml_diagnostics {
 public:
  explicit toml_diagnostics(std::string file) : file_(std::move(file)) {}

  void fail(const toml::source_region& where, std::string what);
  [[nodiscard]] bool failed() const { return first_.has_value(); }
  [[nodiscard]] const error& first() const { return *first_; }
  [[nodiscard]] const std::string& file() const { return file_; }

 private:
  std::string file_;
  std::optional<error> first_;
};

/// Reads the keys of one table. A key not in `allowed` is reported first, since a typo
/// explains a "missing key" that follows from it. Every getter returns nullopt both for an
/// absent optional key and after reporting a wrong one.
class toml_table_reader {
 public:
  toml_table_reader(const toml::table& table, std::string path, toml_diagnostics& diag,
                    std::initializer_list<std::string_view> allowed);

  std::optional<std::string> string(std::string_view key, bool required);
  std::optional<std::uint32_t> integer(std::string_view key, std::int64_t min, std::int64_t max);
  std::optional<double> number(std::string_view key, double min, double max);
  std::optional<bool> boolean(std::string_view key);
  /// One of `names` (the index into it), or a failure listing them.
  std::optional<std::size_t> choice(std::string_view key, bool required,
                                    std::initializer_list<std::string_view> names);

  /// An array of strings; each element is passed to `each` with its source position.
  template <class F>
  void strings(std::string_view key, bool required, F each) {
    const toml::node* n = get(key, required);
    if (n == nullptr) return;
    const auto* arr = n->as_array();
    if (arr == nullptr) return mismatch(*n, key, "an array of strings");
    for (const auto& element : *arr) {
      if (const auto* s = element.as_string()) {
        each(s->get(), element.source());
      } else {
        mismatch(element, key, "an array of strings");
      }
    }
  }

  const toml::table* table(std::string_view key);

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] const toml::table& source() const { return table_; }

 private:
  const toml::node* get(std::string_view key, bool required);
  void mismatch(const toml::node& n, std::string_view key, std::string_view expected);

  const toml::table& table_;
  std::string path_;
  toml_diagnostics& diag_;
};

}  // namespace baton
