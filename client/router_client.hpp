#pragma once

// The router client: what a developer links to generate text on a Baton cluster over a
// router's native port (docs/wire-format.md, "Native client protocol").

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "base/error.hpp"
#include "schemas/client.hpp"
#include "schemas/client_codec.hpp"

namespace baton::client {

struct client_options {
  std::vector<std::string> routers;                 ///< "host:port", tried in this order
  std::chrono::milliseconds connect_timeout{2000};  ///< per router address
  /// How long to wait for the router's finished{cancelled} after a cancel before giving
  /// up on the connection (it is closed and the next generate reconnects).
  std::chrono::milliseconds cancel_grace{2000};
  wire::client_limits limits;
  /// When the router of a request that was accepted goes away mid-stream (its connection
  /// breaks, or it says it restarted), resume the request through the next router that
  /// answers (the same one again once it is back), at most this many times per request;
  /// 0: fail with disconnected instead.
  std::uint32_t max_resumes = 8;
};

/// Streamed to the callback while a request runs.
using client_event = std::variant<wire::accepted, wire::token_chunk>;
/// Called on the thread that called generate(); returning false cancels the request.
using event_callback = std::function<bool(const client_event&)>;

/// How a request ended.
struct generate_result {
  wire::finish_reason reason = wire::finish_reason::length;  ///< cancelled after cancel()
  std::uint32_t prompt_tokens = 0;
  std::uint32_t completion_tokens = 0;
  wire::request_id request{};
  std::uint64_t seed = 0;
  std::string placement;
  std::string prefill_node;
  std::string decode_node;
  std::string router;           ///< the router address that served the request (the last)
  std::uint32_t router_us = 0;  ///< time spent inside the router process (wire::finished)
  std::uint32_t resumes = 0;    ///< times the request was resumed through another router
};

/// One connection to a router at a time, opened on demand. Not for concurrent
/// generates: one request runs at a time and further generate() calls wait for it.
/// cancel() may be called from any thread.
class router_client {
 public:
  /// Connects to the first router of options.routers that answers. Fails with
  /// invalid_argument for a bad address, disconnected when no router answers.
  [[nodiscard]] static expected<std::unique_ptr<router_client>> connect(client_options options);

  ~router_client();
  router_client(const router_client&) = delete;
  router_client& operator=(const router_client&) = delete;

  /// Runs `request` to its end, streaming accepted and token chunks to `on_event`.
  /// The client assigns request.client_tag. A request with timeout_ms > 0 gets a client
  /// deadline: when it passes the client cancels and fails with timed_out. Fails with
  /// disconnected when the router goes away mid-stream (the next call reconnects,
  /// trying the routers in order), and with the router's code (overloaded,
  /// invalid_argument, ...) when it rejects the request. A request not yet accepted is
  /// retried on the next router when the connection turns out to be dead. One accepted
  /// whose router goes away mid-stream is resumed through the next router that answers
  /// (client_options::max_resumes): with the seed the first router assigned and the
  /// tokens received so far, so the stream goes on with nothing repeated or skipped;
  /// `on_event` sees one accepted.
  [[nodiscard]] expected<generate_result> generate(wire::generate_request request,
                                                   const event_callback& on_event);

  /// Cancels the generate() in progress, if any: it returns a result with reason
  /// cancelled. Thread-safe; a no-op while no request runs.
  void cancel();

  /// The address of the router currently connected, or empty.
  [[nodiscard]] std::string connected_router() const;

 private:
  struct impl;
  explicit router_client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace baton::client
