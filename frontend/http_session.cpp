#include "frontend/http_session.hpp"

#include <ctime>
#include <exception>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace baton::frontend::detail {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using steady = std::chrono::steady_clock;

/// How long a closing connection keeps reading (and discarding) what the client still
/// sends, so that the kernel does not reset it before the client read our answer.
constexpr auto linger_time = std::chrono::seconds(2);
constexpr std::size_t linger_max_bytes = 16u << 20;
/// What a client may send ahead (a pipelined request) while its request runs; past this
/// the server stops watching the connection for a disconnect until the request ends.
constexpr std::size_t lookahead_max_bytes = 64u << 10;
/// Past its deadline the router answers timed_out itself; the server waits this much longer
/// before it gives up on a router that went quiet (one that restarted, say).
constexpr auto deadline_grace = std::chrono::seconds(5);

const char* finish_reason_name(wire::finish_reason r) {
  return r == wire::finish_reason::length ? "length" : "stop";
}

}  // namespace

void http_metrics::observe_gap(double seconds) {
  std::size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  ++gap_counts[i];
  gap_sum += seconds;
}

std::string http_metrics::text(const http_stats& stats) const {
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
      "# HELP baton_http_auth_failures_total Requests refused 401: no API key, a wrong one, or "
      "one sent over plain TCP from another host\n"
      "# TYPE baton_http_auth_failures_total counter\nbaton_http_auth_failures_total {}\n"
      "# HELP baton_http_key_limited_total Requests refused 429 by their API key's own limits\n"
      "# TYPE baton_http_key_limited_total counter\nbaton_http_key_limited_total {}\n"
      "# HELP baton_http_tls_handshake_failures_total TLS handshakes that failed or timed out\n"
      "# TYPE baton_http_tls_handshake_failures_total counter\n"
      "baton_http_tls_handshake_failures_total {}\n",
      auth_failures, key_limited, tls_failures);
  out += fmt::format(
      "# HELP baton_http_generations_open Generation requests in progress\n"
      "# TYPE baton_http_generations_open gauge\nbaton_http_generations_open {}\n"
      "# HELP baton_http_connections_open HTTP connections open\n"
      "# TYPE baton_http_connections_open gauge\nbaton_http_connections_open {}\n"
      "# HELP baton_http_handler_failures_total Requests ended by a failure inside the server "
      "or the router (each logged)\n"
      "# TYPE baton_http_handler_failures_total counter\nbaton_http_handler_failures_total {}\n",
      stats.generations_open, stats.connections_open, stats.handler_failures);
  return out;
}

http_stats http_counters::snapshot() const {
  return {connections_accepted.load(), connections_open.load(), requests.load(),
          generations_started.load(),  generations_open.load(), cancelled.load(),
          client_errors.load(),        server_errors.load(),    handler_failures.load()};
}

http_session::http_session(connection conn, http_core& core)
    : conn_(std::move(conn)),
      peer_(detail::peer_address(conn_.lowest())),
      timer_(conn_.get_executor()),
      core_(core) {}

void http_session::start() {
  counted_ = true;
  if (!conn_.secure()) return read_request();
  // The handshake is bounded as the headers are: a client that says nothing is cut off.
  waiting_ = true;
  wait_at_most(core_.options.header_timeout_ms);
  conn_.handshake([self = shared_from_this()](error_code ec) {
    auto& s = *self;
    s.waiting_ = false;
    s.timer_.cancel();
    if (ec) {  // a failure, or cut off by the deadline (closed already)
      ++s.core_.metrics.tls_failures;
      return s.close(cancel_reason::disconnected);
    }
    if (!s.closed_) s.read_request();
  });
}

void http_session::refuse(const std::string& why) {
  keep_alive_ = false;
  // Over TLS an answer needs a handshake first, which an overloaded server should not
  // spend: the connection is just closed.
  if (conn_.secure()) return close(cancel_reason::server_stopping);
  respond_error({429, why, "rate_limit_error", {}, "overloaded"});
}

void http_session::close(cancel_reason why) {
  if (closed_) return;
  closed_ = true;
  end_exchange(why);
  error_code ignored;
  timer_.cancel();
  conn_.lowest().shutdown(tcp::socket::shutdown_both, ignored);
  conn_.lowest().close(ignored);
  if (counted_) {
    core_.stats.connections_open.fetch_sub(1);
    core_.connections->release(peer_);
  }
}

// --- the failure boundary

template <class F>
void http_session::guarded(const char* where, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    failed(where, e.what());
  } catch (...) {
    failed(where, "an exception that is not a std::exception");
  }
}

void http_session::failed(const char* where, const char* what) {
  core_.stats.handler_failures.fetch_add(1);
  spdlog::error("http: {} failed: {}; ending the connection with 500", where, what);
  try {
    const bool answer = !closed_ && !finishing_ && !(current_ && current_->headers_sent);
    end_exchange(cancel_reason::failed);
    if (answer) {
      keep_alive_ = false;
      return respond_error(
          {500, "the server failed handling this request", "server_error", {}, "internal_error"});
    }
  } catch (...) {  // NOLINT(bugprone-empty-catch): nothing is left to answer with
  }
  close(cancel_reason::failed);
}

// --- reading requests

void http_session::read_request() {
  if (closed_ || finishing_) return;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(core_.options.max_header_bytes));
  parser_->body_limit(core_.options.max_body_bytes);
  waiting_ = true;
  wait_at_most(core_.options.header_timeout_ms);
  http::async_read_header(
      conn_, buffer_, *parser_,
      [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
}

void http_session::wait_at_most(std::uint32_t ms) {
  timer_.expires_after(std::chrono::milliseconds(ms));
  timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec && self->waiting_) self->close(cancel_reason::disconnected);
  });
}

void http_session::on_header(error_code ec) {
  if (ec) return read_failed(ec);
  wait_at_most(core_.options.idle_timeout_ms);  // for the body
  const auto& req = parser_->get();
  if (beast::iequals(req[http::field::expect], "100-continue")) {
    write_raw("HTTP/1.1 100 Continue\r\n\r\n", nullptr);
  }
  http::async_read(conn_, buffer_, *parser_,
                   [self = shared_from_this()](error_code e, std::size_t) { self->on_body(e); });
}

void http_session::on_body(error_code ec) {
  if (ec) return read_failed(ec);
  waiting_ = false;
  timer_.cancel();
  guarded("a request", [&] { handle(parser_->release()); });
}

void http_session::read_failed(error_code ec) {
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

void http_session::watch() {
  if (watching_ || closed_ || buffer_.size() >= lookahead_max_bytes) return;
  watching_ = true;
  conn_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](error_code ec, std::size_t n) { self->on_watched(ec, n); });
}

void http_session::on_watched(error_code ec, std::size_t n) {
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

void http_session::handle(http::request<http::string_body> req) {
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
  const auto& model = core_.options.model;
  const auto authorization = req[http::field::authorization];
  const std::string_view presented(authorization.data(), authorization.size());
  if (target.starts_with("/v1/") && !authorized(presented)) return;
  if (target == "/v1/completions" || target == "/v1/chat/completions") {
    if (!only(http::verb::post)) return;
    return start_generation(target == "/v1/completions" ? api_kind::completions : api_kind::chat,
                            req.body(), presented);
  }
  if (target == "/health") {
    if (!only(http::verb::get)) return;
    const bool ok = !core_.options.healthy || core_.options.healthy();
    return respond(ok ? 200 : 503, "application/json",
                   fmt::format("{{\"status\":\"{}\"}}\n", ok ? "ok" : "unavailable"));
  }
  if (target == "/metrics") {
    if (!only(http::verb::get)) return;
    std::string text = core_.options.metrics_text ? core_.options.metrics_text() : "";
    text += core_.metrics.text(core_.stats.snapshot());
    if (core_.keys) {
      text += fmt::format(
          "# HELP baton_http_api_key_reloads_total Reloads of the API keys file, by outcome\n"
          "# TYPE baton_http_api_key_reloads_total counter\n"
          "baton_http_api_key_reloads_total{{outcome=\"loaded\"}} {}\n"
          "baton_http_api_key_reloads_total{{outcome=\"refused\"}} {}\n",
          core_.keys->reloads(), core_.keys->reload_failures());
    }
    return respond(200, "text/plain; version=0.0.4", std::move(text));
  }
  if (target == "/v1/models" || (target.starts_with("/v1/models/") && target.substr(11) == model)) {
    if (!only(http::verb::get)) return;
    return respond(200, "application/json", model_body(model, target == "/v1/models"));
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

bool http_session::authorized(std::string_view authorization) {
  if (!core_.keys) return true;
  const auto v = core_.keys->check(authorization, trusted_channel(), steady::now());
  if (v.what == key_verdict::kind::admitted) return true;
  ++core_.metrics.auth_failures;
  respond_error({401, v.message, "invalid_request_error", {}, "invalid_api_key"},
                {http::field::www_authenticate, "Bearer"});
  return false;
}

void http_session::start_generation(api_kind kind, const std::string& body,
                                    std::string_view authorization) {
  auto parsed = parse_openai_request(kind, body, core_.limits);
  if (!parsed) return respond_error(parsed.error());
  if (core_.options.healthy && !core_.options.healthy()) {
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
  std::string key;
  if (core_.keys) {  // authorized() passed: only the key's limits can refuse it now
    const auto v = core_.keys->admit(authorization, trusted_channel(), steady::now());
    if (v.what == key_verdict::kind::limited) {
      ++core_.metrics.key_limited;
      return respond_error({429, v.message, "requests", {}, "rate_limit_exceeded"},
                           {http::field::retry_after, std::to_string(v.retry_after_s)});
    }
    key = v.name;
  }
  const auto id = core_.next_stream_id.fetch_add(1);
  auto stream = std::make_shared<bounded_stream>(id, id, core_.gate, weak_from_this(),
                                                 core_.options.max_queued_bytes_per_stream);
  parsed->request.client_tag = id;
  parsed->request.timeout_ms = core_.options.default_timeout_ms;
  current_ = std::make_unique<exchange>(std::move(*parsed), stream);
  current_->key = std::move(key);
  auto& c = current_->context;
  c.kind = kind;
  c.id = fmt::format("{}-{}", kind == api_kind::chat ? "chatcmpl" : "cmpl", id);
  c.created = static_cast<std::int64_t>(std::time(nullptr));
  c.model = core_.options.model;
  c.include_usage = current_->request.include_usage;
  c.logprobs = current_->request.request.params.logprobs;
  core_.stats.generations_started.fetch_add(1);
  core_.stats.generations_open.fetch_add(1);
  watch();
  arm_deadline(id);
  core_.handler.start(current_->request.request, std::move(stream));
}

void http_session::arm_deadline(std::uint64_t id) {
  timer_.expires_after(std::chrono::milliseconds(core_.options.default_timeout_ms) +
                       deadline_grace);
  timer_.async_wait([self = shared_from_this(), id](error_code ec) {
    auto& s = *self;
    if (ec || s.closed_ || !s.current_ || s.current_->stream->id() != id) return;
    s.guarded("a request's deadline", [&] {
      spdlog::warn("http: request {} heard nothing from the router by its deadline", id);
      if (s.current_->stream->end_by_server()) {
        s.core_.stats.cancelled.fetch_add(1);
        s.core_.handler.cancel(*s.current_->stream, cancel_reason::client_cancelled);
      }
      s.on_message(wire::rejected{id, errc::timed_out, "the router did not answer in time"});
    });
  });
}

// --- the router's messages

void http_session::on_response(const std::shared_ptr<bounded_stream>& stream, response r) {
  if (closed_ || !current_ || current_->stream != stream) return;
  guarded("a router message", [&] { std::visit([this](auto& m) { on_message(m); }, r); });
}

void http_session::on_slow(const std::shared_ptr<bounded_stream>& stream) {
  if (closed_ || !current_ || current_->stream != stream) return;
  current_->stream.reset();  // already ended: only the handler is told
  core_.stats.cancelled.fetch_add(1);
  guarded("a slow reader", [&] { core_.handler.cancel(*stream, cancel_reason::slow_reader); });
  close(cancel_reason::slow_reader);
}

void http_session::on_message(const wire::accepted& a) {
  auto& ex = *current_;
  ex.accepted = true;
  ex.context.accepted = a;
  if (!ex.request.stream) {
    if (ex.request.echo) {
      for (auto& c : ex.choices) c.answer.text = a.prompt_text;
    }
    return;
  }
  ex.headers_sent = true;
  count_status(200);
  write_raw(fmt::format("HTTP/1.1 200 OK\r\nServer: baton\r\nContent-Type: text/event-stream\r\n"
                        "Cache-Control: no-cache\r\n{}Connection: {}\r\n\r\n",
                        http11_ ? "Transfer-Encoding: chunked\r\n" : "",
                        keep_alive_ && http11_ ? "keep-alive" : "close"),
            nullptr);
  for (std::uint32_t c = 0; c < ex.choices.size(); ++c) {
    write_event(first_chunk(ex.context, c, ex.request.echo));
  }
}

void http_session::on_message(const wire::token_chunk& t) {
  auto& ex = *current_;
  if (t.choice >= ex.choices.size() || ex.choices[t.choice].reason) return;  // ended by a stop
  auto& choice = ex.choices[t.choice];
  const auto n = static_cast<std::uint32_t>(t.tokens.size());
  choice.tokens += n;
  ex.completion_tokens += n;
  bool stopped = false;
  // As vLLM does, stop strings apply once min_tokens tokens were generated.
  const bool may_stop = choice.tokens >= ex.request.request.params.min_tokens;
  emit(t.choice, choice.filter.feed(t.text, stopped, may_stop), t.logprobs);
  if (stopped) return end_choice(t.choice, "stop");
  if (t.finish) {
    emit(t.choice, choice.filter.flush());
    end_choice(t.choice, finish_reason_name(*t.finish));
  }
}

void http_session::on_message(const wire::finished& f) {
  auto& ex = *current_;
  ex.completion_tokens = std::max(f.completion_tokens, ex.completion_tokens);
  // A request of one choice ends with finished alone; of several, each ended already.
  for (std::uint32_t c = 0; current_ && c < ex.choices.size(); ++c) {
    if (ex.choices[c].reason) continue;
    emit(c, ex.choices[c].filter.flush());
    end_choice(c, finish_reason_name(f.reason));
  }
}

void http_session::on_message(const wire::rejected& r) {
  auto& ex = *current_;
  const auto e = from_rejection(r.code, r.message);
  if (!ex.headers_sent) {
    end_exchange(std::nullopt);
    return respond_error(e);
  }
  count_status(e.status);  // the 200 was sent already; counted once more, as the failure
  std::string body = error_body(e);
  body.pop_back();  // the newline
  write_event(body);
  write_event("[DONE]");
  end_exchange(std::nullopt);
  end_body();
}

void http_session::emit(std::uint32_t c, const std::string& text,
                        std::span<const wire::client_logprobs> logprobs) {
  auto& ex = *current_;
  auto& choice = ex.choices[c];
  if (text.empty() && (logprobs.empty() || !ex.context.logprobs)) return;
  if (!text.empty()) {
    const auto now = steady::now();
    if (ex.last_piece) {
      core_.metrics.observe_gap(std::chrono::duration<double>(now - *ex.last_piece).count());
    }
    ex.last_piece = now;
  }
  if (!ex.request.stream) {
    choice.answer.text += text;
    if (ex.context.logprobs) {
      choice.answer.logprobs.insert(choice.answer.logprobs.end(), logprobs.begin(), logprobs.end());
    }
    return;
  }
  write_event(text_chunk(ex.context, c, text, logprobs, choice.streamed_bytes));
  for (const auto& l : logprobs) choice.streamed_bytes += l.text.size();
}

void http_session::end_choice(std::uint32_t c, const char* reason) {
  auto& ex = *current_;
  ex.choices[c].reason = reason;
  ex.choices[c].answer.reason = reason;
  if (ex.request.stream) write_event(final_chunk(ex.context, c, reason));
  const bool all = std::all_of(ex.choices.begin(), ex.choices.end(),
                               [](const choice_progress& x) { return x.reason.has_value(); });
  if (!all) return;
  // Stop strings may have ended the text before the router did: the rest is not wanted.
  if (ex.stream->end_by_server()) {
    core_.stats.cancelled.fetch_add(1);
    core_.handler.cancel(*ex.stream, cancel_reason::client_cancelled);
  }
  complete({ex.context.accepted.prompt_tokens, ex.completion_tokens});
}

void http_session::complete(token_usage usage) {
  auto& ex = *current_;
  if (!ex.request.stream) {
    std::vector<choice_answer> answers;
    for (auto& c : ex.choices) answers.push_back(std::move(c.answer));
    std::string body = whole_answer(ex.context, answers, usage);
    end_exchange(std::nullopt);
    return respond(200, "application/json", std::move(body));
  }
  if (ex.request.include_usage) write_event(usage_chunk(ex.context, usage));
  write_event("[DONE]");
  end_exchange(std::nullopt);
  end_body();
}

void http_session::end_exchange(std::optional<cancel_reason> why) {
  if (!current_) return;
  auto ex = std::move(current_);
  core_.stats.generations_open.fetch_sub(1);
  if (core_.keys && !ex->key.empty()) {
    core_.keys->finished(ex->key,
                         std::uint64_t{ex->context.accepted.prompt_tokens} + ex->completion_tokens,
                         steady::now());
  }
  if (why && ex->stream && ex->stream->end_by_server()) {
    core_.stats.cancelled.fetch_add(1);
    core_.handler.cancel(*ex->stream, *why);
  }
}

// --- writing

void http_session::write_event(const std::string& data) {
  const std::string event = fmt::format("data: {}\n\n", data);
  auto owner = current_ ? current_->stream : nullptr;
  if (!http11_) return write_raw(event, std::move(owner));
  write_raw(fmt::format("{:x}\r\n{}\r\n", event.size(), event), std::move(owner));
}

void http_session::end_body() {
  if (http11_) write_raw("0\r\n\r\n", nullptr);
  next_request();
}

void http_session::respond(unsigned status, const char* type, std::string body,
                           std::pair<http::field, std::string> header) {
  count_status(status);
  http::response<http::string_body> res(static_cast<http::status>(status), http11_ ? 11 : 10);
  res.set(http::field::server, "baton");
  res.set(http::field::content_type, type);
  if (!header.second.empty()) res.set(header.first, header.second);
  res.keep_alive(keep_alive_);
  res.body() = std::move(body);
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  write_raw(out.str(), nullptr);
  next_request();
}

void http_session::respond_error(const api_error& e, std::pair<http::field, std::string> header) {
  respond(e.status, "application/json", error_body(e), std::move(header));
}

void http_session::count_status(unsigned status) {
  if (status < core_.metrics.by_status.size()) ++core_.metrics.by_status[status];
  if (status >= 500) {
    core_.stats.server_errors.fetch_add(1);
  } else if (status >= 400) {
    core_.stats.client_errors.fetch_add(1);
  }
}

void http_session::next_request() {
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

void http_session::write_raw(std::string bytes, std::shared_ptr<bounded_stream> owner) {
  if (closed_) return;
  if (owner) owner->add_queued(bytes.size());
  out_.push_back({std::move(bytes), std::move(owner)});
  if (!writing_) write_next();
}

void http_session::write_next() {
  writing_ = true;
  boost::asio::async_write(
      conn_, boost::asio::buffer(out_.front().bytes),
      [self = shared_from_this()](error_code ec, std::size_t) { self->on_written(ec); });
}

void http_session::on_written(error_code ec) {
  writing_ = false;
  auto done = std::move(out_.front());
  out_.pop_front();
  if (done.owner) done.owner->written(done.bytes.size());
  if (closed_) return;
  if (ec) return close(cancel_reason::disconnected);
  if (!out_.empty()) return write_next();
  if (finishing_) linger();
}

void http_session::linger() {
  if (lingering_ || closed_) return;
  lingering_ = true;
  end_exchange(cancel_reason::disconnected);
  error_code ignored;
  conn_.lowest().shutdown(tcp::socket::shutdown_send, ignored);
  timer_.expires_after(linger_time);
  timer_.async_wait([self = shared_from_this()](error_code e) {
    if (!e) self->close(cancel_reason::disconnected);
  });
  if (!watching_) drain();
}

void http_session::drain() {
  conn_.async_read_some(boost::asio::buffer(scratch_),
                        [self = shared_from_this()](error_code ec, std::size_t n) {
                          self->drained_ += n;
                          if (ec || self->drained_ > linger_max_bytes) {
                            return self->close(cancel_reason::disconnected);
                          }
                          self->drain();
                        });
}

}  // namespace baton::frontend::detail
