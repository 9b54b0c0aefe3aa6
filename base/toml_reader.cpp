#include "base/toml_reader.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace baton {

expected<std::string> read_toml_file(const std::filesystem::path& file, std::string_view what) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return fail(errc::not_found, fmt::format("{}: cannot open the {}", file.string(), what));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

expected<toml::table> parse_toml(std::string_view text, std::string_view file) {
  try {
    return toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    return fail(errc::invalid_argument, fmt::format("{}:{}:{}: {}", file, e.source().begin.line,
                                                    e.source().begin.column, e.description()));
  }
}

std::string_view toml_type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
  }
}

void toml_diagnostics::fail(const toml::source_region& where, std::string what) {
  if (!first_) {
    first_ = error{errc::invalid_argument,
                   fmt::format("{}:{}:{}: {}", file_, where.begin.line, where.begin.column, what)};
  }
}

toml_table_reader::toml_table_reader(const toml::table& table, std::string path,
                                     toml_diagnostics& diag,
                                     std::initializer_list<std::string_view> allowed)
    : table_(table), path_(std::move(path)), diag_(diag) {
  for (const auto& [key, value] : table_) {
    if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end()) {
      diag_.fail(key.source(), fmt::format("{}: unknown key '{}'", path_, key.str()));
      return;
    }
  }
}

std::optional<std::string> toml_table_reader::string(std::string_view key, bool required) {
  const toml::node* n = get(key, required);
  if (n == nullptr) return std::nullopt;
  if (const auto* s = n->as_string()) return s->get();
  mismatch(*n, key, "a string");
  return std::nullopt;
}

std::optional<std::uint32_t> toml_table_reader::integer(std::string_view key, std::int64_t min,
                                                        std::int64_t max) {
  const toml::node* n = get(key, false);
  if (n == nullptr) return std::nullopt;
  const auto* i = n->as_integer();
  if (i == nullptr) {
    mismatch(*n, key, "an integer");
    return std::nullopt;
  }
  if (i->get() < min || i->get() > max) {
    diag_.fail(n->source(), fmt::format("{}.{}: expected an integer in [{}, {}], got {}", path_,
                                        key, min, max, i->get()));
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(i->get());
}

std::optional<double> toml_table_reader::number(std::string_view key, double min, double max) {
  const toml::node* n = get(key, false);
  if (n == nullptr) return std::nullopt;
  const auto value = n->value<double>();  // a float, or an integer as one
  if (!value || !(n->is_floating_point() || n->is_integer())) {
    mismatch(*n, key, "a number");
    return std::nullopt;
  }
  if (!(*value >= min && *value <= max)) {
    diag_.fail(n->source(), fmt::format("{}.{}: expected a number in [{}, {}], got {}", path_, key,
                                        min, max, *value));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> toml_table_reader::boolean(std::string_view key) {
  const toml::node* n = get(key, false);
  if (n == nullptr) return std::nullopt;
  if (const auto* b = n->as_boolean()) return b->get();
  mismatch(*n, key, "a boolean");
  return std::nullopt;
}

std::optional<std::size_t> toml_table_reader::choice(
    std::string_view key, bool required, std::initializer_list<std::string_view> names) {
  auto text = string(key, required);
  if (!text) return std::nullopt;
  const auto it = std::find(names.begin(), names.end(), *text);
  if (it != names.end()) return static_cast<std::size_t>(it - names.begin());
  std::string listed;
  for (const auto name : names) listed += fmt::format("{}\"{}\"", listed.empty() ? "" : ", ", name);
  diag_.fail(table_.get(key)->source(),
             fmt::format("{}.{}: expected one of {}, got \"{}\"", path_, key, listed, *text));
  return std::nullopt;
}

const toml::table* toml_table_reader::table(std::string_view key) {
  const toml::node* n = get(key, false);
  if (n == nullptr) return nullptr;
  if (const auto* t = n->as_table()) return t;
  mismatch(*n, key, "a table");
  return nullptr;
}

const toml::node* toml_table_reader::get(std::string_view key, bool required) {
  const toml::node* n = table_.get(key);
  if (n == nullptr && required) {
    diag_.fail(table_.source(), fmt::format("{}: missing required key '{}'", path_, key));
  }
  return n;
}

void toml_table_reader::mismatch(const toml::node& n, std::string_view key,
                                 std::string_view expected) {
  diag_.fail(n.source(), fmt::format("{}.{}: expected {}, got {}", path_, key, expected,
                                     toml_type_name(n.type())));
}

}  // namespace baton
