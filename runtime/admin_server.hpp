#pragma once

// A node's admin port: a small HTTP/1.1 server (Boost.Beast) answering
//   GET /health   200 {"status":"ok",...} while the node serves, 503 otherwise
//   GET /metrics  the metrics registry as Prometheus text
//   GET /status   the membership table as JSON (what `baton status` prints)
// It owns one Asio io_context and the thread that runs it; handlers are called there.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/error.hpp"

namespace baton::runtime {

/// What the port answers; each is called on the server's thread. One that throws is
/// answered 500 (and logged); the server goes on.
struct admin_routes {
  std::function<bool()> healthy;
  std::function<std::string()> metrics;  ///< Prometheus text
  std::function<std::string()> status;   ///< a JSON document
};

class admin_server {
 public:
  /// Listens on `address` ("host:port"; port 0 picks a free one) and starts serving.
  [[nodiscard]] static expected<std::unique_ptr<admin_server>> start(const std::string& address,
                                                                     admin_routes routes);
  /// Stops serving and joins the thread.
  virtual ~admin_server() = default;
  [[nodiscard]] virtual std::uint16_t port() const = 0;
};

/// GETs `path` from an admin port at `address` ("host:port"); the body of a 200 answer,
/// or an error (disconnected when nobody answers, failed for another status).
[[nodiscard]] expected<std::string> admin_get(const std::string& address, const std::string& path,
                                              std::chrono::milliseconds timeout);

}  // namespace baton::runtime
