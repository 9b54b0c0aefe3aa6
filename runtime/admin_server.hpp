#pragma once

// A node's admin port: a small HTTP/1.1 server (Boost.Beast) answering
//   GET /health   200 {"status":"ok",...} while the node serves, 503 otherwise
//   GET /livez    200 while the process answers at all (liveness)
//   GET /readyz   200 while the node is joined, its actors run and it is not draining
//                 (routers may place work on it), 503 otherwise (readiness)
//   GET /metrics  the metrics registry as Prometheus text
//   GET /status   the membership table as JSON (what `baton status` prints)
//   POST /drain[?deadline_ms=N]  202: the node takes no new work, finishes what it has
//                 (moving what is left after N ms), leaves and exits 0
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
  std::function<bool()> ready;           ///< empty: /readyz answers as /health
  /// Starts draining with this deadline; returns a JSON document. Empty: 404.
  std::function<std::string(std::chrono::milliseconds deadline)> drain;
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
/// POSTs (no body) to `path` of an admin port; the body of a 2xx answer, or an error.
[[nodiscard]] expected<std::string> admin_post(const std::string& address, const std::string& path,
                                               std::chrono::milliseconds timeout);
/// POSTs the JSON `body` to `path` at `address` (a router's HTTP API, say); errors as
/// admin_get's, a non-2xx answer's message naming its status and body.
[[nodiscard]] expected<std::string> http_post_json(const std::string& address,
                                                   const std::string& path, const std::string& body,
                                                   std::chrono::milliseconds timeout);

}  // namespace baton::runtime
