// Fuzz target for the topology loader (runtime/topology.hpp): any text must load or fail
// with an error naming the file and what was expected, never crash or throw.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "runtime/topology.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto t = baton::runtime::parse_topology(text, "fuzz.toml");
  if (!t) {
    if (t.error().code != baton::errc::invalid_argument) std::abort();
    if (t.error().message.find("fuzz.toml") == std::string_view::npos) std::abort();
    return 0;
  }
  if (t->nodes.empty()) std::abort();
  for (const auto& n : t->nodes) {
    if (n.name.empty() || n.roles.empty()) std::abort();
  }
  return 0;
}
