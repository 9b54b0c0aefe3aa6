#pragma once

// Baton's one parser of "host:port" addresses, used wherever an address is read: the
// topology, the fabric's tcp endpoints, the admin, native and HTTP ports, the clients.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.hpp"

namespace baton {

/// A host (a name, an IPv4 address, or an IPv6 address written in brackets:
/// "[::1]:7000") and a decimal port.
struct host_port {
  std::string host;  ///< without brackets
  std::uint16_t port = 0;

  /// "host:port", with brackets around an IPv6 host.
  [[nodiscard]] std::string text() const;
};

/// Whether port 0 (a listening address: "pick a free port, and report it") is allowed.
enum class port_zero : std::uint8_t { refused, allowed };

/// Parses "host:port". Fails with invalid_argument, naming `text` and what was expected:
/// a missing or empty host or port, a port that is not a decimal in [1, 65535] (or
/// [0, 65535] with port_zero::allowed), an IPv6 host without brackets, unbalanced brackets.
[[nodiscard]] expected<host_port> parse_host_port(std::string_view text,
                                                  port_zero zero = port_zero::refused);

}  // namespace baton
