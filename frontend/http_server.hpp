#pragma once

// The router's OpenAI-compatible HTTP API (docs/http-api.md): an HTTP/1.1 server (Boost.Beast)
// answering POST /v1/completions, POST /v1/chat/completions (buffered JSON or SSE), GET
// /v1/models, GET /health and GET /metrics. It owns one Asio io_context and the thread that
// runs it. Each generation request becomes one generate_handler::start() call with an
// HTTP-side response_stream; a client that goes away mid-request makes the server call
// handler.cancel(stream, disconnected). Requests are parsed by parse_openai_request
// (frontend/openai_request.hpp); answers are built by frontend/openai_response.hpp.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/error.hpp"
#include "frontend/service.hpp"

namespace baton::frontend {

struct http_options {
  std::string address = "127.0.0.1:0";                 ///< "host:port"; port 0 picks a free one
  std::string model = "baton";                         ///< the one model id served (GET /v1/models)
  std::size_t max_body_bytes = 1u << 20;               ///< larger request bodies: 413
  std::size_t max_header_bytes = 16u << 10;            ///< larger request headers: 431
  std::uint32_t max_tokens_limit = 4096;               ///< larger max_tokens: 400
  std::size_t max_prompt_bytes = 256u << 10;           ///< longer prompts (after the template): 400
  std::size_t max_connections = 4096;                  ///< beyond: 429, then closed
  std::size_t max_connections_per_client = 64;         ///< from one address; beyond: 429
  std::size_t max_open_requests = 256;                 ///< generations in progress; beyond: 429
  std::size_t max_queued_bytes_per_stream = 4u << 20;  ///< a slower reader is cut off
  std::uint32_t default_timeout_ms = 300'000;  ///< a request's deadline (504 when it passes)
  /// A request's headers must have arrived this long after the server starts waiting for
  /// them (a new connection, or the previous answer on a kept-alive one), or the
  /// connection is closed: a client that trickles headers (or says nothing) holds its
  /// connection no longer.
  std::uint32_t header_timeout_ms = 10'000;
  std::uint32_t idle_timeout_ms = 30'000;  ///< then the body too, or the connection is closed
  /// API keys (frontend/api_keys.hpp), reloaded when the file changes: every /v1/ request
  /// must then carry "Authorization: Bearer KEY" (401 otherwise) and stay within its key's
  /// limits (429 with Retry-After). Empty: no key is asked for.
  std::string api_keys_file;
  /// TLS (PEM files; both or neither): the API is served over HTTPS only, and API keys
  /// are taken from any address. Empty: plain HTTP.
  std::string tls_certificate_file;
  std::string tls_key_file;
  /// Prometheus text served on GET /metrics (the server appends its own baton_http_*
  /// series); empty: only those.
  std::function<std::string()> metrics_text;
  /// Whether the router can take requests: /health answers 200 or 503, and generation
  /// requests get 503 while false. Empty: always healthy. Called on the server thread.
  std::function<bool()> healthy;
};

/// Counters since start(); each is read atomically, the set is not a snapshot.
struct http_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t requests = 0;             ///< HTTP requests answered or being answered
  std::uint64_t generations_started = 0;  ///< handed to generate_handler::start
  std::uint64_t generations_open = 0;     ///< started and not yet ended
  std::uint64_t cancelled = 0;            ///< handler.cancel calls (disconnect, stop, ...)
  std::uint64_t client_errors = 0;        ///< 4xx answers
  std::uint64_t server_errors = 0;        ///< 5xx answers
  std::uint64_t handler_failures = 0;     ///< requests ended by a failure caught in a handler
};

class http_server {
 public:
  /// Listens on options.address and serves until destroyed. `handler` must outlive the
  /// server; it is called on the server thread and must not block. A handler call that
  /// throws ends its own connection (500 when nothing was sent yet) and is counted in
  /// stats().handler_failures; the server goes on.
  [[nodiscard]] static expected<std::unique_ptr<http_server>> start(http_options options,
                                                                    generate_handler& handler);

  /// Stops accepting, ends every open request (handler.cancel with server_stopping),
  /// closes every connection and joins the thread. Must not run inside a handler call.
  virtual ~http_server() = default;

  /// The port listened on (the one picked when options.address had port 0).
  [[nodiscard]] virtual std::uint16_t local_port() const = 0;

  [[nodiscard]] virtual http_stats stats() const = 0;
};

}  // namespace baton::frontend
