#pragma once

// Internal to client/: what the router client and the two servers (native, HTTP) share.
// Includes Asio, so no public header includes it.

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
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

/// A server's io thread and listening socket: accepts connections (TCP_NODELAY set) and
/// hands each to `on_accept` on the io thread. The owner runs its sessions on io().
class acceptor_thread {
 public:
  using accept_fn = std::function<void(tcp::socket)>;

  /// `what` names the server in errors ("native", "http").
  explicit acceptor_thread(std::string what);
  /// Calls stop().
  ~acceptor_thread();
  acceptor_thread(const acceptor_thread&) = delete;
  acceptor_thread& operator=(const acceptor_thread&) = delete;

  /// Binds `address` ("host:port", port 0: any), starts accepting and the io thread.
  [[nodiscard]] expected<void> listen(const std::string& address, accept_fn on_accept);
  /// Stops accepting, runs `on_stop` on the io thread (to close the sessions), then stops
  /// the io thread and joins it. Only the first call does anything.
  void stop(const std::function<void()>& on_stop = {});

  [[nodiscard]] asio::io_context& io() { return io_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  void accept();

  std::string what_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  accept_fn on_accept_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace baton::client::detail
