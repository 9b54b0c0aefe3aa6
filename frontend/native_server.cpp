#include "frontend/native_server.hpp"

#include <atomic>
#include <deque>
#include <exception>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "frontend/acceptor.hpp"
#include "frontend/bounded_stream.hpp"
#include "frontend/connection.hpp"

namespace baton::frontend {
namespace {

using detail::error_code;
using detail::tcp;
namespace asio = boost::asio;

/// How long a closing session keeps reading (and discarding) what the client still sends,
/// so that the kernel does not reset the connection before the client read our last frame.
constexpr auto linger_time = std::chrono::seconds(2);
constexpr std::size_t linger_max_bytes = 1u << 20;

struct counters {
  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> frames_received{0};
  std::atomic<std::uint64_t> frames_rejected{0};
  std::atomic<std::uint64_t> requests_started{0};
  std::atomic<std::uint64_t> requests_rejected{0};
  std::atomic<std::uint64_t> requests_cancelled{0};
  std::atomic<std::uint64_t> handler_failures{0};
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> key_limited{0};
  std::atomic<std::uint64_t> tls_handshake_failures{0};
};

/// What every session of one server shares. Outlives the sessions' use of it: the
/// server joins its thread before destroying it.
struct server_core {
  server_options options;
  generate_handler& handler;
  counters stats;
  std::atomic<std::uint64_t> next_stream_id{1};
  std::shared_ptr<io_gate> gate;
  std::unique_ptr<detail::connection_count> connections;  // in all and per address
  detail::client_security security;                       // keys: io thread only
};

using frame_bytes = std::vector<std::byte>;

/// One connection: reads frames, starts and cancels requests, writes the router's
/// answers in order. Runs on the server's io thread only.
class session : public stream_sink, public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, server_core& core)
      : conn_(core.security.tls ? detail::connection(std::move(socket), core.security.tls)
                                : detail::connection(std::move(socket))),
        peer_(detail::peer_address(conn_.lowest())),
        linger_(conn_.get_executor()),
        core_(core) {}
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// Counted by core.connections (admitted there): starts reading frames.
  void start() {
    counted_ = true;
    if (!conn_.secure()) return read_length();
    // A client that does not complete its handshake in time is cut off.
    linger_.expires_after(std::chrono::milliseconds(core_.options.handshake_timeout_ms));
    linger_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->close(cancel_reason::disconnected);
    });
    conn_.handshake([self = shared_from_this()](error_code ec) {
      self->linger_.cancel();
      if (self->closed_) return;
      if (ec) {
        self->core_.stats.tls_handshake_failures.fetch_add(1);
        return self->close(cancel_reason::disconnected);
      }
      self->read_length();
    });
  }

  /// Over a connection limit (`why`): answers rejected{overloaded} and closes (over TLS,
  /// closes at once: a handshake is not spent on a connection that is refused).
  void refuse(const std::string& why) {
    reading_ = false;
    if (conn_.secure()) return close(cancel_reason::server_stopping);
    fail_connection(errc::overloaded, why);
  }

  /// The client's address.
  [[nodiscard]] const asio::ip::address& peer() const { return peer_; }

  /// Ends every open request and closes the connection.
  void close(cancel_reason why) {
    if (closed_) return;
    closed_ = true;
    reading_ = false;
    end_all(why);
    error_code ignored;
    linger_.cancel();
    conn_.lowest().shutdown(tcp::socket::shutdown_both, ignored);
    conn_.lowest().close(ignored);
    if (counted_) {
      core_.stats.connections_open.fetch_sub(1);
      core_.connections->release(peer_);
    }
  }

  void on_response(const std::shared_ptr<bounded_stream>& stream, response r) override {
    guarded("a router message", [&] {
      const bool final =
          std::holds_alternative<wire::finished>(r) || std::holds_alternative<wire::rejected>(r);
      if (auto* a = std::get_if<wire::accepted>(&r)) {
        counts_[stream->client_tag()].prompt = a->prompt_tokens;
      } else if (auto* t = std::get_if<wire::token_chunk>(&r)) {
        counts_[stream->client_tag()].completion += static_cast<std::uint32_t>(t->tokens.size());
      }
      wire::client_message message =
          std::visit([](auto&& m) -> wire::client_message { return m; }, std::move(r));
      auto frame = wire::encode_client_frame(message, core_.options.limits);
      if (!frame) {
        // A router bug: end the request rather than send what the client would refuse.
        spdlog::error("native server: request {} sent an invalid {}: {}", stream->id(),
                      wire::client_message_name(message), frame.error().message);
        core_.stats.handler_failures.fetch_add(1);
        if (!final && stream->end_by_server()) end_request(*stream, cancel_reason::failed);
        send_now(wire::rejected{stream->client_tag(), errc::failed,
                                "the router produced an invalid message"});
        forget(*stream);
        return;
      }
      write(std::move(*frame), stream);
      if (final) forget(*stream);
    });
  }

  void on_slow(const std::shared_ptr<bounded_stream>& stream) override {
    guarded("a slow reader", [&] {
      send_now(wire::rejected{
          stream->client_tag(), errc::overloaded,
          fmt::format("the client reads too slowly: {} bytes queued, limit {}",
                      stream->queued_bytes(), core_.options.max_queued_bytes_per_stream)});
      forget(*stream);
      end_request(*stream, cancel_reason::slow_reader);
    });
  }

 private:
  struct pending {
    frame_bytes frame;
    std::shared_ptr<bounded_stream> owner;
  };
  struct token_counts {
    std::uint32_t prompt = 0;
    std::uint32_t completion = 0;
    std::string key;  ///< the API key's name it was admitted under, if any
  };

  // --- the failure boundary

  template <class F>
  void guarded(const char* where, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      failed(where, e.what());
    } catch (...) {
      failed(where, "an exception that is not a std::exception");
    }
  }

  void failed(const char* where, const char* what) {
    core_.stats.handler_failures.fetch_add(1);
    spdlog::error("native server: {} failed: {}; ending the connection", where, what);
    try {
      if (!closed_ && !finishing_) {
        return fail_connection(errc::failed, "the server failed handling a request");
      }
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing is left to answer with
    }
    close(cancel_reason::failed);
  }

  void end_request(const bounded_stream& stream, cancel_reason why) {
    core_.stats.requests_cancelled.fetch_add(1);
    core_.handler.cancel(stream, why);
  }

  /// Ends every open request on the router's side.
  void end_all(cancel_reason why) {
    auto open = std::move(open_);
    open_.clear();
    for (auto& [tag, stream] : open) {
      if (stream->end_by_server()) end_request(*stream, why);
      release(tag);
    }
  }

  void forget(const bounded_stream& stream) {
    auto it = open_.find(stream.client_tag());
    if (it != open_.end() && it->second.get() == &stream) open_.erase(it);
    release(stream.client_tag());
  }

  /// The request `tag` ended: its key (if any) gets its stream back and is charged its
  /// tokens.
  void release(std::uint64_t tag) {
    auto c = counts_.find(tag);
    if (c == counts_.end()) return;
    if (!c->second.key.empty() && core_.security.keys) {
      core_.security.keys->finished(c->second.key,
                                    std::uint64_t{c->second.prompt} + c->second.completion,
                                    std::chrono::steady_clock::now());
    }
    counts_.erase(c);
  }

  // --- reading

  void read_length() {
    if (!reading_) return;
    asio::async_read(conn_, asio::buffer(length_),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (ec) return self->read_failed(ec);
                       self->on_length();
                     });
  }

  void on_length() {
    auto length = wire::client_frame_length(length_, core_.options.limits);
    if (!length) return protocol_error(length.error().message);
    body_.resize(*length / sizeof(std::uint64_t));
    asio::async_read(conn_, asio::buffer(body_.data(), *length),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (ec) return self->read_failed(ec);
                       self->guarded("a client frame", [&] { self->on_message(); });
                     });
  }

  void read_failed(error_code ec) {
    if (closed_ || finishing_) return;
    if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
      spdlog::debug("native client connection: {}", ec.message());
    }
    close(cancel_reason::disconnected);
  }

  void on_message() {
    if (!reading_) return;
    auto message =
        wire::decode_client_message(std::as_bytes(std::span(body_)), core_.options.limits);
    if (!message) return protocol_error(message.error().message);
    core_.stats.frames_received.fetch_add(1);
    if (auto* g = std::get_if<wire::generate_request>(&*message)) {
      on_generate(std::move(*g));
    } else if (auto* c = std::get_if<wire::cancel_request>(&*message)) {
      on_cancel(c->client_tag);
    } else {
      return protocol_error(
          fmt::format("a client may not send '{}'", wire::client_message_name(*message)));
    }
    read_length();
  }

  void on_generate(wire::generate_request request) {
    const auto refuse_request = [&](errc code, std::string message) {
      core_.stats.requests_rejected.fetch_add(1);
      send_now(wire::rejected{request.client_tag, code, std::move(message)});
    };
    if (open_.contains(request.client_tag)) {
      return refuse_request(errc::invalid_argument,
                            fmt::format("client tag {} is already open", request.client_tag));
    }
    if (open_.size() >= core_.options.max_open_requests_per_connection) {
      return refuse_request(
          errc::overloaded,
          fmt::format("{} requests open on this connection, the limit", open_.size()));
    }
    if (auto& keys = core_.security.keys) {
      const auto verdict =
          keys->admit("Bearer " + request.api_key, conn_.secure() || peer_.is_loopback(),
                      std::chrono::steady_clock::now());
      if (verdict.what == key_verdict::kind::unauthorized) {
        core_.stats.auth_failures.fetch_add(1);
        return refuse_request(errc::failed, "invalid_api_key: " + verdict.message);
      }
      if (verdict.what == key_verdict::kind::limited) {
        core_.stats.key_limited.fetch_add(1);
        return refuse_request(errc::overloaded,
                              fmt::format("rate_limit_exceeded: {} (retry after {} s)",
                                          verdict.message, verdict.retry_after_s));
      }
      counts_[request.client_tag].key = verdict.name;
    }
    if (request.timeout_ms == 0) request.timeout_ms = core_.options.default_timeout_ms;
    auto stream = std::make_shared<bounded_stream>(core_.next_stream_id.fetch_add(1),
                                                   request.client_tag, core_.gate, weak_from_this(),
                                                   core_.options.max_queued_bytes_per_stream);
    open_.emplace(request.client_tag, stream);
    core_.stats.requests_started.fetch_add(1);
    core_.handler.start(request, std::move(stream));
  }

  void on_cancel(std::uint64_t tag) {
    auto it = open_.find(tag);
    if (it == open_.end()) return;  // it ended already; its finished or rejected is on the way
    auto stream = std::move(it->second);
    open_.erase(it);
    if (!stream->end_by_server()) return;
    end_request(*stream, cancel_reason::client_cancelled);
    // Through the gate, so it follows every message the stream posted before it ended.
    (void)core_.gate->post([self = weak_from_this(), stream] {
      auto s = self.lock();
      if (!s) return;
      s->guarded("a cancel", [&] {
        const auto counts = s->counts_[stream->client_tag()];
        s->counts_.erase(stream->client_tag());
        s->send_now(wire::finished{stream->client_tag(), wire::finish_reason::cancelled,
                                   counts.prompt, counts.completion});
      });
    });
  }

  /// Queues a server-made message (not from a stream) behind what streams queued.
  void send_now(const wire::client_message& message) {
    auto frame = wire::encode_client_frame(message, core_.options.limits);
    if (!frame) {
      spdlog::error("native server: cannot encode {}: {}", wire::client_message_name(message),
                    frame.error().message);
      return;
    }
    write(std::move(*frame), nullptr);
  }

  void protocol_error(const std::string& message) {
    core_.stats.frames_rejected.fetch_add(1);
    spdlog::debug("native client sent a bad frame: {}", message);
    fail_connection(errc::invalid_argument, message);
  }

  /// Answers rejected{0, code, message}, then closes once it is written.
  void fail_connection(errc code, std::string message) {
    reading_ = false;
    end_all(cancel_reason::disconnected);
    send_now(wire::rejected{0, code, std::move(message)});
    finishing_ = true;  // after send_now: nothing else is queued from now on
  }

  // --- writing

  /// Queues a frame; `owner` (may be null) is credited once it is written.
  void write(frame_bytes frame, std::shared_ptr<bounded_stream> owner) {
    if (closed_ || finishing_) return;
    if (owner) owner->add_queued(frame.size());
    out_.push_back({std::move(frame), std::move(owner)});
    if (out_.size() == 1) write_next();
  }

  void write_next() {
    asio::async_write(
        conn_, asio::buffer(out_.front().frame),
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_written(ec); });
  }

  void on_written(error_code ec) {
    auto done = std::move(out_.front());
    out_.pop_front();
    if (done.owner) done.owner->written(done.frame.size());
    if (closed_) return;
    if (ec) return close(cancel_reason::disconnected);
    if (!out_.empty()) return write_next();
    if (finishing_) linger();
  }

  /// Half-closes, then discards what the client still sends until it closes too (or a
  /// bound passes), so that our last frame is not lost to a connection reset.
  void linger() {
    error_code ignored;
    conn_.lowest().shutdown(tcp::socket::shutdown_send, ignored);
    linger_.expires_after(linger_time);
    linger_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->close(cancel_reason::disconnected);
    });
    drain();
  }

  void drain() {
    conn_.lowest().async_read_some(asio::buffer(scratch_),
                                   [self = shared_from_this()](error_code ec, std::size_t n) {
                                     self->drained_ += n;
                                     if (ec || self->drained_ > linger_max_bytes) {
                                       return self->close(cancel_reason::disconnected);
                                     }
                                     self->drain();
                                   });
  }

  detail::connection conn_;
  asio::ip::address peer_;
  asio::steady_timer linger_;
  server_core& core_;
  std::array<std::byte, wire::client_length_bytes> length_{};
  std::vector<std::uint64_t> body_;  // 8-byte aligned, as Cap'n Proto reads in place
  std::array<std::byte, 4096> scratch_{};
  std::size_t drained_ = 0;
  std::deque<pending> out_;
  std::unordered_map<std::uint64_t, std::shared_ptr<bounded_stream>> open_;
  std::unordered_map<std::uint64_t, token_counts> counts_;  // by client tag
  bool counted_ = false;
  bool reading_ = true;
  bool finishing_ = false;  // a final rejected is queued; close once it is written
  bool closed_ = false;
};

class server_impl final : public native_server {
 public:
  server_impl(server_options options, generate_handler& handler, detail::client_security security)
      : core_{std::move(options), handler, {}, {1}, nullptr, nullptr, std::move(security)} {
    core_.gate = std::make_shared<io_gate>(server_.io().get_executor());
    core_.connections = std::make_unique<detail::connection_count>(
        core_.options.max_connections, core_.options.max_connections_per_client);
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
      core_.gate->close();
    });
  }

  [[nodiscard]] std::uint16_t local_port() const override { return server_.port(); }

  [[nodiscard]] server_stats stats() const override {
    const auto& c = core_.stats;
    return {c.connections_accepted.load(),
            c.connections_refused.load(),
            c.connections_open.load(),
            c.frames_received.load(),
            c.frames_rejected.load(),
            c.requests_started.load(),
            c.requests_rejected.load(),
            c.requests_cancelled.load(),
            c.handler_failures.load() + server_.handler_failures(),
            c.auth_failures.load(),
            c.key_limited.load(),
            c.tls_handshake_failures.load()};
  }

 private:
  void on_accept(tcp::socket socket) {
    // Forget sessions that ended; the registry only serves the shutdown.
    std::erase_if(sessions_, [](const auto& entry) { return entry.second.expired(); });
    auto s = std::make_shared<session>(std::move(socket), core_);
    if (auto refused = core_.connections->admit(s->peer())) {
      core_.stats.connections_refused.fetch_add(1);
      s->refuse(*refused);
      return;
    }
    core_.stats.connections_accepted.fetch_add(1);
    core_.stats.connections_open.fetch_add(1);
    sessions_.emplace(s.get(), s);
    s->start();
  }

  server_core core_;
  std::unordered_map<session*, std::weak_ptr<session>> sessions_;  // io thread only
  detail::acceptor_thread server_{"native"};                       // last: its thread stops first
};

}  // namespace

expected<std::unique_ptr<native_server>> native_server::start(server_options options,
                                                              generate_handler& handler) {
  if (options.max_connections == 0 || options.max_connections_per_client == 0 ||
      options.max_open_requests_per_connection == 0 || options.max_queued_bytes_per_stream == 0) {
    return fail(errc::invalid_argument, "native server: every limit must be positive");
  }
  auto security = detail::load_client_security("native server", options.api_keys_file,
                                               options.tls_certificate_file, options.tls_key_file);
  if (!security) return tl::unexpected(security.error());
  auto server = std::make_unique<server_impl>(std::move(options), handler, std::move(*security));
  if (auto ok = server->listen(); !ok) return tl::unexpected(ok.error());
  return server;
}

std::string prometheus_text(const server_stats& s) {
  std::string out;
  const auto add = [&out](const char* name, const char* type, const char* help,
                          std::uint64_t value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, value);
  };
  add("baton_native_connections_accepted_total", "counter",
      "Client connections accepted on the native port", s.connections_accepted);
  add("baton_native_connections_refused_total", "counter",
      "Client connections refused (over the limit, in all or per client address)",
      s.connections_refused);
  add("baton_native_connections_open", "gauge", "Client connections open", s.connections_open);
  add("baton_native_frames_rejected_total", "counter",
      "Client frames rejected (malformed, oversized or wrong direction)", s.frames_rejected);
  add("baton_native_requests_started_total", "counter", "Requests handed to the router",
      s.requests_started);
  add("baton_native_requests_rejected_total", "counter",
      "Requests refused before they started (a limit, a duplicate tag)", s.requests_rejected);
  add("baton_native_requests_cancelled_total", "counter",
      "Requests ended by the server (client cancel, disconnect, slow reader, stop)",
      s.requests_cancelled);
  add("baton_native_auth_failures_total", "counter", "Requests without a valid API key",
      s.auth_failures);
  add("baton_native_key_limited_total", "counter",
      "Requests refused over their API key's limits (streams, tokens per minute)", s.key_limited);
  add("baton_native_tls_handshake_failures_total", "counter",
      "TLS handshakes on the native port that failed or timed out", s.tls_handshake_failures);
  return out;
}

}  // namespace baton::frontend
