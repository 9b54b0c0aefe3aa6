#pragma once

// The router's native port: a TCP server speaking the native client protocol
// (schemas/client.hpp, docs/wire-format.md). It owns one Asio io_context and the thread
// that runs it; each connection is a session reading frames and handing generate and
// cancel requests to a generate_handler, which the router implements.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "base/error.hpp"
#include "schemas/client.hpp"
#include "schemas/client_codec.hpp"

namespace baton::client {

/// What a router sends back for one request. The stream stamps its own client_tag on
/// every message, so the tag the router fills in is ignored.
using response = std::variant<wire::accepted, wire::token_chunk, wire::finished, wire::rejected>;

/// The way back to the client of one request. Thread-safe: any thread may call it, from
/// within generate_handler::start() on. A request ends exactly once: by the handler
/// sending `finished` or `rejected`, or by the server (client cancel, disconnect, slow
/// reader, shutdown), in which case the handler's cancel() is called. A message the codec
/// refuses (a router bug) ends the request with rejected{failed} and send() false.
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
  server_stopping,   ///< the native_server is being destroyed
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

struct server_options {
  std::string address = "127.0.0.1:0";                ///< "host:port"; port 0 picks a free one
  std::size_t max_connections = 256;                  ///< beyond: rejected{overloaded}, then closed
  std::size_t max_open_requests_per_connection = 64;  ///< beyond: rejected{overloaded}
  std::size_t max_queued_bytes_per_stream = 4u << 20;
  std::uint32_t default_timeout_ms = 300'000;  ///< for requests with timeout_ms 0
  wire::client_limits limits;                  ///< max_message_bytes bounds every frame
};

/// Counters since start(); each is read atomically, the set is not a snapshot.
struct server_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  ///< over max_connections
  std::uint64_t connections_open = 0;
  std::uint64_t frames_received = 0;     ///< well-formed frames
  std::uint64_t frames_rejected = 0;     ///< malformed, oversized or wrong direction
  std::uint64_t requests_started = 0;    ///< handed to generate_handler::start
  std::uint64_t requests_rejected = 0;   ///< refused before start: limit, duplicate tag
  std::uint64_t requests_cancelled = 0;  ///< ended by the server: see cancel_reason
};

class native_server {
 public:
  /// Listens on options.address and serves until destroyed. `handler` must outlive the
  /// server.
  [[nodiscard]] static expected<std::unique_ptr<native_server>> start(server_options options,
                                                                      generate_handler& handler);

  /// Stops accepting, ends every open request (handler.cancel with server_stopping),
  /// closes every connection and joins the thread. Must not run inside a handler call.
  virtual ~native_server() = default;

  /// The port listened on (the one picked when options.address had port 0).
  [[nodiscard]] virtual std::uint16_t local_port() const = 0;

  [[nodiscard]] virtual server_stats stats() const = 0;
};

}  // namespace baton::client
