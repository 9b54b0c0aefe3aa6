#include "base/address.hpp"

#include <charconv>

#include <fmt/format.h>

namespace baton {

std::string host_port::text() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

expected<host_port> parse_host_port(std::string_view text, port_zero zero) {
  const auto bad = [&](std::string_view why) {
    return fail(errc::invalid_argument,
                fmt::format("address \"{}\": {}; expected host:port, [ipv6]:port", text, why));
  };
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  std::string_view host = text.substr(0, colon);
  const std::string_view digits = text.substr(colon + 1);
  if (host.starts_with('[') || host.ends_with(']')) {
    if (host.size() < 3 || !host.starts_with('[') || !host.ends_with(']')) {
      return bad("unbalanced brackets");
    }
    host = host.substr(1, host.size() - 2);
    if (host.find_first_of("[]") != std::string_view::npos) return bad("unbalanced brackets");
  } else if (host.find(':') != std::string_view::npos) {
    return bad("an IPv6 host needs brackets");
  }
  if (host.empty()) return bad("no host");
  if (host.find_first_of(" \t\r\n/") != std::string_view::npos)
    return bad("a space or '/' in the host");
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || port > 65535) {
    return bad("the port is not a number in [0, 65535]");
  }
  if (port == 0 && zero == port_zero::refused) return bad("port 0 is only for listening");
  return host_port{std::string(host), static_cast<std::uint16_t>(port)};
}

}  // namespace baton
