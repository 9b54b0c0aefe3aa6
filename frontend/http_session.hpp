#pragma once

// Internal to frontend/: one HTTP connection of the OpenAI-compatible server, and what
// every connection of one server shares. Includes Asio and Beast, so no public header
// includes it.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "frontend/acceptor.hpp"  // Asio, <utility> first

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "frontend/api_keys.hpp"
#include "frontend/bounded_stream.hpp"
#include "frontend/connection.hpp"
#include "frontend/http_server.hpp"
#include "frontend/openai_response.hpp"

namespace baton::frontend::detail {

/// Prometheus series the HTTP layer adds to the node's registry text. io thread only.
struct http_metrics {
  static constexpr std::array<double, 14> bounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                    0.1,    0.2,   0.5,   1,     2,    5,    10};
  std::array<std::uint64_t, 600> by_status{};
  std::array<std::uint64_t, bounds.size() + 1> gap_counts{};
  double gap_sum = 0;
  std::uint64_t auth_failures = 0;  ///< 401s: no key, a wrong one, or one over plain TCP
  std::uint64_t key_limited = 0;    ///< 429s for a key's own limits
  std::uint64_t tls_failures = 0;   ///< TLS handshakes that failed (or were not attempted)

  void observe_gap(double seconds);
  [[nodiscard]] std::string text(const http_stats& stats) const;
};

struct http_counters {
  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> generations_started{0};
  std::atomic<std::uint64_t> generations_open{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> client_errors{0};
  std::atomic<std::uint64_t> server_errors{0};
  std::atomic<std::uint64_t> handler_failures{0};

  [[nodiscard]] http_stats snapshot() const;
};

/// What every session of one server shares; the server joins its thread before
/// destroying it.
struct http_core {
  http_options options;
  request_limits limits;
  generate_handler& handler;
  http_counters stats;
  http_metrics metrics;  // io thread only
  std::atomic<std::uint64_t> next_stream_id{1};
  std::shared_ptr<io_gate> gate;
  std::unique_ptr<connection_count> connections;  // options' limits, in all and per address
  std::unique_ptr<api_gate> keys;                 // options.api_keys_file; null: none asked
};

/// One choice of a generation in progress (OpenAI's n; one by default).
struct choice_progress {
  explicit choice_progress(const std::vector<std::string>& stops) : filter(stops) {}

  text_filter filter;
  std::uint32_t tokens = 0;
  std::size_t streamed_bytes = 0;     ///< text sent so far: completions' text_offset
  std::optional<std::string> reason;  ///< set once the choice ended
  choice_answer answer;               ///< not streamed: the whole text and logprobs
};

/// One generation request in progress on a session.
struct exchange {
  exchange(openai_request r, std::shared_ptr<bounded_stream> s)
      : request(std::move(r)),
        stream(std::move(s)),
        choices(request.request.n, choice_progress(request.stops)) {}

  openai_request request;
  std::shared_ptr<bounded_stream> stream;
  std::vector<choice_progress> choices;
  completion_context context;
  bool accepted = false;
  bool headers_sent = false;
  std::uint32_t completion_tokens = 0;
  std::optional<std::chrono::steady_clock::time_point> last_piece;
  std::string key;  ///< the API key's name it was admitted under (empty: no keys)
};

/// One connection: reads requests one at a time, answers them (a generation through the
/// router's service), watches for the client going away while a request runs. Runs on
/// the server's io thread only. A handler that fails (an exception from the router, the
/// JSON library or a bug) ends this connection with a counted 500, never the process.
class http_session : public stream_sink, public std::enable_shared_from_this<http_session> {
 public:
  http_session(connection conn, http_core& core);
  http_session(const http_session&) = delete;
  http_session& operator=(const http_session&) = delete;

  /// Counted by core.connections (admitted there): reads requests.
  void start();
  /// Over a connection limit (`why`): 429, then closed.
  void refuse(const std::string& why);
  /// The client's address.
  [[nodiscard]] const boost::asio::ip::address& peer() const { return peer_; }
  /// Whether an API key may be taken on this connection: TLS, or from this host.
  [[nodiscard]] bool trusted_channel() const { return conn_.secure() || peer_.is_loopback(); }
  /// Ends the open request (telling the handler why) and closes the connection.
  void close(cancel_reason why);

  void on_response(const std::shared_ptr<bounded_stream>& stream, response r) override;
  void on_slow(const std::shared_ptr<bounded_stream>& stream) override;

 private:
  template <class F>
  void guarded(const char* where, F&& f);
  void failed(const char* where, const char* what);

  void read_request();
  /// While waiting_ for a request: closes the connection in `ms` unless it arrives.
  void wait_at_most(std::uint32_t ms);
  void on_header(error_code ec);
  void on_body(error_code ec);
  void read_failed(error_code ec);
  void watch();
  void on_watched(error_code ec, std::size_t n);

  void handle(boost::beast::http::request<boost::beast::http::string_body> req);
  /// Whether the request may go on: with API keys, its key is valid (or a 401 is sent).
  [[nodiscard]] bool authorized(std::string_view authorization);
  void start_generation(api_kind kind, const std::string& body, std::string_view authorization);
  void arm_deadline(std::uint64_t id);

  void on_message(const wire::accepted& a);
  void on_message(const wire::token_chunk& t);
  void on_message(const wire::finished& f);
  void on_message(const wire::rejected& r);
  /// Sends (or, not streamed, keeps) the next text of choice `c` and its log-probabilities.
  void emit(std::uint32_t c, const std::string& text,
            std::span<const wire::client_logprobs> logprobs = {});
  /// Choice `c` ended for `reason`; with the last choice, the request is complete.
  void end_choice(std::uint32_t c, const char* reason);
  /// Every choice ended: the last chunks, or the whole answer.
  void complete(token_usage usage);
  void end_exchange(std::optional<cancel_reason> why);

  void write_event(const std::string& data);
  void end_body();
  /// `header`, if given, is one more response header (Retry-After, WWW-Authenticate).
  void respond(unsigned status, const char* type, std::string body,
               std::pair<boost::beast::http::field, std::string> header = {});
  void respond_error(const api_error& e,
                     std::pair<boost::beast::http::field, std::string> header = {});
  void count_status(unsigned status);
  void next_request();
  void write_raw(std::string bytes, std::shared_ptr<bounded_stream> owner);
  void write_next();
  void on_written(error_code ec);
  void linger();
  void drain();

  struct pending {
    std::string bytes;
    std::shared_ptr<bounded_stream> owner;
  };

  connection conn_;
  boost::asio::ip::address peer_;
  boost::asio::steady_timer timer_;  // idle timeout, the request's deadline, the linger bound
  http_core& core_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::unique_ptr<exchange> current_;
  std::deque<pending> out_;
  std::array<char, 16384> scratch_{};
  std::size_t drained_ = 0;
  bool counted_ = false;  // admitted by core_.connections: released on close
  bool keep_alive_ = true;
  bool http11_ = true;
  bool waiting_ = false;      // for a request: the idle timer applies
  bool watching_ = false;     // a read-ahead is outstanding
  bool next_wanted_ = false;  // read the next request once the read-ahead completes
  bool writing_ = false;
  bool finishing_ = false;  // close once everything queued is written
  bool lingering_ = false;
  bool closed_ = false;
};

}  // namespace baton::frontend::detail
