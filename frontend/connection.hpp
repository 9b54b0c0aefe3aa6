#pragma once

// Internal to frontend/: a client connection, plain TCP or TLS (OpenSSL through Asio), as
// one AsyncReadStream / AsyncWriteStream, so a session is written once for both.

#include <memory>
#include <string>
#include <utility>
#include <variant>

#include <boost/asio/ssl.hpp>

#include "base/error.hpp"
#include "frontend/acceptor.hpp"  // Asio, <utility> first
#include "frontend/api_keys.hpp"

namespace baton::frontend::detail {

namespace ssl = asio::ssl;

/// A server's TLS set-up: its certificate chain and private key (PEM files), TLS 1.2 or
/// later only.
[[nodiscard]] expected<std::shared_ptr<ssl::context>> tls_server_context(
    const std::string& certificate_file, const std::string& key_file);

/// What a client port checks: its API keys (null: none asked) and its TLS set-up (null:
/// plain TCP).
struct client_security {
  std::unique_ptr<api_gate> keys;
  std::shared_ptr<ssl::context> tls;
};

/// Loads `api_keys_file` and the TLS certificate and key files (each empty: not used;
/// TLS needs both). Errors name `server` ("http server") and the file.
[[nodiscard]] expected<client_security> load_client_security(const std::string& server,
                                                             const std::string& api_keys_file,
                                                             const std::string& certificate_file,
                                                             const std::string& key_file);

class connection {
 public:
  using executor_type = tcp::socket::executor_type;

  /// Plain TCP.
  explicit connection(tcp::socket socket) : stream_(std::move(socket)) {}
  /// TLS under `context` (the server's): handshake() first.
  connection(tcp::socket socket, std::shared_ptr<ssl::context> context)
      : context_(std::move(context)),
        stream_(std::in_place_type<ssl::stream<tcp::socket>>, std::move(socket), *context_) {}

  [[nodiscard]] bool secure() const { return context_ != nullptr; }
  [[nodiscard]] executor_type get_executor() { return lowest().get_executor(); }
  [[nodiscard]] tcp::socket& lowest() {
    return std::visit([](auto& s) -> tcp::socket& { return lowest_of(s); }, stream_);
  }

  /// TLS: the server's side of the handshake; plain: `done` with success at once.
  template <class Handler>
  void handshake(Handler&& done) {
    if (auto* tls = std::get_if<ssl::stream<tcp::socket>>(&stream_)) {
      tls->async_handshake(ssl::stream_base::server, std::forward<Handler>(done));
    } else {
      asio::post(get_executor(), [done = std::forward<Handler>(done)]() mutable { done({}); });
    }
  }

  template <class Buffers, class Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler) {
    std::visit([&](auto& s) { s.async_read_some(buffers, std::forward<Handler>(handler)); },
               stream_);
  }
  template <class Buffers, class Handler>
  void async_write_some(const Buffers& buffers, Handler&& handler) {
    std::visit([&](auto& s) { s.async_write_some(buffers, std::forward<Handler>(handler)); },
               stream_);
  }

 private:
  static tcp::socket& lowest_of(tcp::socket& s) { return s; }
  static tcp::socket& lowest_of(ssl::stream<tcp::socket>& s) { return s.next_layer(); }

  std::shared_ptr<ssl::context> context_;  // first: outlives the stream that uses it
  std::variant<tcp::socket, ssl::stream<tcp::socket>> stream_;
};

}  // namespace baton::frontend::detail
