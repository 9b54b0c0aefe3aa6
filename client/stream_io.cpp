#include "client/stream_io.hpp"

#include <charconv>
#include <string_view>

#include <fmt/format.h>

namespace baton::client::detail {

expected<std::vector<tcp::endpoint>> resolve(asio::io_context& io, const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fail(errc::invalid_argument, fmt::format("address '{}': expected host:port", address));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  const auto digits = std::string_view(address).substr(colon + 1);
  auto [end, parse_error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (digits.empty() || parse_error != std::errc{} || end != digits.data() + digits.size() ||
      port > 65535) {
    return fail(errc::invalid_argument, fmt::format("address '{}': bad port", address));
  }
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return fail(errc::not_found,
                fmt::format("address '{}': {}", address, ec ? ec.message() : "no such host"));
  }
  std::vector<tcp::endpoint> out;
  for (const auto& entry : results) out.push_back(entry.endpoint());
  return out;
}

}  // namespace baton::client::detail
