#pragma once

// Internal to client/: what the router client and the native server share. Includes
// Asio, so no public header includes it.

#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>

#include "base/error.hpp"

namespace baton::client::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

/// Resolves "host:port" ("[::1]:7000" for IPv6). Fails with invalid_argument for a
/// malformed address and not_found when the host does not resolve.
[[nodiscard]] expected<std::vector<tcp::endpoint>> resolve(asio::io_context& io,
                                                           const std::string& address);

}  // namespace baton::client::detail
