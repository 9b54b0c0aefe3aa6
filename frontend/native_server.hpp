#pragma once

// The router's native port: a TCP (or TLS) server speaking the native client protocol
// (schemas/client.hpp, docs/wire-format.md), with the HTTP API's API keys. It owns one Asio
// io_context and the thread that runs it; each connection is a session reading frames and handing
// generate and cancel requests to the router's service (frontend/service.hpp).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/error.hpp"
#include "frontend/service.hpp"
#include "schemas/client_codec.hpp"

namespace baton::frontend {

struct server_options {
  std::string address = "127.0.0.1:0";                ///< "host:port"; port 0 picks a free one
  std::size_t max_connections = 4096;                 ///< beyond: rejected{overloaded}, then closed
  std::size_t max_connections_per_client = 64;        ///< from one address; beyond: the same
  std::size_t max_open_requests_per_connection = 64;  ///< beyond: rejected{overloaded}
  std::size_t max_queued_bytes_per_stream = 4u << 20;
  std::uint32_t default_timeout_ms = 300'000;  ///< for requests with timeout_ms 0
  wire::client_limits limits;                  ///< max_message_bytes bounds every frame
  /// API keys (frontend/api_keys.hpp); empty: none asked. A generate_request's api_key is
  /// accepted only over TLS or from loopback.
  std::string api_keys_file;
  /// TLS (both or neither): the port then speaks the native protocol inside TLS only.
  std::string tls_certificate_file;
  std::string tls_key_file;
  std::uint32_t handshake_timeout_ms = 10'000;  ///< a TLS client silent longer is cut off
};

/// Counters since start(); each is read atomically, the set is not a snapshot.
struct server_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  ///< over max_connections or the per-client limit
  std::uint64_t connections_open = 0;
  std::uint64_t frames_received = 0;     ///< well-formed frames
  std::uint64_t frames_rejected = 0;     ///< malformed, oversized or wrong direction
  std::uint64_t requests_started = 0;    ///< handed to generate_handler::start
  std::uint64_t requests_rejected = 0;   ///< refused before start: limit, duplicate tag
  std::uint64_t requests_cancelled = 0;  ///< ended by the server: see cancel_reason
  std::uint64_t handler_failures = 0;    ///< connections ended by a failure caught in a handler
  std::uint64_t auth_failures = 0;       ///< requests without a valid API key
  std::uint64_t key_limited = 0;         ///< requests over their key's limits
  std::uint64_t tls_handshake_failures = 0;
};

/// `stats` as Prometheus text (baton_native_*), for a node's /metrics.
[[nodiscard]] std::string prometheus_text(const server_stats& stats);

class native_server {
 public:
  /// Listens on options.address and serves until destroyed. `handler` must outlive the
  /// server. A handler call that throws ends its own connection (its requests get
  /// rejected{failed}) and is counted in stats().handler_failures; the server goes on.
  [[nodiscard]] static expected<std::unique_ptr<native_server>> start(server_options options,
                                                                      generate_handler& handler);

  /// Stops accepting, ends every open request (handler.cancel with server_stopping),
  /// closes every connection and joins the thread. Must not run inside a handler call.
  virtual ~native_server() = default;

  /// The port listened on (the one picked when options.address had port 0).
  [[nodiscard]] virtual std::uint16_t local_port() const = 0;

  [[nodiscard]] virtual server_stats stats() const = 0;
};

}  // namespace baton::frontend
