#include "client/router_client.hpp"

#include "client/version.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include "base/address.hpp"

namespace baton::client {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using clock = std::chrono::steady_clock;

/// The endpoints of a router's "host:port".
expected<tcp::resolver::results_type> resolve(asio::io_context& io, const std::string& address) {
  auto parsed = parse_host_port(address);
  if (!parsed) return tl::unexpected(parsed.error());
  error_code ec;
  tcp::resolver resolver(io);
  auto found = resolver.resolve(parsed->host, std::to_string(parsed->port),
                                tcp::resolver::numeric_service, ec);
  if (ec || found.empty()) {
    return fail(errc::not_found,
                fmt::format("address \"{}\": {}", address, ec ? ec.message() : "no such host"));
  }
  return found;
}

/// What a request's client has received, kept across the routers it is resumed through.
struct progress {
  std::optional<wire::accepted> accepted;  ///< the first router's
  std::vector<wire::resume_choice> choices;

  /// Records a chunk's tokens in position order (a repeat is dropped).
  void record(const wire::token_chunk& t) {
    if (!accepted || t.choice >= choices.size()) return;
    auto& c = choices[t.choice];
    for (std::size_t i = 0; i < t.tokens.size(); ++i) {
      if (t.first_position + i == accepted->prompt_tokens + c.tokens.size()) {
        c.tokens.push_back(t.tokens[i]);
      }
    }
    if (t.finish) {
      c.done = true;
      c.reason = *t.finish;
    }
  }
};

}  // namespace

namespace detail {

struct connection;

/// One request, from start() to its done callback. Touched only on the I/O thread.
struct request {
  enum class phase : std::uint8_t { running, cancelling, timing_out };
  std::uint64_t tag = 0;
  wire::generate_request original;
  event_callback on_event;
  done_callback on_done;
  clock::time_point deadline = clock::time_point::max();
  std::optional<asio::steady_timer> deadline_timer;
  std::optional<asio::steady_timer> grace_timer;  ///< a cancel's confirmation
  std::optional<asio::steady_timer> wait_timer;   ///< a resume's wait for a router
  connection* on = nullptr;  ///< where it was sent last; null while it waits for a router
  phase now = phase::running;
  progress seen;
  generate_result result;
  std::uint32_t sends = 0;          ///< times sent before it was accepted
  bool waiting_for_router = false;  ///< not accepted, every router away: wait_timer runs
  /// Not accepted, and every router has refused or dropped it since then.
  std::optional<clock::time_point> refused_since;
};

/// One router of the pool: its connection, reconnected with backoff while it is away.
/// Touched only on the I/O thread.
struct connection {
  connection(asio::io_context& io, std::string a, std::chrono::milliseconds backoff_min)
      : address(std::move(a)), socket(io), timer(io), backoff(backoff_min) {}

  /// Runs `f` with the stream the protocol goes over: the TLS session or the socket.
  template <class F>
  void with_stream(F&& f) {
    if (tls) {
      f(*tls);
    } else {
      f(socket);
    }
  }
  /// The TCP socket under the stream.
  tcp::socket& lowest() { return tls ? tls->next_layer() : socket; }

  std::string address;
  tcp::socket socket;                                   ///< plain TCP
  std::unique_ptr<asio::ssl::stream<tcp::socket>> tls;  ///< or TLS: one per connection
  asio::steady_timer timer;  ///< the connect attempt's bound, then the next attempt
  router_health::state now = router_health::state::down;
  std::uint64_t epoch = 0;  ///< counts connections; handlers of an older one see a change
  std::deque<std::vector<std::byte>> out;
  std::array<std::byte, wire::client_length_bytes> length{};
  std::vector<std::uint64_t> body;
  std::set<std::uint64_t> open;  ///< tags of the requests running over it
  std::chrono::milliseconds backoff;
  std::uint32_t failures = 0;
  std::string last_error;
};

/// The pool: connections, requests, and the one thread that runs them.
struct client_core {
  client_core(client_options o, std::shared_ptr<asio::ssl::context> tls_context)
      : options(std::move(o)), tls(std::move(tls_context)), work(io.get_executor()) {
    for (const auto& address : options.routers) {
      routers.push_back(std::make_unique<connection>(io, address, options.reconnect_min));
    }
  }

  client_options options;
  std::shared_ptr<asio::ssl::context> tls;  ///< null: plain TCP
  asio::io_context io{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::unique_ptr<connection>> routers;
  std::map<std::uint64_t, std::shared_ptr<request>> requests;
  std::deque<std::uint64_t> waiting;  ///< requests waiting for a router to be up
  std::atomic<std::uint64_t> next_tag{1};
  std::thread thread;
  bool closed = false;
  /// connect()'s wait for the first router to answer (or none to).
  std::optional<std::promise<expected<void>>> ready;

  [[nodiscard]] bool on_io_thread() const { return std::this_thread::get_id() == thread.get_id(); }

  request* find(std::uint64_t tag) {
    auto it = requests.find(tag);
    return it == requests.end() ? nullptr : it->second.get();
  }

  // ---- connections ----------------------------------------------------------------
  void connect(connection& c) {
    if (closed || c.now != router_health::state::down) return;
    c.timer.cancel();
    auto endpoints = resolve(io, c.address);
    if (!endpoints) return lost(c, endpoints.error());
    c.now = router_health::state::connecting;
    const auto at = ++c.epoch;
    if (tls) {  // a TLS session cannot be reused: a fresh one per connection
      c.tls = std::make_unique<asio::ssl::stream<tcp::socket>>(io, *tls);
      const auto host = parse_host_port(c.address)->host;
      c.tls->set_verify_mode(asio::ssl::verify_peer);
      c.tls->set_verify_callback(asio::ssl::host_name_verification(host));
      error_code not_an_ip;
      (void)asio::ip::make_address(host, not_an_ip);
      if (not_an_ip) SSL_set_tlsext_host_name(c.tls->native_handle(), host.c_str());  // SNI
    }
    asio::async_connect(
        c.lowest(), *endpoints, [this, &c, at](error_code ec, const tcp::endpoint&) {
          if (at != c.epoch) return;
          if (ec)
            return lost(c, {errc::disconnected, fmt::format("{}: {}", c.address, ec.message())});
          if (!c.tls) return on_connected(c);
          c.tls->async_handshake(asio::ssl::stream_base::client, [this, &c, at](error_code hs) {
            if (at != c.epoch) return;
            if (hs) {
              return lost(c, {errc::disconnected,
                              fmt::format("{}: TLS handshake: {}", c.address, hs.message())});
            }
            on_connected(c);
          });
        });
    c.timer.expires_after(options.connect_timeout);
    c.timer.async_wait([this, &c, at](error_code ec) {
      if (ec || at != c.epoch || c.now != router_health::state::connecting) return;
      lost(c, {errc::timed_out, fmt::format("{}: connect timed out", c.address)});
    });
  }

  void on_connected(connection& c) {
    c.timer.cancel();
    error_code ignored;
    c.lowest().set_option(tcp::no_delay(true), ignored);
    c.now = router_health::state::up;
    c.failures = 0;
    c.backoff = options.reconnect_min;
    read_length(c, c.epoch);
    check_ready();
    place_waiting();
  }

  /// The connection (or the attempt to make it) is gone: what ran over it goes elsewhere
  /// or ends, and the router is tried again after its backoff.
  void lost(connection& c, const error& why) {
    ++c.epoch;
    error_code ignored;
    c.lowest().shutdown(tcp::socket::shutdown_both, ignored);
    c.lowest().close(ignored);
    c.out.clear();
    c.now = router_health::state::down;
    ++c.failures;
    c.last_error = why.message;
    const auto open = std::exchange(c.open, {});
    if (!closed) {
      c.timer.expires_after(c.backoff);
      c.timer.async_wait([this, &c](error_code ec) {
        if (!ec) connect(c);
      });
      c.backoff = std::min(c.backoff * 2, options.reconnect_max);
    }
    for (const auto tag : open) {
      if (auto* r = find(tag)) router_lost(*r, why);
    }
    check_ready();
    settle_waiting();
  }

  /// Tries every router that is away now, not after its backoff (a request needs one).
  void kick() {
    for (auto& c : routers) connect(*c);
  }

  [[nodiscard]] bool any_router(router_health::state s) const {
    return std::any_of(routers.begin(), routers.end(), [s](const auto& c) { return c->now == s; });
  }

  [[nodiscard]] std::string why_none_answered() const {
    std::string why;
    for (const auto& c : routers) {
      if (c->last_error.empty()) continue;
      why += fmt::format("{}{}", why.empty() ? "" : "; ", c->last_error);
    }
    return fmt::format("no router answered: {}", why);
  }

  void check_ready() {
    if (!ready) return;
    if (any_router(router_health::state::up)) {
      ready->set_value({});
    } else if (!any_router(router_health::state::connecting)) {
      ready->set_value(fail(errc::disconnected, why_none_answered()));
    } else {
      return;
    }
    ready.reset();
  }

  void read_length(connection& c, std::uint64_t at) {
    c.with_stream([&](auto& stream) {
      asio::async_read(stream, asio::buffer(c.length), [this, &c, at](error_code ec, std::size_t) {
        if (at != c.epoch) return;
        if (ec) return read_failed(c, ec);
        auto size = wire::client_frame_length(c.length, options.limits);
        if (!size) return bad_frame(c, size.error());
        c.body.resize(*size / sizeof(std::uint64_t));
        read_body(c, at, *size);
      });
    });
  }

  void read_body(connection& c, std::uint64_t at, std::size_t size) {
    c.with_stream([&](auto& stream) {
      asio::async_read(
          stream, asio::buffer(c.body.data(), size), [this, &c, at](error_code ec, std::size_t) {
            if (at != c.epoch) return;
            if (ec) return read_failed(c, ec);
            auto message =
                wire::decode_client_message(std::as_bytes(std::span(c.body)), options.limits);
            if (!message) return bad_frame(c, message.error());
            on_message(c, std::move(*message));
            if (at == c.epoch) read_length(c, at);
          });
    });
  }

  void read_failed(connection& c, error_code ec) {
    lost(c, {errc::disconnected, fmt::format("router {} went away: {}", c.address, ec.message())});
  }

  void bad_frame(connection& c, const error& e) {
    lost(c, {errc::invalid_argument,
             fmt::format("router {} sent a bad frame: {}", c.address, e.message)});
  }

  void write(connection& c, std::vector<std::byte> frame) {
    c.out.push_back(std::move(frame));
    if (c.out.size() == 1) write_next(c);
  }

  void write_next(connection& c) {
    c.with_stream([&](auto& stream) {
      asio::async_write(stream, asio::buffer(c.out.front()),
                        [this, &c, at = c.epoch](error_code ec, std::size_t) {
                          if (at != c.epoch) return;  // dropped, and `out` with it
                          if (ec) {
                            return lost(
                                c, {errc::disconnected,
                                    fmt::format("writing to {}: {}", c.address, ec.message())});
                          }
                          c.out.pop_front();
                          if (!c.out.empty()) write_next(c);
                        });
    });
  }

  void on_message(connection& c, wire::client_message message) {
    if (auto* r = std::get_if<wire::rejected>(&message); r && r->client_tag == 0) {
      return lost(c, {r->code, fmt::format("router {}: {}", c.address, r->message)});
    }
    std::visit(
        [&](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, wire::generate_request> ||
                        std::is_same_v<T, wire::cancel_request>) {
            lost(c, {errc::invalid_argument,
                     fmt::format("router {} sent a client's message", c.address)});
          } else {
            auto* r = find(m.client_tag);
            if (r == nullptr || r->on != &c) return;  // ended, or moved to another router
            on_own_message(*r, m);
          }
        },
        message);
  }

  // ---- requests --------------------------------------------------------------------
  void begin(std::shared_ptr<request> r) {
    if (closed) {
      r->on_done(fail(errc::disconnected, "the client was closed"));
      return;
    }
    r->deadline_timer.emplace(io);
    r->grace_timer.emplace(io);
    r->wait_timer.emplace(io);
    r->seen.choices.resize(r->original.n);
    requests.emplace(r->tag, r);
    if (r->deadline != clock::time_point::max()) {
      r->deadline_timer->expires_at(r->deadline);
      r->deadline_timer->async_wait([this, tag = r->tag](error_code ec) {
        if (ec) return;
        if (auto* q = find(tag)) begin_cancel(*q, request::phase::timing_out);
      });
    }
    place(*r);
  }

  /// Sends `r` over the healthy router with the fewest requests open, or makes it wait
  /// for one.
  void place(request& r) {
    connection* best = nullptr;
    for (auto& c : routers) {
      if (c->now == router_health::state::up &&
          (best == nullptr || c->open.size() < best->open.size()))
        best = c.get();
    }
    if (best == nullptr) {
      r.on = nullptr;
      waiting.push_back(r.tag);
      kick();
      settle_waiting();
      return;
    }
    auto sent = r.original;
    sent.client_tag = r.tag;
    if (sent.api_key.empty()) sent.api_key = options.api_key;
    if (r.seen.accepted) {  // resumed: the first router's seed and what arrived so far
      sent.params.seed = r.seen.accepted->seed;
      sent.has_seed = true;
      sent.resume = wire::resume_state{r.seen.accepted->request, r.seen.choices};
      if (r.deadline != clock::time_point::max()) {
        sent.timeout_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(
            1, std::chrono::duration_cast<std::chrono::milliseconds>(r.deadline - clock::now())
                   .count()));
      }
    } else {
      ++r.sends;
    }
    auto frame = wire::encode_client_frame(sent, options.limits);
    if (!frame) return finish(r, tl::unexpected(frame.error()));
    r.on = best;
    r.result.router = best->address;
    r.wait_timer->cancel();
    r.waiting_for_router = false;
    best->open.insert(r.tag);
    write(*best, std::move(*frame));
  }

  void place_waiting() {
    auto tags = std::exchange(waiting, {});
    for (const auto tag : tags) {
      if (auto* r = find(tag); r != nullptr && r->on == nullptr) place(*r);
    }
  }

  /// With no router up and none being tried, requests keep waiting for one (routers
  /// restart): one being resumed until its resume_wait runs out, one not accepted yet for
  /// resume_wait from now, then it fails with disconnected.
  void settle_waiting() {
    if (any_router(router_health::state::up) || any_router(router_health::state::connecting))
      return;
    for (const auto tag : waiting) {
      auto* r = find(tag);
      if (r == nullptr || r->on != nullptr || r->seen.accepted || r->waiting_for_router) continue;
      r->waiting_for_router = true;
      r->wait_timer->expires_after(options.resume_wait);
      r->wait_timer->async_wait([this, tag](error_code ec) {
        auto* q = ec ? nullptr : find(tag);
        if (q == nullptr || q->on != nullptr) return;
        std::erase(waiting, tag);
        finish(*q, fail(errc::disconnected,
                        fmt::format("no router took the request within {} ms: {}",
                                    options.resume_wait.count(), why_none_answered())));
      });
    }
  }

  /// The router `r` ran on went away (or said it restarted): resume it elsewhere, send it
  /// again, or end it.
  void router_lost(request& r, const error& why) {
    const std::string router = r.on != nullptr ? r.on->address : std::string();
    r.on = nullptr;
    if (r.now == request::phase::timing_out) {
      return finish(r,
                    fail(errc::timed_out, "the request's deadline passed; its router went away"));
    }
    if (r.now == request::phase::cancelling) {
      r.result.reason = wire::finish_reason::cancelled;
      return finish(r, r.result);
    }
    if (why.code != errc::disconnected) return finish(r, tl::unexpected(why));
    if (r.seen.accepted) {
      if (r.result.resumes >= options.max_resumes || clock::now() >= r.deadline) {
        return finish(r, fail(errc::disconnected, fmt::format("router {} went away mid-stream: {}",
                                                              router, why.message)));
      }
      ++r.result.resumes;
      r.wait_timer->expires_after(options.resume_wait);
      r.wait_timer->async_wait([this, tag = r.tag, router](error_code ec) {
        auto* q = ec ? nullptr : find(tag);
        if (q == nullptr || q->on != nullptr) return;
        finish(*q, fail(errc::disconnected,
                        fmt::format("router {} went away mid-stream and no router took the "
                                    "request back within {} ms: {}",
                                    router, options.resume_wait.count(), why_none_answered())));
      });
      return place(r);
    }
    // Not accepted yet: the connection turned out to be dead, or the router is not serving
    // (starting, draining); send it again, after a pause once every router has had it,
    // until resume_wait has passed since then.
    if (r.sends <= routers.size()) return place(r);
    if (!r.refused_since) r.refused_since = clock::now();
    if (clock::now() - *r.refused_since >= options.resume_wait) {
      return finish(r, tl::unexpected(why));
    }
    r.wait_timer->expires_after(options.reconnect_min);
    r.wait_timer->async_wait([this, tag = r.tag](error_code ec) {
      auto* q = ec ? nullptr : find(tag);
      if (q != nullptr && q->on == nullptr) place(*q);
    });
  }

  bool deliver(request& r, const client_event& event) {
    if (r.now != request::phase::running || !r.on_event) return true;
    try {
      return r.on_event(event);
    } catch (...) {
      return false;  // a callback that throws cancels its request
    }
  }

  void on_own_message(request& r, const wire::accepted& a) {
    if (r.seen.accepted) return;  // resumed: the caller saw its accepted
    r.seen.accepted = a;
    auto& res = r.result;
    res.request = a.request;
    res.seed = a.seed;
    res.prompt_tokens = a.prompt_tokens;
    res.placement = a.placement;
    res.prefill_node = a.prefill_node;
    res.decode_node = a.decode_node;
    if (!deliver(r, a)) begin_cancel(r, request::phase::cancelling);
  }

  void on_own_message(request& r, const wire::token_chunk& t) {
    r.result.completion_tokens += static_cast<std::uint32_t>(t.tokens.size());
    r.seen.record(t);
    if (!deliver(r, t)) begin_cancel(r, request::phase::cancelling);
  }

  void on_own_message(request& r, const wire::finished& f) {
    if (r.now == request::phase::timing_out) {
      return finish(r, fail(errc::timed_out, "the request's deadline passed"));
    }
    auto& res = r.result;
    res.reason = f.reason;
    res.prompt_tokens = f.prompt_tokens;
    res.completion_tokens = f.completion_tokens;
    res.router_us = f.router_us;
    finish(r, res);
  }

  void on_own_message(request& r, const wire::rejected& j) {
    if (r.now == request::phase::timing_out) {
      return finish(r, fail(errc::timed_out, "the request's deadline passed"));
    }
    const auto router = r.on->address;
    if (j.code == errc::disconnected) {
      // The router does not serve (it drains, or its router actor is not up yet): as if
      // its connection broke, the request goes to another router or waits for one.
      r.on->open.erase(r.tag);
      return router_lost(r, error{j.code, fmt::format("router {}: {}", router, j.message)});
    }
    finish(r, fail(j.code, fmt::format("router {}: {}", router, j.message)));
  }

  void begin_cancel(request& r, request::phase why) {
    if (r.now != request::phase::running) return;
    r.now = why;
    if (r.on == nullptr) {  // waiting for a router: nothing to tell one
      if (why == request::phase::timing_out) {
        return finish(r, fail(errc::timed_out, "the request's deadline passed"));
      }
      r.result.reason = wire::finish_reason::cancelled;
      return finish(r, r.result);
    }
    auto frame = wire::encode_client_frame(wire::cancel_request{r.tag}, options.limits);
    if (frame) write(*r.on, std::move(*frame));
    r.grace_timer->expires_after(options.cancel_grace);
    r.grace_timer->async_wait([this, tag = r.tag](error_code ec) {
      auto* q = ec ? nullptr : find(tag);
      if (q == nullptr) return;
      if (q->now == request::phase::timing_out) {
        return finish(*q, fail(errc::timed_out,
                               "the request's deadline passed; the router did not confirm the "
                               "cancel"));
      }
      q->result.reason = wire::finish_reason::cancelled;
      finish(*q, q->result);
    });
  }

  void cancel(std::uint64_t tag) {
    if (auto* r = find(tag)) begin_cancel(*r, request::phase::cancelling);
  }

  void finish(request& r, expected<generate_result> outcome) {
    auto it = requests.find(r.tag);
    if (it == requests.end()) return;
    auto keep = std::move(it->second);  // `r` lives until the callback has run
    requests.erase(it);
    if (r.on != nullptr) r.on->open.erase(r.tag);
    r.deadline_timer->cancel();
    r.grace_timer->cancel();
    r.wait_timer->cancel();
    if (!r.on_done) return;
    try {
      r.on_done(std::move(outcome));
    } catch (...) {  // nothing is left to tell; the I/O thread must go on
    }
  }

  void shutdown() {
    closed = true;
    while (!requests.empty()) {
      finish(*requests.begin()->second, fail(errc::disconnected, "the client was closed"));
    }
    for (auto& c : routers) {
      ++c->epoch;
      error_code ignored;
      c->lowest().shutdown(tcp::socket::shutdown_both, ignored);
      c->lowest().close(ignored);
      c->timer.cancel();
    }
    work.reset();
  }

  [[nodiscard]] std::vector<router_health> health() const {
    std::vector<router_health> out;
    for (const auto& c : routers) {
      out.push_back({c->address, c->now, c->open.size(), c->failures, c->last_error});
    }
    return out;
  }
};

/// A token_stream's events, filled on the I/O thread and pulled by the caller.
struct stream_queue {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<client_event> events;
  bool ended = false;
  expected<generate_result> outcome = fail(errc::failed, "the request has not ended");
};

}  // namespace detail

// ---- handles and streams ---------------------------------------------------------------

void request_handle::cancel() const {
  auto core = core_.lock();
  if (!core) return;
  asio::post(core->io, [c = core.get(), tag = tag_] { c->cancel(tag); });
}

std::optional<client_event> token_stream::next() {
  std::unique_lock lock(queue_->mutex);
  queue_->cv.wait(lock, [&] { return !queue_->events.empty() || queue_->ended; });
  if (queue_->events.empty()) return std::nullopt;
  auto event = std::move(queue_->events.front());
  queue_->events.pop_front();
  return event;
}

const expected<generate_result>& token_stream::result() const {
  std::lock_guard lock(queue_->mutex);
  return queue_->outcome;
}

// ---- the client --------------------------------------------------------------------------

router_client::router_client(std::shared_ptr<detail::client_core> core) : core_(std::move(core)) {}

router_client::~router_client() {
  if (!core_) return;
  asio::post(core_->io, [c = core_.get()] { c->shutdown(); });
  core_->thread.join();
}

expected<std::unique_ptr<router_client>> router_client::connect(client_options options) {
  if (options.routers.empty()) {
    return fail(errc::invalid_argument, "router client: no router addresses");
  }
  for (const auto& address : options.routers) {
    if (auto parsed = parse_host_port(address); !parsed) return tl::unexpected(parsed.error());
  }
  std::shared_ptr<asio::ssl::context> tls;
  if (!options.tls_ca_file.empty()) {
    tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    tls->set_options(asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1, ec);
    tls->load_verify_file(options.tls_ca_file, ec);
    if (ec) {
      return fail(errc::invalid_argument, fmt::format("router client: {}: not a PEM CA file: {}",
                                                      options.tls_ca_file, ec.message()));
    }
  }
  auto core = std::make_shared<detail::client_core>(std::move(options), std::move(tls));
  auto answered = core->ready.emplace().get_future();
  core->thread = std::thread([c = core.get()] { c->io.run(); });
  // `new`: the constructor is private, so make_unique cannot reach it.
  std::unique_ptr<router_client> client(new router_client(core));
  asio::post(core->io, [c = core.get()] {
    c->kick();
    c->check_ready();
  });
  if (auto ok = answered.get(); !ok) return tl::unexpected(ok.error());
  return client;
}

request_handle router_client::start(wire::generate_request request, event_callback on_event,
                                    done_callback on_done) {
  auto r = std::make_shared<detail::request>();
  r->tag = core_->next_tag.fetch_add(1);
  if (request.timeout_ms > 0) {
    r->deadline = clock::now() + std::chrono::milliseconds(request.timeout_ms);
  }
  r->original = std::move(request);
  r->on_event = std::move(on_event);
  r->on_done = std::move(on_done);
  request_handle handle(core_, r->tag);
  asio::post(core_->io, [c = core_.get(), r = std::move(r)]() mutable { c->begin(std::move(r)); });
  return handle;
}

token_stream router_client::stream(wire::generate_request request) {
  auto queue = std::make_shared<detail::stream_queue>();
  auto handle = start(
      std::move(request),
      [queue](const client_event& event) {
        {
          std::lock_guard lock(queue->mutex);
          queue->events.push_back(event);
        }
        queue->cv.notify_one();
        return true;
      },
      [queue](expected<generate_result> outcome) {
        {
          std::lock_guard lock(queue->mutex);
          queue->outcome = std::move(outcome);
          queue->ended = true;
        }
        queue->cv.notify_one();
      });
  return token_stream(std::move(queue), std::move(handle));
}

expected<generate_result> router_client::generate(wire::generate_request request,
                                                  const event_callback& on_event) {
  if (core_->on_io_thread()) {
    return fail(errc::invalid_argument,
                "router client: generate() from a callback would wait for itself; use start()");
  }
  auto s = stream(std::move(request));
  bool cancelled = false;
  while (auto event = s.next()) {
    if (!cancelled && !on_event(*event)) {
      cancelled = true;
      s.cancel();
    }
  }
  return s.result();
}

void router_client::cancel() {
  asio::post(core_->io, [c = core_.get()] {
    std::vector<std::uint64_t> tags;
    for (const auto& [tag, r] : c->requests) tags.push_back(tag);
    for (const auto tag : tags) c->cancel(tag);
  });
}

std::vector<router_health> router_client::routers() const {
  if (core_->on_io_thread()) return core_->health();
  std::promise<std::vector<router_health>> result;
  auto future = result.get_future();
  asio::post(core_->io, [c = core_.get(), &result] { result.set_value(c->health()); });
  return future.get();
}

std::string router_client::connected_router() const {
  for (const auto& r : routers()) {
    if (r.now == router_health::state::up) return r.address;
  }
  return {};
}

const char* library_version() noexcept {
  return BATON_VERSION_STRING;
}

}  // namespace baton::client
