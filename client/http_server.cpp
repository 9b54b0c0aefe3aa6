#include "client/http_server.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <ctime>
#include <deque>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "client/stream_io.hpp"  // Asio, <utility> first

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace baton::client {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using detail::tcp;
using error_code = boost::system::error_code;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

/// How long a closing connection keeps reading (and discarding) what the client still
/// sends, so that the kernel does not reset it before the client read our answer.
constexpr auto linger_time = std::chrono::seconds(2);
constexpr std::size_t linger_max_bytes = 16u << 20;
/// What a client may send ahead (a pipelined request) while its request runs; past this
/// the server stops watching the connection for a disconnect until the request ends.
constexpr std::size_t lookahead_max_bytes = 64u << 10;
constexpr std::size_t max_stop_strings = 4;
constexpr std::size_t max_stop_bytes = 256;
/// Past its deadline the router answers timed_out itself; the server waits this much longer
/// before it gives up on a router that went quiet (one that restarted, say).
constexpr auto deadline_grace = std::chrono::seconds(5);

// ---------------------------------------------------------------------------------------
// Errors in OpenAI's shape.

struct http_error {
  unsigned status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

http_error bad_request(std::string message, std::string param = {}, std::string code = {}) {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

json error_json(const http_error& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

/// What a router's rejection becomes (docs/http-api.md, "Errors").
http_error from_rejection(errc code, std::string message) {
  switch (code) {
    case errc::invalid_argument: return bad_request(std::move(message));
    case errc::overloaded: return {429, std::move(message), "rate_limit_error", {}, "overloaded"};
    case errc::timed_out: return {504, std::move(message), "timeout_error", {}, "timed_out"};
    case errc::disconnected:
      return {503, std::move(message), "service_unavailable", {}, "disconnected"};
    case errc::not_found:
      return {404, std::move(message), "invalid_request_error", {}, "not_found"};
    case errc::failed: break;
  }
  return {500, std::move(message), "server_error", {}, "failed"};
}

std::string dump(const json& j) {
  // Invalid UTF-8 (which the server never sends on purpose) becomes U+FFFD, not an abort.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------
// Request parsing.

enum class api : std::uint8_t { completions, chat };

struct generation {
  api kind = api::completions;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  std::vector<std::string> stops;
  wire::generate_request request;
};

using parsed = tl::expected<generation, http_error>;

/// `j[name]`, or null when absent or JSON null (OpenAI treats both as "not given").
const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

http_error wrong_type(const char* name, const char* expected) {
  return bad_request(fmt::format("'{}' must be {}", name, expected), name, "invalid_type");
}

/// A chat message's content: a string, or an array of {"type": "text", "text": ...} parts.
tl::expected<std::string, http_error> message_content(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return tl::unexpected(wrong_type("messages", "an array of messages"));
  std::string out;
  for (const auto& part : content) {
    const json* text = part.is_object() ? field(part, "text") : nullptr;
    if (text == nullptr || !text->is_string() || part.value("type", "") != "text") {
      return tl::unexpected(bad_request("only text content parts are supported", "messages"));
    }
    out += text->get<std::string>();
  }
  return out;
}

tl::expected<std::string, http_error> chat_prompt_of(const json& messages) {
  if (!messages.is_array() || messages.empty()) {
    return tl::unexpected(wrong_type("messages", "a non-empty array of messages"));
  }
  std::vector<std::pair<std::string, std::string>> turns;
  for (const auto& m : messages) {
    const json* role = m.is_object() ? field(m, "role") : nullptr;
    if (role == nullptr || !role->is_string()) {
      return tl::unexpected(bad_request("every message needs a string 'role'", "messages"));
    }
    const auto r = role->get<std::string>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant") {
      return tl::unexpected(bad_request(
          fmt::format("message role '{}': expected system, user or assistant", r), "messages"));
    }
    std::string content;
    if (const json* c = field(m, "content")) {
      auto text = message_content(*c);
      if (!text) return tl::unexpected(text.error());
      content = std::move(*text);
    }
    turns.emplace_back(r == "developer" ? "system" : r, std::move(content));
  }
  return chat_prompt(turns);
}

/// A number parameter in [low, high] (`open_low`: excluding low), or its default.
tl::expected<float, http_error> number(const json& j, const char* name, double low, double high,
                                       bool open_low, float fallback) {
  const json* v = field(j, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) return tl::unexpected(wrong_type(name, "a number"));
  const double d = v->get<double>();
  if (d < low || (open_low && d == low) || d > high) {
    return tl::unexpected(bad_request(fmt::format("'{}' is {}; expected a number in {}{}, {}]",
                                                  name, d, open_low ? "(" : "[", low, high),
                                      name, "invalid_value"));
  }
  return static_cast<float>(d);
}

tl::expected<std::vector<std::string>, http_error> stop_strings(const json& j) {
  std::vector<std::string> out;
  const json* v = field(j, "stop");
  if (v == nullptr) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array() && v->size() <= max_stop_strings) {
    for (const auto& s : *v) {
      if (!s.is_string()) return tl::unexpected(wrong_type("stop", "a string or strings"));
      out.push_back(s.get<std::string>());
    }
  } else {
    return tl::unexpected(wrong_type("stop", "a string or an array of at most 4 strings"));
  }
  for (const auto& s : out) {
    if (s.empty() || s.size() > max_stop_bytes) {
      return tl::unexpected(
          bad_request(fmt::format("stop strings must have 1 to {} bytes", max_stop_bytes), "stop"));
    }
  }
  return out;
}

tl::expected<bool, http_error> boolean(const json& j, const char* name) {
  const json* v = field(j, name);
  if (v == nullptr) return false;
  if (!v->is_boolean()) return tl::unexpected(wrong_type(name, "a boolean"));
  return v->get<bool>();
}

parsed parse_generation(api kind, const std::string& body, const http_options& o) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return tl::unexpected(bad_request("the body is not valid JSON"));
  if (!j.is_object()) return tl::unexpected(bad_request("the body must be a JSON object"));
  static const std::vector<std::string> common = {"model",          "max_tokens", "temperature",
                                                  "top_p",          "seed",       "stream",
                                                  "stream_options", "stop",       "user"};
  for (const auto& [key, value] : j.items()) {
    const bool known = std::find(common.begin(), common.end(), key) != common.end() ||
                       (kind == api::completions && (key == "prompt" || key == "echo")) ||
                       (kind == api::chat && key == "messages");
    if (!known) {
      return tl::unexpected(
          bad_request(fmt::format("Unrecognized request argument supplied: {}", key), key,
                      "unknown_parameter"));
    }
  }
  generation g;
  g.kind = kind;
  const json* model = field(j, "model");
  if (model == nullptr) {
    return tl::unexpected(bad_request("you must provide a model parameter", "model"));
  }
  if (!model->is_string()) return tl::unexpected(wrong_type("model", "a string"));
  if (model->get<std::string>() != o.model) {
    return tl::unexpected(
        http_error{404,
                   fmt::format("The model '{}' does not exist; this server serves '{}'",
                               model->get<std::string>(), o.model),
                   "invalid_request_error", "model", "model_not_found"});
  }
  if (kind == api::completions) {
    const json* prompt = field(j, "prompt");
    if (prompt != nullptr && prompt->is_array() && prompt->size() == 1) prompt = &(*prompt)[0];
    if (prompt == nullptr || !prompt->is_string()) {
      return tl::unexpected(wrong_type("prompt", "a string (or an array of one string)"));
    }
    g.request.prompt = prompt->get<std::string>();
    auto echo = boolean(j, "echo");
    if (!echo) return tl::unexpected(echo.error());
    g.echo = *echo;
  } else {
    const json* messages = field(j, "messages");
    if (messages == nullptr) return tl::unexpected(wrong_type("messages", "an array of messages"));
    auto prompt = chat_prompt_of(*messages);
    if (!prompt) return tl::unexpected(prompt.error());
    g.request.prompt = std::move(*prompt);
  }
  if (g.request.prompt.size() > o.max_prompt_bytes) {
    return tl::unexpected(bad_request(fmt::format("the prompt has {} bytes; the limit is {}",
                                                  g.request.prompt.size(), o.max_prompt_bytes),
                                      kind == api::chat ? "messages" : "prompt",
                                      "context_length_exceeded"));
  }
  if (const json* v = field(j, "max_tokens")) {
    if (!v->is_number_integer()) return tl::unexpected(wrong_type("max_tokens", "an integer"));
    if (v->is_number_unsigned() ? v->get<std::uint64_t>() > o.max_tokens_limit
                                : v->get<std::int64_t>() < 0) {
      return tl::unexpected(
          bad_request(fmt::format("max_tokens is {}; expected an integer in [0, {}]", v->dump(),
                                  o.max_tokens_limit),
                      "max_tokens", "invalid_value"));
    }
    g.request.max_tokens = static_cast<std::uint32_t>(v->get<std::uint64_t>());
  }
  auto temperature = number(j, "temperature", 0, 2, false, 1.0f);
  if (!temperature) return tl::unexpected(temperature.error());
  auto top_p = number(j, "top_p", 0, 1, true, 1.0f);
  if (!top_p) return tl::unexpected(top_p.error());
  g.request.params.temperature = *temperature;
  g.request.params.top_p = *top_p;
  if (const json* v = field(j, "seed")) {
    if (!v->is_number_integer()) return tl::unexpected(wrong_type("seed", "an integer"));
    if (!v->is_number_unsigned()) {
      return tl::unexpected(bad_request("seed must not be negative", "seed", "invalid_value"));
    }
    g.request.params.seed = v->get<std::uint64_t>();
    g.request.has_seed = true;
  }
  auto stream = boolean(j, "stream");
  if (!stream) return tl::unexpected(stream.error());
  g.stream = *stream;
  if (const json* v = field(j, "stream_options")) {
    if (!v->is_object()) return tl::unexpected(wrong_type("stream_options", "an object"));
    for (const auto& [key, value] : v->items()) {
      if (key != "include_usage") {
        return tl::unexpected(bad_request(
            fmt::format("Unrecognized request argument supplied: stream_options.{}", key),
            "stream_options", "unknown_parameter"));
      }
    }
    auto usage = boolean(*v, "include_usage");
    if (!usage) return tl::unexpected(usage.error());
    g.include_usage = *usage;
  }
  if (const json* v = field(j, "user"); v != nullptr && !v->is_string()) {
    return tl::unexpected(wrong_type("user", "a string"));
  }
  auto stops = stop_strings(j);
  if (!stops) return tl::unexpected(stops.error());
  g.stops = std::move(*stops);
  return g;
}

// ---------------------------------------------------------------------------------------
// Streamed text: whole UTF-8 characters only, and never a piece of a stop string.

class text_filter {
 public:
  explicit text_filter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  /// Takes the next bytes; returns what may be sent now. `stopped` turns true when a stop
  /// string appeared: the text before it is returned and the rest is dropped.
  std::string feed(std::string_view bytes, bool& stopped) {
    pending_ += bytes;
    const std::size_t whole = complete_utf8_prefix(pending_);
    held_.append(pending_, 0, whole);
    pending_.erase(0, whole);
    std::size_t first = std::string::npos;
    for (const auto& s : stops_) first = std::min(first, held_.find(s));
    if (first != std::string::npos) {
      stopped = true;
      std::string out = held_.substr(0, first);
      held_.clear();
      pending_.clear();
      return out;
    }
    // Hold back the longest tail that may still grow into a stop string.
    std::size_t keep = 0;
    for (const auto& s : stops_) {
      for (std::size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
        if (std::string_view(held_).ends_with(std::string_view(s).substr(0, n))) {
          keep = n;
          break;
        }
      }
    }
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }

  /// At the end of the text: whatever was held back.
  std::string flush() {
    std::string out = std::move(held_);
    out += pending_;
    held_.clear();
    pending_.clear();
    return out;
  }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // the start of an incomplete UTF-8 character
  std::string held_;     // whole characters that may begin a stop string
};

// ---------------------------------------------------------------------------------------
// Server-wide state.

/// Prometheus series the HTTP layer adds to the node's registry text. io thread only.
struct http_metrics {
  static constexpr std::array<double, 14> bounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                    0.1,    0.2,   0.5,   1,     2,    5,    10};
  std::array<std::uint64_t, 600> by_status{};
  std::array<std::uint64_t, bounds.size() + 1> gap_counts{};
  double gap_sum = 0;

  void observe_gap(double seconds) {
    std::size_t i = 0;
    while (i < bounds.size() && seconds > bounds[i]) ++i;
    ++gap_counts[i];
    gap_sum += seconds;
  }

  [[nodiscard]] std::string text(std::uint64_t open, std::uint64_t connections) const {
    std::string out =
        "# HELP baton_http_requests_total HTTP requests answered, by status\n"
        "# TYPE baton_http_requests_total counter\n";
    for (std::size_t s = 0; s < by_status.size(); ++s) {
      if (by_status[s] != 0) {
        out += fmt::format("baton_http_requests_total{{code=\"{}\"}} {}\n", s, by_status[s]);
      }
    }
    out +=
        "# HELP baton_http_inter_token_seconds Time between two streamed pieces of one "
        "request\n# TYPE baton_http_inter_token_seconds histogram\n";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      cumulative += gap_counts[i];
      out += fmt::format("baton_http_inter_token_seconds_bucket{{le=\"{}\"}} {}\n", bounds[i],
                         cumulative);
    }
    cumulative += gap_counts.back();
    out += fmt::format(
        "baton_http_inter_token_seconds_bucket{{le=\"+Inf\"}} {}\n"
        "baton_http_inter_token_seconds_sum {}\nbaton_http_inter_token_seconds_count {}\n",
        cumulative, gap_sum, cumulative);
    out += fmt::format(
        "# HELP baton_http_generations_open Generation requests in progress\n"
        "# TYPE baton_http_generations_open gauge\nbaton_http_generations_open {}\n"
        "# HELP baton_http_connections_open HTTP connections open\n"
        "# TYPE baton_http_connections_open gauge\nbaton_http_connections_open {}\n",
        open, connections);
    return out;
  }
};

struct counters {
  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> generations_started{0};
  std::atomic<std::uint64_t> generations_open{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> client_errors{0};
  std::atomic<std::uint64_t> server_errors{0};
};

class session;

/// Lets streams hand work to the io thread until the server closes it at shutdown; after
/// close() nothing more reaches the io_context.
class gate {
 public:
  explicit gate(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  bool post(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    asio::post(executor_, std::move(fn));
    return true;
  }

  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }

 private:
  std::mutex mutex_;
  bool closed_ = false;
  asio::any_io_executor executor_;
};

/// What every session of one server shares; the server joins its thread before
/// destroying it.
struct server_core {
  http_options options;
  generate_handler& handler;
  counters stats;
  http_metrics metrics;  // io thread only
  std::atomic<std::uint64_t> next_stream_id{1};
  std::shared_ptr<gate> posts;
};

// ---------------------------------------------------------------------------------------
// The response_stream a router writes to.

class http_stream final : public response_stream, public std::enable_shared_from_this<http_stream> {
 public:
  http_stream(std::uint64_t id, std::shared_ptr<gate> posts, std::weak_ptr<session> owner,
              std::size_t max_queued_bytes)
      : id_(id),
        posts_(std::move(posts)),
        owner_(std::move(owner)),
        max_queued_(max_queued_bytes) {}

  [[nodiscard]] std::uint64_t id() const noexcept override { return id_; }
  [[nodiscard]] std::uint64_t client_tag() const noexcept override { return id_; }
  [[nodiscard]] std::size_t queued_bytes() const noexcept override { return queued_.load(); }
  [[nodiscard]] bool open() const noexcept override { return open_.load(); }

  bool send(response r) override;

  /// The server ends the request; true if it was still open (then the handler is told).
  bool end_by_server() {
    std::lock_guard lock(mutex_);
    return open_.exchange(false);
  }

  void add_queued(std::size_t bytes) noexcept { queued_.fetch_add(bytes); }
  void written(std::size_t bytes) noexcept { queued_.fetch_sub(bytes); }

 private:
  const std::uint64_t id_;
  const std::shared_ptr<gate> posts_;
  const std::weak_ptr<session> owner_;
  const std::size_t max_queued_;
  std::mutex mutex_;  // orders sends, so responses reach the io thread in send order
  std::atomic<bool> open_{true};
  std::atomic<std::size_t> queued_{0};
};

/// What a message costs in the stream's queue until the io thread turns it into bytes.
std::size_t queue_cost(const response& r) {
  if (const auto* t = std::get_if<wire::token_chunk>(&r)) return 256 + 2 * t->text.size();
  return 256;
}

// ---------------------------------------------------------------------------------------
// One connection.

const char* finish_reason_name(wire::finish_reason r) {
  return r == wire::finish_reason::length ? "length" : "stop";
}

/// One generation request in progress on a session.
struct exchange {
  exchange(generation gen, std::shared_ptr<http_stream> s)
      : g(std::move(gen)), stream(std::move(s)), filter(g.stops) {}

  generation g;
  std::shared_ptr<http_stream> stream;
  text_filter filter;
  std::string id;
  std::int64_t created = 0;
  bool accepted = false;
  bool headers_sent = false;
  wire::accepted acc;
  std::string text;  // not streamed: the whole answer
  std::uint32_t completion_tokens = 0;
  std::optional<steady::time_point> last_piece;
};

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, server_core& core)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), core_(core) {}
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  void start() {
    counted_ = true;
    read_request();
  }

  /// Over max_connections: 429, then closed.
  void refuse() {
    keep_alive_ = false;
    respond_error({429,
                   fmt::format("{} connections open, the limit", core_.options.max_connections),
                   "rate_limit_error",
                   {},
                   "overloaded"});
  }

  /// Ends the open request (telling the handler why) and closes the connection.
  void close(cancel_reason why) {
    if (closed_) return;
    closed_ = true;
    end_exchange(why);
    error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (counted_) core_.stats.connections_open.fetch_sub(1);
  }

  /// A message from the router for `stream`, on the io thread.
  void on_response(const std::shared_ptr<http_stream>& stream, response r) {
    if (closed_ || !current_ || current_->stream != stream) return;
    std::visit([this](auto& m) { on_message(m); }, r);
  }

  /// `stream` hit max_queued_bytes_per_stream: the client reads too slowly; give up on it.
  void on_slow(const std::shared_ptr<http_stream>& stream) {
    if (closed_ || !current_ || current_->stream != stream) return;
    current_->stream.reset();  // already ended: only the handler is told
    core_.stats.cancelled.fetch_add(1);
    core_.handler.cancel(*stream, cancel_reason::slow_reader);
    close(cancel_reason::slow_reader);
  }

 private:
  // --- reading requests

  void read_request() {
    if (closed_ || finishing_) return;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(core_.options.max_header_bytes));
    parser_->body_limit(core_.options.max_body_bytes);
    waiting_ = true;
    timer_.expires_after(std::chrono::milliseconds(core_.options.idle_timeout_ms));
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && self->waiting_) self->close(cancel_reason::disconnected);
    });
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (ec) return read_failed(ec);
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      write_raw("HTTP/1.1 100 Continue\r\n\r\n", nullptr);
    }
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](error_code e, std::size_t) { self->on_body(e); });
  }

  void on_body(error_code ec) {
    if (ec) return read_failed(ec);
    waiting_ = false;
    timer_.cancel();
    handle(parser_->release());
  }

  void read_failed(error_code ec) {
    waiting_ = false;
    timer_.cancel();
    if (closed_) return;
    keep_alive_ = false;
    if (ec == http::error::body_limit) {
      return respond_error(
          {413,
           fmt::format("the request body is larger than {} bytes", core_.options.max_body_bytes),
           "invalid_request_error",
           {},
           "request_too_large"});
    }
    if (ec == http::error::header_limit) {
      return respond_error({431,
                            "the request headers are too large",
                            "invalid_request_error",
                            {},
                            "headers_too_large"});
    }
    if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return respond_error(bad_request(fmt::format("malformed HTTP request: {}", ec.message())));
    }
    close(cancel_reason::disconnected);
  }

  /// While a request runs: reads ahead, so that a client that goes away is noticed.
  void watch() {
    if (watching_ || closed_ || buffer_.size() >= lookahead_max_bytes) return;
    watching_ = true;
    socket_.async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](error_code ec, std::size_t n) { self->on_watched(ec, n); });
  }

  void on_watched(error_code ec, std::size_t n) {
    watching_ = false;
    buffer_.commit(n);
    if (closed_) return;
    if (ec) return close(cancel_reason::disconnected);
    if (current_) return watch();
    if (next_wanted_) {
      next_wanted_ = false;
      read_request();
    }
  }

  // --- dispatch

  void handle(http::request<http::string_body> req) {
    core_.stats.requests.fetch_add(1);
    keep_alive_ = req.keep_alive();
    http11_ = req.version() == 11;
    auto target = std::string_view(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    const auto method = req.method();
    const auto verb_name = [](http::verb v) {
      const auto name = http::to_string(v);
      return std::string(name.data(), name.size());
    };
    const auto only = [&](http::verb v) {
      if (method == v) return true;
      respond_error({405,
                     fmt::format("{} takes {} only", target, verb_name(v)),
                     "invalid_request_error",
                     {},
                     "method_not_allowed"});
      return false;
    };
    if (target == "/v1/completions" || target == "/v1/chat/completions") {
      if (!only(http::verb::post)) return;
      return start_generation(target == "/v1/completions" ? api::completions : api::chat,
                              req.body());
    }
    if (target == "/health") {
      if (!only(http::verb::get)) return;
      const bool ok = healthy();
      return respond(ok ? 200 : 503, "application/json",
                     fmt::format("{{\"status\":\"{}\"}}\n", ok ? "ok" : "unavailable"));
    }
    if (target == "/metrics") {
      if (!only(http::verb::get)) return;
      std::string text = core_.options.metrics_text ? core_.options.metrics_text() : "";
      text += core_.metrics.text(core_.stats.generations_open.load(),
                                 core_.stats.connections_open.load());
      return respond(200, "text/plain; version=0.0.4", std::move(text));
    }
    if (target == "/v1/models" ||
        (target.starts_with("/v1/models/") && target.substr(11) == core_.options.model)) {
      if (!only(http::verb::get)) return;
      json model = {
          {"id", core_.options.model}, {"object", "model"}, {"created", 0}, {"owned_by", "baton"}};
      if (target != "/v1/models") return respond(200, "application/json", dump(model));
      return respond(200, "application/json",
                     dump({{"object", "list"}, {"data", json::array({model})}}));
    }
    if (target.starts_with("/v1/models/")) {
      return respond_error({404,
                            fmt::format("The model '{}' does not exist",
                                        target.substr(std::string_view("/v1/models/").size())),
                            "invalid_request_error", "model", "model_not_found"});
    }
    respond_error({404,
                   fmt::format("no route for {} {}", verb_name(method), target),
                   "invalid_request_error",
                   {},
                   "not_found"});
  }

  bool healthy() const { return !core_.options.healthy || core_.options.healthy(); }

  void start_generation(api kind, const std::string& body) {
    auto g = parse_generation(kind, body, core_.options);
    if (!g) return respond_error(g.error());
    if (!healthy()) {
      return respond_error(
          {503, "the router is not running", "service_unavailable", {}, "unavailable"});
    }
    if (core_.stats.generations_open.load() >= core_.options.max_open_requests) {
      return respond_error(
          {429,
           fmt::format("{} requests in progress, the limit", core_.options.max_open_requests),
           "rate_limit_error",
           {},
           "overloaded"});
    }
    const auto id = core_.next_stream_id.fetch_add(1);
    auto stream = std::make_shared<http_stream>(id, core_.posts, weak_from_this(),
                                                core_.options.max_queued_bytes_per_stream);
    g->request.client_tag = id;
    g->request.timeout_ms = core_.options.default_timeout_ms;
    current_ = std::make_unique<exchange>(std::move(*g), stream);
    current_->id = fmt::format("{}-{}", kind == api::chat ? "chatcmpl" : "cmpl", id);
    current_->created = static_cast<std::int64_t>(std::time(nullptr));
    core_.stats.generations_started.fetch_add(1);
    core_.stats.generations_open.fetch_add(1);
    watch();
    arm_deadline(id);
    core_.handler.start(current_->g.request, std::move(stream));
  }

  /// Ends the request with 504 if the router says nothing more by its deadline.
  void arm_deadline(std::uint64_t id) {
    timer_.expires_after(std::chrono::milliseconds(core_.options.default_timeout_ms) +
                         deadline_grace);
    timer_.async_wait([self = shared_from_this(), id](error_code ec) {
      auto& s = *self;
      if (ec || s.closed_ || !s.current_ || s.current_->stream->id() != id) return;
      spdlog::warn("http: request {} heard nothing from the router by its deadline", id);
      if (s.current_->stream->end_by_server()) {
        s.core_.stats.cancelled.fetch_add(1);
        s.core_.handler.cancel(*s.current_->stream, cancel_reason::client_cancelled);
      }
      s.on_message(wire::rejected{id, errc::timed_out, "the router did not answer in time"});
    });
  }

  // --- the router's messages

  void on_message(const wire::accepted& a) {
    auto& ex = *current_;
    ex.accepted = true;
    ex.acc = a;
    if (!ex.g.stream) {
      if (ex.g.echo) ex.text = a.prompt_text;
      return;
    }
    ex.headers_sent = true;
    count_status(200);
    write_raw(fmt::format("HTTP/1.1 200 OK\r\nServer: baton\r\nContent-Type: text/event-stream\r\n"
                          "Cache-Control: no-cache\r\n{}Connection: {}\r\n\r\n",
                          http11_ ? "Transfer-Encoding: chunked\r\n" : "",
                          keep_alive_ && http11_ ? "keep-alive" : "close"),
              nullptr);
    // The first chunk: the role (chat) or the echoed prompt, and where the request runs.
    json first = chunk(ex.g.kind == api::chat ? json{{"role", "assistant"}, {"content", ""}}
                                              : json(ex.g.echo ? a.prompt_text : ""),
                       nullptr);
    first["baton"] = extension(ex);
    write_event(dump(first));
  }

  void on_message(const wire::token_chunk& t) {
    auto& ex = *current_;
    ex.completion_tokens += static_cast<std::uint32_t>(t.tokens.size());
    bool stopped = false;
    emit(ex.filter.feed(t.text, stopped));
    if (!stopped) return;
    // A stop string: the rest of the generation is not wanted.
    if (ex.stream->end_by_server()) {
      core_.stats.cancelled.fetch_add(1);
      core_.handler.cancel(*ex.stream, cancel_reason::client_cancelled);
    }
    complete("stop", ex.acc.prompt_tokens, ex.completion_tokens);
  }

  void on_message(const wire::finished& f) {
    auto& ex = *current_;
    emit(ex.filter.flush());
    complete(finish_reason_name(f.reason),
             f.prompt_tokens != 0 ? f.prompt_tokens : ex.acc.prompt_tokens,
             std::max(f.completion_tokens, ex.completion_tokens));
  }

  void on_message(const wire::rejected& r) {
    auto& ex = *current_;
    const auto e = from_rejection(r.code, r.message);
    if (!ex.headers_sent) {
      end_exchange(std::nullopt);
      return respond_error(e);
    }
    count_status(e.status);  // the 200 was sent already; counted once more, as the failure
    write_event(dump(error_json(e)));
    write_event("[DONE]");
    end_exchange(std::nullopt);
    end_body();
  }

  /// Sends (or, not streamed, keeps) the next piece of text.
  void emit(const std::string& text) {
    auto& ex = *current_;
    if (text.empty()) return;
    const auto now = steady::now();
    if (ex.last_piece) {
      core_.metrics.observe_gap(std::chrono::duration<double>(now - *ex.last_piece).count());
    }
    ex.last_piece = now;
    if (!ex.g.stream) {
      ex.text += text;
      return;
    }
    write_event(
        dump(chunk(ex.g.kind == api::chat ? json{{"content", text}} : json(text), nullptr)));
  }

  /// The generation ended with `reason`: the last chunks, or the whole answer.
  void complete(const char* reason, std::uint32_t prompt_tokens, std::uint32_t completion) {
    auto& ex = *current_;
    const json usage = {{"prompt_tokens", prompt_tokens},
                        {"completion_tokens", completion},
                        {"total_tokens", prompt_tokens + completion}};
    if (!ex.g.stream) {
      json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", reason}};
      if (ex.g.kind == api::chat) {
        choice["message"] = {{"role", "assistant"}, {"content", ex.text}};
      } else {
        choice["text"] = ex.text;
      }
      json body = {{"id", ex.id},
                   {"object", ex.g.kind == api::chat ? "chat.completion" : "text_completion"},
                   {"created", ex.created},
                   {"model", core_.options.model},
                   {"system_fingerprint", "baton"},
                   {"choices", json::array({choice})},
                   {"usage", usage},
                   {"baton", extension(ex)}};
      end_exchange(std::nullopt);
      return respond(200, "application/json", dump(body));
    }
    write_event(dump(chunk(ex.g.kind == api::chat ? json::object() : json(""), reason)));
    if (ex.g.include_usage) {
      json last = chunk(nullptr, nullptr);
      last["choices"] = json::array();
      last["usage"] = usage;
      write_event(dump(last));
    }
    write_event("[DONE]");
    end_exchange(std::nullopt);
    end_body();
  }

  /// A streamed chunk carrying `piece` (chat: the delta; completions: the text).
  json chunk(const json& piece, const char* reason) const {
    const auto& ex = *current_;
    json choice = {{"index", 0},
                   {"logprobs", nullptr},
                   {"finish_reason", reason == nullptr ? json(nullptr) : json(reason)}};
    choice[ex.g.kind == api::chat ? "delta" : "text"] = piece;
    json c = {{"id", ex.id},
              {"object", ex.g.kind == api::chat ? "chat.completion.chunk" : "text_completion"},
              {"created", ex.created},
              {"model", core_.options.model},
              {"system_fingerprint", "baton"},
              {"choices", json::array({choice})}};
    if (ex.g.include_usage) c["usage"] = nullptr;
    return c;
  }

  static json extension(const exchange& ex) {
    return {{"request_id", static_cast<std::uint64_t>(ex.acc.request)},
            {"seed", ex.acc.seed},
            {"placement", ex.acc.placement},
            {"prefill_node", ex.acc.prefill_node},
            {"decode_node", ex.acc.decode_node}};
  }

  /// Forgets the current request; with `why`, ends it on the handler's side too.
  void end_exchange(std::optional<cancel_reason> why) {
    if (!current_) return;
    auto ex = std::move(current_);
    core_.stats.generations_open.fetch_sub(1);
    if (why && ex->stream && ex->stream->end_by_server()) {
      core_.stats.cancelled.fetch_add(1);
      core_.handler.cancel(*ex->stream, *why);
    }
  }

  // --- writing

  void write_event(const std::string& data) {
    const std::string event = fmt::format("data: {}\n\n", data);
    if (!http11_) return write_raw(event, current_ ? current_->stream : nullptr);
    write_raw(fmt::format("{:x}\r\n{}\r\n", event.size(), event),
              current_ ? current_->stream : nullptr);
  }

  /// After a streamed body: the last chunk, then the next request (or the close).
  void end_body() {
    if (http11_) write_raw("0\r\n\r\n", nullptr);
    next_request();
  }

  void respond(unsigned status, const char* type, std::string body) {
    count_status(status);
    http::response<http::string_body> res(static_cast<http::status>(status), http11_ ? 11 : 10);
    res.set(http::field::server, "baton");
    res.set(http::field::content_type, type);
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream out;
    out << res;
    write_raw(out.str(), nullptr);
    next_request();
  }

  void respond_error(const http_error& e) {
    respond(e.status, "application/json", fmt::format("{}\n", dump(error_json(e))));
  }

  void count_status(unsigned status) {
    if (status < core_.metrics.by_status.size()) ++core_.metrics.by_status[status];
    if (status >= 500) {
      core_.stats.server_errors.fetch_add(1);
    } else if (status >= 400) {
      core_.stats.client_errors.fetch_add(1);
    }
  }

  /// The answer is queued: read the next request, or close once everything is written.
  void next_request() {
    if (!keep_alive_) {
      finishing_ = true;
      if (out_.empty() && !writing_) linger();
      return;
    }
    if (watching_) {
      next_wanted_ = true;  // on_watched reads it
    } else {
      read_request();
    }
  }

  struct pending {
    std::string bytes;
    std::shared_ptr<http_stream> owner;
  };

  void write_raw(std::string bytes, std::shared_ptr<http_stream> owner) {
    if (closed_) return;
    if (owner) owner->add_queued(bytes.size());
    out_.push_back({std::move(bytes), std::move(owner)});
    if (!writing_) write_next();
  }

  void write_next() {
    writing_ = true;
    asio::async_write(
        socket_, asio::buffer(out_.front().bytes),
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_written(ec); });
  }

  void on_written(error_code ec) {
    writing_ = false;
    auto done = std::move(out_.front());
    out_.pop_front();
    if (done.owner) done.owner->written(done.bytes.size());
    if (closed_) return;
    if (ec) return close(cancel_reason::disconnected);
    if (!out_.empty()) return write_next();
    if (finishing_) linger();
  }

  /// Half-closes, then discards what the client still sends until it closes too (or a
  /// bound passes), so that our last answer is not lost to a connection reset.
  void linger() {
    if (lingering_ || closed_) return;
    lingering_ = true;
    end_exchange(cancel_reason::disconnected);
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    timer_.expires_after(linger_time);
    timer_.async_wait([self = shared_from_this()](error_code e) {
      if (!e) self->close(cancel_reason::disconnected);
    });
    if (!watching_) drain();
  }

  void drain() {
    socket_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > linger_max_bytes) {
                                return self->close(cancel_reason::disconnected);
                              }
                              self->drain();
                            });
  }

  tcp::socket socket_;
  asio::steady_timer timer_;  // idle timeout, then the linger bound
  server_core& core_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<exchange> current_;
  std::deque<pending> out_;
  std::array<char, 16384> scratch_{};
  std::size_t drained_ = 0;
  bool counted_ = false;
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

bool http_stream::send(response r) {
  const bool final =
      std::holds_alternative<wire::finished>(r) || std::holds_alternative<wire::rejected>(r);
  const std::size_t cost = queue_cost(r);
  std::lock_guard lock(mutex_);
  if (!open_.load()) return false;
  if (!final && queued_.load() + cost > max_queued_) {
    open_.store(false);
    (void)posts_->post([owner = owner_, self = shared_from_this()] {
      if (auto s = owner.lock()) s->on_slow(self);
    });
    return false;
  }
  queued_.fetch_add(cost);
  const bool posted =
      posts_->post([owner = owner_, self = shared_from_this(), r = std::move(r), cost]() mutable {
        self->written(cost);
        if (auto s = owner.lock()) s->on_response(self, std::move(r));
      });
  if (!posted) {
    queued_.fetch_sub(cost);
    open_.store(false);
    return false;
  }
  if (final) open_.store(false);
  return true;
}

// ---------------------------------------------------------------------------------------

class server_impl final : public http_server {
 public:
  server_impl(http_options options, generate_handler& handler)
      : core_{std::move(options), handler, {}, {}, {1}, nullptr} {
    core_.posts = std::make_shared<gate>(server_.io().get_executor());
  }

  expected<void> listen() {
    return server_.listen(core_.options.address,
                          [this](tcp::socket socket) { on_accept(std::move(socket)); });
  }

  ~server_impl() override {
    server_.stop([this] {
      for (auto& [ptr, weak] : sessions_) {
        if (auto s = weak.lock()) s->close(cancel_reason::server_stopping);
      }
      core_.posts->close();
    });
  }

  [[nodiscard]] std::uint16_t local_port() const override { return server_.port(); }

  [[nodiscard]] http_stats stats() const override {
    const auto& c = core_.stats;
    return {c.connections_accepted.load(), c.connections_open.load(), c.requests.load(),
            c.generations_started.load(),  c.generations_open.load(), c.cancelled.load(),
            c.client_errors.load(),        c.server_errors.load()};
  }

 private:
  void on_accept(tcp::socket socket) {
    std::erase_if(sessions_, [](const auto& entry) { return entry.second.expired(); });
    auto s = std::make_shared<session>(std::move(socket), core_);
    sessions_.emplace(s.get(), s);
    if (core_.stats.connections_open.load() >= core_.options.max_connections) {
      s->refuse();
      return;
    }
    core_.stats.connections_accepted.fetch_add(1);
    core_.stats.connections_open.fetch_add(1);
    s->start();
  }

  server_core core_;
  std::unordered_map<session*, std::weak_ptr<session>> sessions_;  // io thread only
  detail::acceptor_thread server_{"http"};                         // last: its thread stops first
};

}  // namespace

std::string chat_prompt(const std::vector<std::pair<std::string, std::string>>& role_and_content) {
  std::string out;
  for (const auto& [role, content] : role_and_content) {
    const char* name = role == "system" ? "System" : role == "assistant" ? "Assistant" : "User";
    out += fmt::format("{}: {}\n", name, content);
  }
  out += "Assistant:";
  return out;
}

std::size_t complete_utf8_prefix(std::string_view bytes) noexcept {
  const std::size_t n = bytes.size();
  for (std::size_t back = 1; back <= std::min<std::size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const std::size_t need = c < 0x80             ? 1
                             : (c & 0xE0) == 0xC0 ? 2
                             : (c & 0xF0) == 0xE0 ? 3
                             : (c & 0xF8) == 0xF0 ? 4
                                                  : 1;  // not a lead byte: nothing to wait for
    return back >= need ? n : n - back;
  }
  return n;  // only continuation bytes: invalid, and nothing will complete them
}

expected<std::unique_ptr<http_server>> http_server::start(http_options options,
                                                          generate_handler& handler) {
  if (options.max_connections == 0 || options.max_open_requests == 0 ||
      options.max_body_bytes == 0 || options.max_queued_bytes_per_stream == 0 ||
      options.idle_timeout_ms == 0) {
    return fail(errc::invalid_argument, "http server: every limit must be positive");
  }
  if (options.model.empty()) return fail(errc::invalid_argument, "http server: no model id");
  auto server = std::make_unique<server_impl>(std::move(options), handler);
  if (auto ok = server->listen(); !ok) return tl::unexpected(ok.error());
  return server;
}

}  // namespace baton::client
