#pragma once

// The router's service interface: what its front doors (the native port and the
// OpenAI-compatible HTTP API, both in frontend/) call, and what a router implements
// (actors::router_gateway). It speaks in the native client protocol's types
// (schemas/client.hpp) and knows nothing of Asio, CAF or the transport.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <variant>

#include "schemas/client.hpp"

namespace baton::frontend {

/// What a router sends back for one request. The stream stamps its own client_tag on
/// every message, so the tag the router fills in is ignored.
using response = std::variant<wire::accepted, wire::token_chunk, wire::finished, wire::rejected>;

/// The way back to the client of one request. Thread-safe: any thread may call it, from
/// within generate_handler::start() on. A request ends exactly once: by the handler
/// sending `finished` or `rejected`, or by the server (client cancel, disconnect, slow
/// reader, shutdown, a failure of its own), in which case the handler's cancel() is called.
class response_stream {
 public:
  virtual ~response_stream() = default;

  /// Unique among all requests this server ever started; a key for the router's maps.
  [[nodiscard]] virtual std::uint64_t id() const noexcept = 0;

  /// The tag the client chose; unique among the open requests of its connection only.
  [[nodiscard]] virtual std::uint64_t client_tag() const noexcept = 0;

  /// Queues `r` for the client. `finished` and `rejected` end the request. Returns false,
  /// and sends nothing, once the request has ended or its client is gone. A message that
  /// would push queued_bytes() past the server's max_queued_bytes_per_stream ends the
  /// request instead: the client gets rejected{overloaded} and the handler a cancel().
  virtual bool send(response r) = 0;

  /// Bytes queued for this request and not yet written to the socket: a router slows a
  /// producer down while this grows, before the bound ends the request.
  [[nodiscard]] virtual std::size_t queued_bytes() const noexcept = 0;

  /// False once the request has ended.
  [[nodiscard]] virtual bool open() const noexcept = 0;
};

/// Why the server ended a request on the handler's behalf.
enum class cancel_reason : std::uint8_t {
  client_cancelled,  ///< the client sent cancel_request (it gets finished{cancelled})
  disconnected,      ///< the connection closed or broke
  slow_reader,       ///< the stream's outgoing queue hit its bound
  server_stopping,   ///< the server is being destroyed
  failed,            ///< the server failed handling it (a bug caught at its boundary; counted)
};

/// What a router implements to serve native clients.
class generate_handler {
 public:
  virtual ~generate_handler() = default;

  /// A new request. Called on the server thread; must not block. `request.timeout_ms` is
  /// already the server's default when the client sent 0.
  virtual void start(const wire::generate_request& request,
                     std::shared_ptr<response_stream> stream) = 0;

  /// The server ended `stream`'s request; every later send() returns false. Called on
  /// the server thread, at most once per stream and never after a send() of finished or
  /// rejected returned true, but it may race with one still in progress on another
  /// thread; must not block. A send() that returns false also means the request ended.
  virtual void cancel(const response_stream& stream, cancel_reason reason) = 0;
};

}  // namespace baton::frontend
