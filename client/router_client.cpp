#include "client/router_client.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>

#include "base/address.hpp"

namespace baton::client {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using clock = std::chrono::steady_clock;

/// Between rounds of connection attempts while every router is down (one restarting).
constexpr auto resume_pause = std::chrono::milliseconds(100);

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

/// What one generate() is doing; touched only by the thread running the io_context.
struct call_state {
  enum class phase : std::uint8_t { running, cancelling, timing_out };
  std::uint64_t tag = 0;
  const event_callback* on_event = nullptr;
  progress* seen = nullptr;  ///< the request's progress over every router
  phase now = phase::running;
  bool heard = false;  ///< any message for this request arrived
  bool done = false;
  std::optional<expected<generate_result>> outcome;
  generate_result result;
};

}  // namespace

struct router_client::impl {
  explicit impl(client_options o) : options(std::move(o)) {}

  client_options options;
  asio::io_context io{1};
  tcp::socket socket{io};
  asio::steady_timer timer{io};
  bool connected = false;
  std::uint64_t epoch = 0;  // counts dropped connections; stale write handlers see a change
  std::mutex call_mutex;    // one generate() at a time
  mutable std::mutex state_mutex;
  std::string router;            // guarded by state_mutex
  std::uint64_t active_tag = 0;  // guarded by state_mutex; 0 = no request runs
  std::atomic<bool> cancel_requested{false};
  std::uint64_t next_tag = 1;
  std::optional<call_state> call;
  bool last_heard = false;      // whether the last run_call heard from the router at all
  generate_result last_result;  // what the last run_call had gathered
  std::deque<std::vector<std::byte>> out;
  std::array<std::byte, wire::client_length_bytes> length{};
  std::vector<std::uint64_t> body;

  // ---- connecting ------------------------------------------------------------------
  void drop_connection() {
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    connected = false;
    out.clear();
    ++epoch;
    std::lock_guard lock(state_mutex);
    router.clear();
  }

  expected<void> connect_one(const std::string& address, clock::time_point deadline) {
    auto endpoints = resolve(io, address);
    if (!endpoints) return tl::unexpected(endpoints.error());
    error_code result = asio::error::would_block;
    bool expired = false;
    asio::async_connect(socket, *endpoints, [&](error_code ec, const tcp::endpoint&) {
      result = ec;
      timer.cancel();
    });
    timer.expires_at(std::min(clock::now() + options.connect_timeout, deadline));
    timer.async_wait([&](error_code ec) {
      if (ec) return;
      expired = true;
      error_code ignored;
      socket.close(ignored);
    });
    io.restart();
    io.run();
    if (expired) return fail(errc::timed_out, fmt::format("{}: connect timed out", address));
    if (result) return fail(errc::disconnected, fmt::format("{}: {}", address, result.message()));
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    return {};
  }

  /// Tries every router in order; the first that answers wins.
  expected<void> connect_any(clock::time_point deadline) {
    std::string failures;
    for (const auto& address : options.routers) {
      if (clock::now() >= deadline) return fail(errc::timed_out, "deadline passed connecting");
      auto ok = connect_one(address, deadline);
      if (ok) {
        connected = true;
        std::lock_guard lock(state_mutex);
        router = address;
        return {};
      }
      if (ok.error().code == errc::invalid_argument) return ok;
      error_code ignored;
      socket.close(ignored);
      failures += fmt::format("{}{}", failures.empty() ? "" : "; ", ok.error().message);
    }
    return fail(errc::disconnected, fmt::format("no router answered: {}", failures));
  }

  // ---- one request -----------------------------------------------------------------
  void finish(expected<generate_result> outcome) {
    if (call->done) return;
    call->done = true;
    call->outcome = std::move(outcome);
    timer.cancel();
  }

  /// The connection is unusable: close it and end the request with `e`, or with
  /// timed_out / cancelled when that is what the request was already doing.
  void connection_failed(error e) {
    drop_connection();
    if (call->now == call_state::phase::timing_out) {
      return finish(
          fail(errc::timed_out, "deadline passed; the router did not confirm the cancel"));
    }
    if (call->now == call_state::phase::cancelling) {
      call->result.reason = wire::finish_reason::cancelled;
      return finish(call->result);
    }
    finish(tl::unexpected(std::move(e)));
  }

  void queue_write(std::vector<std::byte> frame) {
    out.push_back(std::move(frame));
    if (out.size() == 1) write_next();
  }

  void write_next() {
    asio::async_write(
        socket, asio::buffer(out.front()), [this, at = epoch](error_code ec, std::size_t) {
          if (at != epoch) return;  // the connection was dropped, and `out` with it
          if (ec) {
            if (connected && !call->done) {
              connection_failed({errc::disconnected,
                                 fmt::format("writing to {}: {}", router_name(), ec.message())});
            }
            return;
          }
          out.pop_front();
          if (!out.empty()) write_next();
        });
  }

  std::string router_name() const {
    std::lock_guard lock(state_mutex);
    return router;
  }

  void begin_cancel(call_state::phase why) {
    if (call->done || call->now != call_state::phase::running) return;
    call->now = why;
    auto frame = wire::encode_client_frame(wire::cancel_request{call->tag}, options.limits);
    if (frame) queue_write(std::move(*frame));
    timer.expires_after(options.cancel_grace);
    timer.async_wait([this](error_code ec) {
      if (ec || call->done) return;
      connection_failed({errc::disconnected, "the router did not confirm the cancel"});
    });
  }

  void read_length() {
    asio::async_read(socket, asio::buffer(length), [this](error_code ec, std::size_t) {
      if (call->done) return;
      if (ec) return read_failed(ec);
      auto size = wire::client_frame_length(length, options.limits);
      if (!size) return bad_frame(size.error());
      body.resize(*size / sizeof(std::uint64_t));
      asio::async_read(
          socket, asio::buffer(body.data(), *size), [this](error_code ec2, std::size_t) {
            if (call->done) return;
            if (ec2) return read_failed(ec2);
            auto message =
                wire::decode_client_message(std::as_bytes(std::span(body)), options.limits);
            if (!message) return bad_frame(message.error());
            on_message(std::move(*message));
            if (!call->done) read_length();
          });
    });
  }

  void read_failed(error_code ec) {
    if (call->done) return;
    connection_failed(
        {errc::disconnected, fmt::format("router {} went away{}: {}", router_name(),
                                         call->heard ? " mid-stream" : "", ec.message())});
  }

  void bad_frame(const error& e) {
    connection_failed({errc::invalid_argument,
                       fmt::format("router {} sent a bad frame: {}", router_name(), e.message)});
  }

  bool deliver(const client_event& event) {
    if (call->now != call_state::phase::running || !*call->on_event) return true;
    return (*call->on_event)(event);
  }

  void on_message(wire::client_message message) {
    if (auto* r = std::get_if<wire::rejected>(&message); r && r->client_tag == 0) {
      return connection_failed({r->code, fmt::format("router {}: {}", router_name(), r->message)});
    }
    std::visit(
        [this](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, wire::generate_request> ||
                        std::is_same_v<T, wire::cancel_request>) {
            connection_failed({errc::invalid_argument,
                               fmt::format("router {} sent a client's message", router_name())});
          } else {
            if (m.client_tag != call->tag) return;  // a request this client gave up on
            call->heard = true;
            on_own_message(m);
          }
        },
        message);
  }

  void on_own_message(const wire::accepted& a) {
    auto& r = call->result;
    if (call->seen->accepted) return;  // a resumed request: the caller saw its accepted
    call->seen->accepted = a;
    r.request = a.request;
    r.seed = a.seed;
    r.prompt_tokens = a.prompt_tokens;
    r.placement = a.placement;
    r.prefill_node = a.prefill_node;
    r.decode_node = a.decode_node;
    if (!deliver(a)) begin_cancel(call_state::phase::cancelling);
  }

  void on_own_message(const wire::token_chunk& t) {
    call->result.completion_tokens += static_cast<std::uint32_t>(t.tokens.size());
    call->seen->record(t);
    if (!deliver(t)) begin_cancel(call_state::phase::cancelling);
  }

  void on_own_message(const wire::finished& f) {
    if (call->now == call_state::phase::timing_out) {
      return finish(fail(errc::timed_out, "the request's deadline passed"));
    }
    auto& r = call->result;
    r.reason = f.reason;
    r.prompt_tokens = f.prompt_tokens;
    r.completion_tokens = f.completion_tokens;
    r.router_us = f.router_us;
    finish(r);
  }

  void on_own_message(const wire::rejected& j) {
    if (call->now == call_state::phase::timing_out) {
      return finish(fail(errc::timed_out, "the request's deadline passed"));
    }
    finish(fail(j.code, fmt::format("router {}: {}", router_name(), j.message)));
  }

  expected<generate_result> run_call(const wire::generate_request& request,
                                     const event_callback& on_event, clock::time_point deadline,
                                     progress& seen, const generate_result& so_far) {
    auto frame = wire::encode_client_frame(request, options.limits);
    if (!frame) return tl::unexpected(frame.error());
    call.emplace();
    call->tag = request.client_tag;
    call->on_event = &on_event;
    call->seen = &seen;
    call->result = so_far;
    call->result.router = router_name();
    queue_write(std::move(*frame));
    read_length();
    if (deadline != clock::time_point::max()) {
      timer.expires_at(deadline);
      timer.async_wait([this](error_code ec) {
        if (!ec) begin_cancel(call_state::phase::timing_out);
      });
    }
    if (cancel_requested.load()) begin_cancel(call_state::phase::cancelling);
    io.restart();
    io.run();
    auto outcome = std::move(*call->outcome);
    last_heard = call->heard;
    last_result = call->result;
    call.reset();
    return outcome;
  }

  /// The next connect_any() starts after the router just used (which went away).
  void rotate_past_current() {
    const auto current = router_name();
    auto& list = options.routers;
    const auto it = std::find(list.begin(), list.end(), current);
    if (it != list.end()) std::rotate(list.begin(), it + 1, list.end());
  }
};

router_client::router_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
router_client::~router_client() {
  if (impl_) impl_->drop_connection();
}

expected<std::unique_ptr<router_client>> router_client::connect(client_options options) {
  if (options.routers.empty()) {
    return fail(errc::invalid_argument, "router client: no router addresses");
  }
  auto p = std::make_unique<impl>(std::move(options));
  if (auto ok = p->connect_any(clock::time_point::max()); !ok) return tl::unexpected(ok.error());
  // `new`: the constructor is private, so make_unique cannot reach it.
  return std::unique_ptr<router_client>(new router_client(std::move(p)));
}

expected<generate_result> router_client::generate(wire::generate_request request,
                                                  const event_callback& on_event) {
  std::lock_guard call_lock(impl_->call_mutex);
  auto& d = *impl_;
  request.client_tag = d.next_tag++;
  const auto deadline = request.timeout_ms == 0
                            ? clock::time_point::max()
                            : clock::now() + std::chrono::milliseconds(request.timeout_ms);
  {
    std::lock_guard lock(d.state_mutex);
    d.active_tag = request.client_tag;
  }
  d.cancel_requested = false;
  const auto end_call = [&d](expected<generate_result> r) {
    std::lock_guard lock(d.state_mutex);
    d.active_tag = 0;
    return r;
  };
  // A connection may have died while idle: a request the router never acknowledged is
  // retried, once per router address, on whichever router answers next. One that was
  // accepted and whose router then went away is resumed where its stream stopped.
  progress seen;
  seen.choices.resize(request.n);
  generate_result so_far;
  std::uint32_t resumes = 0;
  std::uint32_t reconnects = 0;  // while no router answers a resume
  for (std::size_t attempt = 0;; ++attempt) {
    if (d.cancel_requested.load()) {
      generate_result cancelled = so_far;
      cancelled.reason = wire::finish_reason::cancelled;
      return end_call(cancelled);
    }
    if (!d.connected) {
      if (auto ok = d.connect_any(deadline); !ok) {
        if (clock::now() >= deadline) {
          return end_call(
              fail(errc::timed_out, fmt::format("deadline passed: {}", ok.error().message)));
        }
        if (resumes > 0 && ok.error().code == errc::disconnected) {
          // Every router is down for a moment (one restarting): try again shortly.
          std::this_thread::sleep_for(resume_pause);
          if (reconnects++ < d.options.max_resumes) continue;
          return end_call(
              fail(errc::disconnected, fmt::format("the router went away mid-stream and no router "
                                                   "took the request back after {} tries: {}",
                                                   reconnects, ok.error().message)));
        }
        return end_call(tl::unexpected(ok.error()));
      }
    }
    auto sent = request;
    if (seen.accepted) {
      sent.params.seed = seen.accepted->seed;
      sent.has_seed = true;
      sent.resume = wire::resume_state{seen.accepted->request, seen.choices};
      if (deadline != clock::time_point::max()) {
        sent.timeout_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(
            1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now())
                   .count()));
      }
    }
    auto result = d.run_call(sent, on_event, deadline, seen, so_far);
    if (result) {
      result->resumes = resumes;
      return end_call(std::move(result));
    }
    const bool gone = result.error().code == errc::disconnected;
    if (gone && seen.accepted && resumes < d.options.max_resumes && !d.cancel_requested.load() &&
        clock::now() < deadline) {
      ++resumes;
      so_far = d.last_result;
      d.rotate_past_current();
      d.drop_connection();
      continue;
    }
    // Not accepted yet (no answer, or a router that drains): the next router.
    const bool retry =
        gone && (!d.last_heard || !seen.accepted) && attempt < d.options.routers.size();
    if (!retry) return end_call(std::move(result));
    if (d.last_heard) {
      d.rotate_past_current();
      d.drop_connection();
    }
  }
}

void router_client::cancel() {
  auto& d = *impl_;
  std::lock_guard lock(d.state_mutex);
  if (d.active_tag == 0) return;
  d.cancel_requested = true;
  asio::post(d.io, [&d, tag = d.active_tag] {
    if (d.call && d.call->tag == tag) d.begin_cancel(call_state::phase::cancelling);
  });
}

std::string router_client::connected_router() const {
  return impl_->router_name();
}

}  // namespace baton::client
