#pragma once

// The router client: what a developer links to generate text on a Baton cluster over
// routers' native ports (docs/wire-format.md, "Native client protocol").
//
// One client object is a pool over the routers it is given: one connection per router,
// kept open and reconnected with backoff, and any number of requests multiplexed over
// them (each placed on the healthy router with the fewest requests open). A request runs
// in one of three styles: generate() blocks and calls back on the calling thread;
// start() calls back on the client's I/O thread; stream() is pulled by the caller.
// Every request has its own cancellation and deadline, and one whose router goes away
// mid-stream is resumed through another router with nothing repeated or skipped.
//
// Thread safety: every member of router_client may be called from any thread at once,
// except the destructor. Callbacks of start() run on the client's one I/O thread, one at
// a time: they must not block; they may start and cancel requests, but not call
// generate(), a token_stream's next() or the destructor (which would wait for
// themselves). A request_handle and a token_stream's cancel() may be used from any
// thread; a token_stream's next() and result() by one thread at a time.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/error.hpp"
#include "schemas/client.hpp"
#include "schemas/client_codec.hpp"

namespace baton::client {

struct client_options {
  std::vector<std::string> routers;                 ///< "host:port" each: the pool
  std::chrono::milliseconds connect_timeout{2000};  ///< per connection attempt
  /// How long to wait for the router's finished{cancelled} after a cancel; then the
  /// request ends as cancelled (or timed out) all the same.
  std::chrono::milliseconds cancel_grace{2000};
  wire::client_limits limits;
  /// When the router of a request that was accepted goes away mid-stream (its connection
  /// breaks, or it says it restarted), resume the request through another router (the
  /// same one again once it is back), at most this many times per request; 0: fail with
  /// disconnected instead.
  std::uint32_t max_resumes = 8;
  /// How long such a request, or a new one while no router is up, waits for some router
  /// to answer before it fails.
  std::chrono::milliseconds resume_wait{3000};
  /// Between attempts to reconnect a router that went away: doubles from the first to
  /// the second while it stays away.
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{1000};
  /// Sent with every request that does not carry its own, for routers that ask for API
  /// keys ([router] api_keys).
  std::string api_key;
  /// TLS to the routers (whose native port then serves TLS): the CA certificates (PEM)
  /// that must have signed their certificates, which must name the host each address
  /// gives. Empty: plain TCP.
  std::string tls_ca_file;
};

/// Streamed to the caller while a request runs.
using client_event = std::variant<wire::accepted, wire::token_chunk>;
/// Sees each event of a request; returning false cancels it.
using event_callback = std::function<bool(const client_event&)>;

/// How a request ended.
struct generate_result {
  wire::finish_reason reason = wire::finish_reason::length;  ///< cancelled after a cancel
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

/// Called once when a request started with start() ends.
using done_callback = std::function<void(expected<generate_result>)>;

/// A router of the pool, as the client sees it.
struct router_health {
  enum class state : std::uint8_t { connecting, up, down };
  std::string address;
  state now = state::connecting;
  std::size_t open_requests = 0;  ///< requests running over its connection
  std::uint32_t failures = 0;     ///< failed connections since it was last up
  std::string last_error;         ///< why it went down last, or empty
};

namespace detail {
struct client_core;
struct stream_queue;
}  // namespace detail

/// Names a request started with start() or stream().
class request_handle {
 public:
  request_handle() = default;
  /// Cancels the request: it ends with reason cancelled (or timed_out if its deadline
  /// came first). Thread-safe; a no-op once it has ended or the client is gone.
  void cancel() const;
  /// The request's tag on its connection (client_tag), unique within the client.
  [[nodiscard]] std::uint64_t tag() const { return tag_; }

 private:
  friend class router_client;
  request_handle(std::weak_ptr<detail::client_core> core, std::uint64_t tag)
      : core_(std::move(core)), tag_(tag) {}
  std::weak_ptr<detail::client_core> core_;
  std::uint64_t tag_ = 0;
};

/// A request whose events the caller pulls.
class token_stream {
 public:
  /// Blocks for the request's next event; nullopt once it has ended (see result()).
  [[nodiscard]] std::optional<client_event> next();
  /// How the request ended: valid once next() has returned nullopt.
  [[nodiscard]] const expected<generate_result>& result() const;
  /// Cancels the request (thread-safe): next() drains what had arrived, then ends.
  void cancel() const { handle_.cancel(); }
  [[nodiscard]] const request_handle& handle() const { return handle_; }

 private:
  friend class router_client;
  token_stream(std::shared_ptr<detail::stream_queue> queue, request_handle handle)
      : queue_(std::move(queue)), handle_(std::move(handle)) {}
  std::shared_ptr<detail::stream_queue> queue_;
  request_handle handle_;
};

class router_client {
 public:
  /// Opens a connection to every router of options.routers and returns once one of them
  /// answers (the others go on connecting). Fails with invalid_argument for a bad
  /// address, disconnected when no router answers.
  [[nodiscard]] static expected<std::unique_ptr<router_client>> connect(client_options options);

  /// Ends the requests still running (their done callbacks see disconnected: the client
  /// was closed) and closes every connection. Not from a callback.
  ~router_client();
  router_client(const router_client&) = delete;
  router_client& operator=(const router_client&) = delete;

  /// Starts `request` and returns at once; `on_event` sees accepted then token chunks,
  /// and `on_done` how it ended, on the client's I/O thread. The client assigns
  /// request.client_tag. A request with timeout_ms > 0 has a deadline: when it passes,
  /// the client cancels it and it fails with timed_out. It fails with the router's code
  /// (overloaded, invalid_argument, ...) when the router rejects it. A request not yet
  /// accepted whose connection turns out to be dead is sent again, through another
  /// router if one is up, or the first that comes back within resume_wait (every router
  /// may be restarting at once). One accepted whose router goes away mid-stream is resumed
  /// through another (client_options::max_resumes): with the seed the first router
  /// assigned and the tokens received so far, so the stream goes on with nothing
  /// repeated or skipped, and `on_event` sees one accepted; when no router answers within
  /// resume_wait it fails with disconnected.
  request_handle start(wire::generate_request request, event_callback on_event,
                       done_callback on_done);

  /// Starts `request` for the caller to pull (as start()).
  [[nodiscard]] token_stream stream(wire::generate_request request);

  /// Runs `request` to its end (as start()), calling `on_event` on the calling thread.
  /// Fails with invalid_argument when called on the client's I/O thread.
  [[nodiscard]] expected<generate_result> generate(wire::generate_request request,
                                                   const event_callback& on_event);

  /// Cancels every request in progress.
  void cancel();

  /// The pool's routers, in the order given.
  [[nodiscard]] std::vector<router_health> routers() const;
  /// The first router (in the order given) whose connection is up, or empty.
  [[nodiscard]] std::string connected_router() const;

 private:
  explicit router_client(std::shared_ptr<detail::client_core> core);
  std::shared_ptr<detail::client_core> core_;
};

}  // namespace baton::client
