#include "actors/router_actor.hpp"

#include <algorithm>
#include <set>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "actors/shell.hpp"
#include "runtime/messages.hpp"

namespace baton::actors {
namespace {

/// A client request handed over by the native server.
struct start_request {
  wire::generate_request request;
  std::shared_ptr<client::response_stream> stream;
  std::chrono::steady_clock::time_point received;  ///< off the client's socket
};

/// The server ended a request (client cancel, disconnect, slow reader, shutdown).
struct stop_request {
  std::uint64_t stream = 0;
};

}  // namespace
}  // namespace baton::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::actors::start_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::actors::stop_request)

namespace baton::actors {
namespace {

/// Check slow clients again: (drain_atom).
using drain_atom = caf::atom_constant<caf::atom("r_drain")>;

/// A client whose stream holds more than this is slow: its decode gets no new window.
constexpr std::size_t slow_client_bytes = 64 * 1024;
constexpr auto drain_check = std::chrono::milliseconds(10);

struct open_request {
  std::shared_ptr<client::response_stream> stream;
  clock::time_point started;
  bool first_token = false;
  /// Time during which some message of this request was in this process, so far: the
  /// union of the messages' intervals, since a message that waits behind another of the
  /// same request (a finish behind its last tokens) adds only its own part.
  clock::duration in_router{};
  clock::time_point counted_until{};  ///< the end of the last interval counted

  /// Counts the interval [from, to] of one message (to never decreases).
  void count(clock::time_point from, clock::time_point to) {
    const auto start = std::max(from, counted_until);
    if (to > start) in_router += to - start;
    counted_until = std::max(counted_until, to);
  }
};

struct router_shell {
  runtime::node_context* ctx = nullptr;
  std::unique_ptr<router_state> state;
  router_options options;
  std::unordered_map<std::uint64_t, open_request> open;           // by request id
  std::unordered_map<std::uint64_t, wire::request_id> by_stream;  // stream id -> request
  runtime::histogram* ttft = nullptr;
  runtime::histogram* e2e = nullptr;
  runtime::gauge* inflight = nullptr;
  runtime::gauge* prefill_workers = nullptr;
  runtime::gauge* decode_workers = nullptr;
  bool announced = false;
  std::set<std::uint64_t> slow;  ///< requests whose client has no room (by request id)
  std::optional<stat_counters> counters;
  /// When the message being handled reached this process (its socket or transport).
  clock::time_point received;
};
using router_actor = caf::stateful_actor<router_shell>;

void deliver(router_shell& st, client_event& e) {
  const auto key = static_cast<std::uint64_t>(e.request);
  auto it = st.open.find(key);
  if (it == st.open.end()) return;
  auto& o = it->second;
  const auto now = clock::now();
  const double seconds = std::chrono::duration<double>(now - o.started).count();
  if (std::holds_alternative<wire::token_chunk>(e.what) && !o.first_token) {
    o.first_token = true;
    st.ttft->observe(seconds);
  }
  if (auto* f = std::get_if<wire::finished>(&e.what)) {
    o.count(st.received, now);
    const auto spent = o.in_router;
    f->router_us = static_cast<std::uint32_t>(std::min<std::int64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(spent).count(), UINT32_MAX));
  }
  const bool last = std::holds_alternative<wire::finished>(e.what) ||
                    std::holds_alternative<wire::rejected>(e.what);
  (void)o.stream->send(std::move(e.what));
  if (last) {
    st.e2e->observe(seconds);
    st.by_stream.erase(o.stream->id());
    st.open.erase(it);
  }
}

void after(router_actor* self, router_effects out) {
  auto& st = self->state;
  for (auto& e : out.events) deliver(st, e);
  perform(*st.ctx, self, router_name, std::move(out));
  st.inflight->set(static_cast<double>(st.state->inflight()));
  st.prefill_workers->set(static_cast<double>(st.state->workers(wire::role::prefill)));
  st.decode_workers->set(static_cast<double>(st.state->workers(wire::role::decode)));
  st.counters->publish();
}

void mirror_stats(router_shell& st) {
  const auto& s = st.state->stats();
  auto& c = *st.counters;
  const std::string requests = "baton_router_requests_total";
  const std::string help = "Requests by outcome";
  c.mirror(s.accepted, requests, help, {{"outcome", "accepted"}});
  c.mirror(s.overloaded, requests, help, {{"outcome", "overloaded"}});
  c.mirror(s.invalid, requests, help, {{"outcome", "invalid"}});
  c.mirror(s.finished, requests, help, {{"outcome", "finished"}});
  c.mirror(s.failed, requests, help, {{"outcome", "failed"}});
  c.mirror(s.client_gone, requests, help, {{"outcome", "client_gone"}});
  c.mirror(s.timed_out, requests, help, {{"outcome", "timed_out"}});
  const std::string placed = "baton_router_placements_total";
  const std::string placed_help = "Attempts by placement";
  c.mirror(s.disaggregated, placed, placed_help, {{"placement", "disaggregated"}});
  c.mirror(s.prefill_on_decode, placed, placed_help, {{"placement", "prefill-on-decode"}});
  c.mirror(s.no_prefill_fallback, "baton_router_no_prefill_fallbacks_total",
           "Attempts prefilled on decode because no prefill node was alive");
  c.mirror(s.retries, "baton_router_retries_total", "Attempts retried after a failure");
  c.mirror(s.tokens, "baton_router_tokens_total", "Tokens streamed to clients");
  c.mirror(s.stale_messages, "baton_router_stale_messages_total",
           "Messages from old attempts, dropped");
}

/// Charges the time since the current message reached this process to request `id`
/// (after its effects were handed on).
void charge(router_shell& st, std::uint64_t id) {
  if (auto it = st.open.find(id); it != st.open.end()) {
    it->second.count(st.received, clock::now());
  }
}

void on_member(router_actor* self, const wire::member& m) {
  auto& st = self->state;
  if (m.state == wire::member_state::dead || m.state == wire::member_state::left) {
    after(self, st.state->on_node_gone(m.node, clock::now()));
    return;
  }
  if (m.state != wire::member_state::alive) return;
  for (const wire::role r : m.roles) {
    if (r == wire::role::prefill) {
      st.state->add_worker({m.node, prefill_name}, r, m.kind, 0);
    } else if (r == wire::role::decode) {
      const auto blocks = st.options.kv_blocks.find(m.node);
      st.state->add_worker({m.node, decode_name}, r, m.kind,
                           blocks == st.options.kv_blocks.end() ? 0 : blocks->second);
    }
  }
  const bool prefill_ok = st.state->workers(wire::role::prefill) > 0 ||
                          st.options.config.when_no_prefill != no_prefill_policy::fail;
  if (!st.announced && prefill_ok && st.state->workers(wire::role::decode) > 0) {
    st.announced = true;
    spdlog::info("router ready native={}{} ({} prefill, {} decode workers)",
                 st.options.native_address.empty() ? "-" : st.options.native_address,
                 st.options.http_address.empty() ? std::string()
                                                 : fmt::format(" http={}", st.options.http_address),
                 st.state->workers(wire::role::prefill), st.state->workers(wire::role::decode));
  }
}

caf::behavior router_behavior(router_actor* self, runtime::node_context* ctx,
                              const engine::tokenizer* tok, router_options options) {
  auto& st = self->state;
  st.ctx = ctx;
  st.options = options;
  st.counters.emplace(ctx->metrics());
  st.state =
      std::make_unique<router_state>(*tok, options.seq_len, options.block_tokens,
                                     wire::actor_address{ctx->name(), router_name}, options.config);
  mirror_stats(st);
  auto& metrics = ctx->metrics();
  const auto latency = runtime::exponential_bounds(0.001, 2, 16);
  st.ttft = &metrics.get_histogram("baton_router_ttft_seconds",
                                   "Time from request to its first token", latency);
  st.e2e = &metrics.get_histogram("baton_router_request_seconds", "Time from request to its end",
                                  latency);
  st.inflight = &metrics.get_gauge("baton_router_requests_inflight", "Requests admitted");
  st.prefill_workers = &metrics.get_gauge("baton_router_workers", "Workers the router places on",
                                          {{"role", "prefill"}});
  st.decode_workers = &metrics.get_gauge("baton_router_workers", "Workers the router places on",
                                         {{"role", "decode"}});
  st.received = clock::now();
  for (const auto& m : ctx->watch_members(caf::actor_cast<caf::actor>(self->address()))) {
    on_member(self, m);
  }
  after(self, {});
  spdlog::info("router: sampling seeds from seed {}, {} prefill and {} decode workers known",
               st.state->seed(), st.state->workers(wire::role::prefill),
               st.state->workers(wire::role::decode));
  return {
      [self](start_request& r) {
        auto& s = self->state;
        s.received = r.received;
        auto out = s.state->on_generate(r.request, clock::now());
        std::uint64_t key = 0;
        if (!out.events.empty()) {
          const auto id = out.events.front().request;
          key = static_cast<std::uint64_t>(id);
          s.open[key] = {r.stream, r.received, false, {}, {}};
          s.by_stream[r.stream->id()] = id;
        }
        after(self, std::move(out));
        charge(s, key);
      },
      [self](stop_request& r) {
        auto& s = self->state;
        s.received = clock::now();
        auto it = s.by_stream.find(r.stream);
        if (it == s.by_stream.end()) return;
        const auto id = it->second;
        s.by_stream.erase(it);
        s.open.erase(static_cast<std::uint64_t>(id));
        after(self, s.state->on_client_gone(id));
      },
      [self](runtime::inbound& in) {
        auto& s = *self->state.state;
        const auto& from = in.frame->source;
        const auto now = clock::now();
        self->state.received = in.received;
        std::visit(
            [&](const auto& body) {
              using T = std::decay_t<decltype(body)>;
              if constexpr (std::is_same_v<T, wire::token_batch>) {
                auto& shell = self->state;
                const auto key = static_cast<std::uint64_t>(body.request);
                auto o = shell.open.find(key);
                const bool room =
                    o == shell.open.end() || o->second.stream->queued_bytes() < slow_client_bytes;
                if (!room && shell.slow.insert(key).second && shell.slow.size() == 1) {
                  self->delayed_send(self, drain_check, drain_atom::value);
                }
                after(self, s.on_tokens(from, body, room));
                charge(shell, key);
              } else if constexpr (std::is_same_v<T, wire::finish>) {
                after(self, s.on_finish(from, body));
              } else if constexpr (std::is_same_v<T, wire::abort_attempt>) {
                after(self, s.on_abort(from, body, now));
                charge(self->state, static_cast<std::uint64_t>(body.request));
              } else {
                spdlog::warn("router: ignoring {} from {}/{}", wire::body_name(in.frame->body),
                             from.node, from.actor);
              }
            },
            in.frame->body);
      },
      [self](timer_atom, std::uint64_t id) {
        self->state.received = clock::now();
        after(self, self->state.state->on_timer(id, clock::now()));
      },
      [self](drain_atom) {
        auto& shell = self->state;
        shell.received = clock::now();
        for (auto it = shell.slow.begin(); it != shell.slow.end();) {
          auto o = shell.open.find(*it);
          if (o != shell.open.end() && o->second.stream->queued_bytes() >= slow_client_bytes) {
            ++it;
            continue;
          }
          if (o != shell.open.end()) {
            after(self, shell.state->on_client_ready(wire::request_id{*it}));
          }
          it = shell.slow.erase(it);
        }
        if (!shell.slow.empty()) self->delayed_send(self, drain_check, drain_atom::value);
      },
      [self](runtime::member_update& u) {
        self->state.received = clock::now();
        on_member(self, u.member);
        after(self, {});
      },
      [self](runtime::delivery_failure& f) {
        spdlog::warn("router: to {}/{}: {}", f.target.node, f.target.actor, f.reason.message);
        self->state.received = clock::now();
        after(self, self->state.state->on_undeliverable(f.target.node, clock::now()));
      },
  };
}

}  // namespace

caf::actor spawn_router(runtime::node_context& ctx, const engine::tokenizer& tok,
                        router_options options) {
  return ctx.system().spawn(router_behavior, &ctx, &tok, std::move(options));
}

void router_gateway::start(const wire::generate_request& request,
                           std::shared_ptr<client::response_stream> stream) {
  auto router = ctx_.lookup(router_name);
  if (!router) {
    (void)stream->send(
        wire::rejected{request.client_tag, errc::overloaded, "the router is not running"});
    return;
  }
  caf::anon_send(router, start_request{request, std::move(stream), clock::now()});
}

void router_gateway::cancel(const client::response_stream& stream, client::cancel_reason) {
  if (auto router = ctx_.lookup(router_name)) caf::anon_send(router, stop_request{stream.id()});
}

}  // namespace baton::actors
