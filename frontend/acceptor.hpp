#pragma once

// Internal to frontend/: what the native and HTTP servers share, a listening socket and
// the io thread that runs a server. Includes Asio, so no public header includes it.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>

#include "base/error.hpp"

namespace baton::frontend::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

/// A server's io thread and listening socket: accepts connections (TCP_NODELAY set) and
/// hands each to `on_accept` on the io thread. The owner runs its sessions on io().
///
/// The io thread is a failure boundary of last resort: an exception that escapes a
/// handler is logged and counted, and the thread goes on serving (sessions catch their
/// own handlers' failures first, so they can end just their connection).
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
  /// Fails naming the address: invalid_argument when malformed, failed when it cannot be
  /// bound.
  [[nodiscard]] expected<void> listen(const std::string& address, accept_fn on_accept);
  /// Stops accepting, runs `on_stop` on the io thread (to close the sessions), then stops
  /// the io thread and joins it. Only the first call does anything.
  void stop(const std::function<void()>& on_stop = {});

  [[nodiscard]] asio::io_context& io() { return io_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// Exceptions that escaped a handler on the io thread.
  [[nodiscard]] std::uint64_t handler_failures() const { return failures_.load(); }

 private:
  void accept();
  void run();

  std::string what_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  asio::steady_timer backoff_{io_};  // after a failed accept (out of descriptors)
  bool accept_failing_ = false;      // io thread only
  accept_fn on_accept_;
  std::uint16_t port_ = 0;
  std::atomic<std::uint64_t> failures_{0};
  std::thread thread_;
};

/// Open connections, counted in all and per client address, so that one client (say, one
/// holding a thousand idle connections) cannot take the server from the others.
/// Thread-safe.
class connection_count {
 public:
  connection_count(std::size_t max_total, std::size_t max_per_address)
      : max_total_(max_total), max_per_address_(max_per_address) {}

  /// Counts a connection from `peer`; or, over a limit, counts nothing and says which.
  [[nodiscard]] std::optional<std::string> admit(const asio::ip::address& peer);
  /// Uncounts a connection admit() counted.
  void release(const asio::ip::address& peer);

 private:
  std::mutex mutex_;
  std::size_t max_total_;
  std::size_t max_per_address_;
  std::size_t total_ = 0;
  std::map<asio::ip::address, std::size_t> per_address_;
};

/// The client address of `socket` (unspecified when it is not connected any more).
[[nodiscard]] asio::ip::address peer_address(const tcp::socket& socket);

}  // namespace baton::frontend::detail
