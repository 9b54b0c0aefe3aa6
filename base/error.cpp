#include "base/error.hpp"

#include <fmt/format.h>

namespace baton {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::overloaded: return "overloaded";
    case errc::timed_out: return "timed_out";
    case errc::disconnected: return "disconnected";
    case errc::invalid_argument: return "invalid_argument";
    case errc::not_found: return "not_found";
    case errc::failed: return "failed";
    case errc::unavailable: return "unavailable";
  }
  return "unknown";
}

std::string error::to_string() const {
  return fmt::format("{}: {}", baton::to_string(code), message);
}

}  // namespace baton
