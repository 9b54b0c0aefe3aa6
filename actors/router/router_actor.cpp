#include "actors/router/router_actor.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "actors/shell.hpp"
#include "runtime/messages.hpp"
#include "runtime/peer_link.hpp"

namespace baton::actors {
namespace {

/// Check slow clients again: (drain_atom).
using drain_atom = caf::atom_constant<caf::atom("r_drain")>;
/// The injected crash is due (--fault-crash router:N): the actor throws.
using crash_atom = caf::atom_constant<caf::atom("r_crash")>;

/// A client whose stream holds more than this is slow: its decode gets no new window.
constexpr std::size_t slow_client_bytes = 64 * 1024;
constexpr auto drain_check = std::chrono::milliseconds(10);

struct open_request {
  std::shared_ptr<frontend::response_stream> stream;
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

}  // namespace

/// The router's state and its shell behind one lock, run on the thread each event arrives
/// on: a client's I/O thread (requests, cancellations), the transport's progress thread
/// (workers' frames, through node_context::set_taker), or the router actor (timers,
/// membership, delivery failures, frames that came through a bridge). Frames leave
/// through peer links on the same thread, so no message of a request waits for a CAF
/// worker to wake. The actor remains the router's identity (published, supervised,
/// restarted) and keeps its timers.
class router_core {
 public:
  router_core(runtime::node_context& ctx, const engine::tokenizer& tok, router_options options);
  /// Where timers and slow-client checks go; an invalid handle once the actor is gone.
  void attach(const caf::actor& self);

  void start(const wire::generate_request& request,
             std::shared_ptr<frontend::response_stream> stream, clock::time_point received);
  void stop(std::uint64_t stream);
  /// A frame from a worker; false if it is not one the router handles.
  bool take(const wire::frame& f, clock::time_point received);
  /// The actor's timer: runs the state's timers that are due.
  void on_timer();
  void on_drain();
  void on_member(const wire::member& m);
  void on_failure(const runtime::delivery_failure& f);
  /// A worker's actor terminated on a live node: its requests migrate.
  void on_actor_gone(const wire::actor_address& actor);
  /// This node had been declared dead and refuted (router_state::on_buried).
  void on_buried();
  /// The router actor is gone: every open request ends with rejected{disconnected}, which
  /// a router client answers by resuming the request (through this node once the router
  /// restarted, or another).
  void abandon();

 private:
  // The lock is held for all of these.
  void after(router_effects out);
  void deliver(client_event& e);
  void charge(std::uint64_t id);
  void learn(const wire::member& m);
  void mirror_stats();
  /// Asks the actor for a timer message at the earliest timer due, unless one comes by then.
  void arm();
  /// The failure boundary of the threads that are not the actor's (a client's I/O thread,
  /// the progress thread): an exception from `fn` ends request `id` (if open) with
  /// rejected{failed}, logged and counted, instead of escaping to that thread.
  template <class F>
  void guarded(const char* what, std::uint64_t id, F&& fn);

  std::mutex mutex_;
  runtime::node_context& ctx_;
  router_options options_;
  router_state state_;
  caf::actor_addr self_;
  std::unordered_map<std::uint64_t, open_request> open_;           // by request id
  std::unordered_map<std::uint64_t, wire::request_id> by_stream_;  // stream id -> request
  runtime::histogram& ttft_;
  runtime::histogram& e2e_;
  runtime::gauge& inflight_;
  runtime::gauge& waiting_;
  runtime::gauge& prefill_workers_;
  runtime::gauge& decode_workers_;
  runtime::counter& failures_;
  bool announced_ = false;
  std::set<std::uint64_t> slow_;  ///< requests whose client has no room (by request id)
  stat_counters counters_;
  /// When the event being handled reached this process (its socket or transport).
  clock::time_point received_;
  /// The state's timers (one per request: its deadline), kept here rather than one CAF
  /// delayed message each, each of which would wake CAF's clock thread.
  std::multimap<clock::time_point, std::uint64_t> timers_;
  clock::time_point armed_ = clock::time_point::max();
};

namespace {

const auto latency_bounds = runtime::exponential_bounds(0.001, 2, 16);

/// `config` with request ids counting from this moment (router_config::first_request): a
/// router restarted by its supervisor, or in a restarted process, issues new ones.
router_config started_now(router_config config) {
  config.first_request =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  return config;
}

}  // namespace

router_core::router_core(runtime::node_context& ctx, const engine::tokenizer& tok,
                         router_options options)
    : ctx_(ctx),
      options_(std::move(options)),
      state_(tok, options_.seq_len, options_.block_tokens,
             wire::actor_address{ctx.name(), router_name}, started_now(options_.config)),
      ttft_(ctx.metrics().get_histogram("baton_router_ttft_seconds",
                                        "Time from request to its first token", latency_bounds)),
      e2e_(ctx.metrics().get_histogram("baton_router_request_seconds",
                                       "Time from request to its end", latency_bounds)),
      inflight_(ctx.metrics().get_gauge("baton_router_requests_inflight", "Requests admitted")),
      waiting_(ctx.metrics().get_gauge("baton_router_waiting_requests",
                                       "Requests waiting for a worker (none alive, or no room)")),
      prefill_workers_(ctx.metrics().get_gauge(
          "baton_router_workers", "Workers the router places on", {{"role", "prefill"}})),
      decode_workers_(ctx.metrics().get_gauge(
          "baton_router_workers", "Workers the router places on", {{"role", "decode"}})),
      failures_(ctx.metrics().get_counter("baton_router_handler_failures_total",
                                          "Requests ended because the router failed handling "
                                          "one of their messages (each logged)")),
      counters_(ctx.metrics()) {
  mirror_stats();
}

template <class F>
void router_core::guarded(const char* what, std::uint64_t id, F&& fn) {
  try {
    fn();
    return;
  } catch (const std::exception& e) {
    spdlog::error("router: {} of request {} failed: {}; the request ends", what, id, e.what());
  } catch (...) {
    spdlog::error("router: {} of request {} failed; the request ends", what, id);
  }
  failures_.add();
  try {
    auto it = open_.find(id);
    if (it == open_.end()) return;
    (void)it->second.stream->send(
        wire::rejected{0, errc::failed, "the router failed handling this request"});
    by_stream_.erase(it->second.stream->id());
    open_.erase(it);
    after(state_.on_client_gone(wire::request_id{id}, clock::now()));
  } catch (...) {  // NOLINT(bugprone-empty-catch): the request is gone either way
  }
}

void router_core::attach(const caf::actor& self) {
  std::lock_guard lock(mutex_);
  self_ = self.address();
  received_ = clock::now();
  for (const auto& m : ctx_.watch_members(self)) learn(m);
  after({});
  spdlog::info("router: sampling seeds from seed {}, {} prefill and {} decode workers known",
               state_.seed(), state_.workers(wire::role::prefill),
               state_.workers(wire::role::decode));
}

void router_core::mirror_stats() {
  const auto& s = state_.stats();
  auto& c = counters_;
  const std::string requests = "baton_router_requests_total";
  const std::string help = "Requests by outcome";
  c.mirror(s.accepted, requests, help, {{"outcome", "accepted"}});
  c.mirror(s.overloaded, requests, help, {{"outcome", "overloaded"}});
  c.mirror(s.invalid, requests, help, {{"outcome", "invalid"}});
  c.mirror(s.finished, requests, help, {{"outcome", "finished"}});
  c.mirror(s.failed, requests, help, {{"outcome", "failed"}});
  c.mirror(s.client_gone, requests, help, {{"outcome", "client_gone"}});
  c.mirror(s.timed_out, requests, help, {{"outcome", "timed_out"}});
  c.mirror(s.unavailable, requests, help, {{"outcome", "unavailable"}});
  c.mirror(s.waited, "baton_router_waited_total", "Requests that waited for a worker");
  c.mirror(s.resumed, "baton_router_resumed_total",
           "Requests resumed here after their router died (a client came back)");
  c.mirror(s.claimed, "baton_router_claimed_attempts_total",
           "Attempts decode nodes handed over to a resumed request (no recompute)");
  for (std::size_t i = 0; i < migration_causes; ++i) {
    const auto cause = static_cast<migration_cause>(i);
    c.mirror(s.migrations[i], "baton_router_migrations_total",
             "Requests whose work moved to other workers, by cause",
             {{"cause", std::string(to_string(cause))}});
  }
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

void router_core::deliver(client_event& e) {
  const auto key = static_cast<std::uint64_t>(e.request);
  auto it = open_.find(key);
  if (it == open_.end()) return;
  auto& o = it->second;
  const auto now = clock::now();
  const double seconds = std::chrono::duration<double>(now - o.started).count();
  if (std::holds_alternative<wire::token_chunk>(e.what) && !o.first_token) {
    o.first_token = true;
    ttft_.observe(seconds);
  }
  if (auto* f = std::get_if<wire::finished>(&e.what)) {
    o.count(received_, now);
    f->router_us = static_cast<std::uint32_t>(std::min<std::int64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(o.in_router).count(), UINT32_MAX));
  }
  const bool last = std::holds_alternative<wire::finished>(e.what) ||
                    std::holds_alternative<wire::rejected>(e.what);
  (void)o.stream->send(std::move(e.what));
  if (last) {
    e2e_.observe(seconds);
    by_stream_.erase(o.stream->id());
    open_.erase(it);
  }
}

void router_core::after(router_effects out) {
  // A frame that cannot leave (its node is not a member, or has too much waiting) ends
  // its attempt, whose retry may send more: carry on until nothing is left.
  std::deque<router_effects> todo;
  todo.push_back(std::move(out));
  while (!todo.empty()) {
    auto next = std::move(todo.front());
    todo.pop_front();
    for (const auto& line : next.log) spdlog::warn("router: {}", line);
    for (auto& e : next.events) deliver(e);
    for (auto& s : next.sends) {
      if (send_local(ctx_, router_name, s)) continue;
      const auto node = s.to.node;
      expected<std::uint64_t> sent = fail(errc::not_found, "not a member");
      if (auto link = ctx_.link(node)) {
        sent = link->send({ctx_.name(), router_name}, std::move(s.to), std::move(s.body));
      }
      if (!sent) {
        spdlog::warn("router: to {}: {}", node, sent.error().message);
        todo.push_back(state_.on_undeliverable(node, clock::now()));
      }
    }
    for (const auto& t : next.timers) timers_.emplace(t.at, t.id);
  }
  arm();
  inflight_.set(static_cast<double>(state_.inflight()));
  ctx_.set_work(router_name, state_.inflight());
  waiting_.set(static_cast<double>(state_.waiting()));
  prefill_workers_.set(static_cast<double>(state_.workers(wire::role::prefill)));
  decode_workers_.set(static_cast<double>(state_.workers(wire::role::decode)));
  counters_.publish();
}

void router_core::arm() {
  if (timers_.empty() || timers_.begin()->first >= armed_) return;
  auto self = caf::actor_cast<caf::actor>(self_);
  if (!self) return;
  armed_ = timers_.begin()->first;
  const auto now = clock::now();
  caf::delayed_anon_send(self, armed_ > now ? armed_ - now : clock::duration::zero(),
                         timer_atom::value, std::uint64_t{0});
}

/// Charges the time since the current event reached this process to request `id` (after
/// its effects were handed on).
void router_core::charge(std::uint64_t id) {
  if (auto it = open_.find(id); it != open_.end()) it->second.count(received_, clock::now());
}

void router_core::start(const wire::generate_request& request,
                        std::shared_ptr<frontend::response_stream> stream,
                        clock::time_point received) {
  std::lock_guard lock(mutex_);
  received_ = received;
  if (options_.crash.count()) {
    if (auto self = caf::actor_cast<caf::actor>(self_)) caf::anon_send(self, crash_atom::value);
  }
  std::uint64_t key = 0;
  router_effects out;
  try {
    out = state_.on_generate(request, clock::now());
    if (!out.events.empty()) {
      const auto id = out.events.front().request;
      key = static_cast<std::uint64_t>(id);
      open_[key] = {stream, received, false, {}, {}};
      by_stream_[stream->id()] = id;
    }
  } catch (const std::exception& e) {  // nothing of this request is open yet
    failures_.add();
    spdlog::error("router: admitting a request failed: {}; it is rejected", e.what());
    (void)stream->send(wire::rejected{0, errc::failed, "the router failed admitting this request"});
    return;
  }
  guarded("admitting", key, [&] {
    after(std::move(out));
    charge(key);
  });
}

void router_core::stop(std::uint64_t stream) {
  std::lock_guard lock(mutex_);
  received_ = clock::now();
  auto it = by_stream_.find(stream);
  if (it == by_stream_.end()) return;
  const auto id = it->second;
  by_stream_.erase(it);
  open_.erase(static_cast<std::uint64_t>(id));
  after(state_.on_client_gone(id, clock::now()));
}

bool router_core::take(const wire::frame& f, clock::time_point received) {
  const auto* tokens = std::get_if<wire::token_batch>(&f.body);
  const auto* finish = std::get_if<wire::finish>(&f.body);
  const auto* abort = std::get_if<wire::abort_attempt>(&f.body);
  const auto* claimed = std::get_if<wire::claimed>(&f.body);
  if (tokens == nullptr && finish == nullptr && abort == nullptr && claimed == nullptr) {
    return false;
  }
  std::lock_guard lock(mutex_);
  received_ = received;
  const auto& from = f.source;
  if (claimed != nullptr) {
    const auto id = static_cast<std::uint64_t>(claimed->request);
    guarded("a claim's answer", id,
            [&] { after(state_.on_claimed(from, *claimed, clock::now())); });
    return true;
  }
  const auto id = static_cast<std::uint64_t>(tokens != nullptr   ? tokens->request
                                             : finish != nullptr ? finish->request
                                                                 : abort->request);
  guarded("a worker's message", id, [&] {
    if (tokens != nullptr) {
      auto o = open_.find(id);
      const bool room = o == open_.end() || o->second.stream->queued_bytes() < slow_client_bytes;
      if (!room && slow_.insert(id).second && slow_.size() == 1) {
        if (auto self = caf::actor_cast<caf::actor>(self_)) {
          caf::delayed_anon_send(self, drain_check, drain_atom::value);
        }
      }
      after(state_.on_tokens(from, *tokens, room, clock::now()));
      charge(id);
    } else if (finish != nullptr) {
      after(state_.on_finish(from, *finish, clock::now()));
    } else {
      after(state_.on_abort(from, *abort, clock::now()));
      charge(id);
    }
  });
  return true;
}

void router_core::on_timer() {
  std::lock_guard lock(mutex_);
  received_ = clock::now();
  armed_ = clock::time_point::max();  // this was it (a later one still on its way is harmless)
  router_effects out;
  while (!timers_.empty() && timers_.begin()->first <= received_) {
    out.append(state_.on_timer(timers_.begin()->second, received_));
    timers_.erase(timers_.begin());
  }
  after(std::move(out));
}

void router_core::on_drain() {
  std::lock_guard lock(mutex_);
  received_ = clock::now();
  for (auto it = slow_.begin(); it != slow_.end();) {
    auto o = open_.find(*it);
    if (o != open_.end() && o->second.stream->queued_bytes() >= slow_client_bytes) {
      ++it;
      continue;
    }
    if (o != open_.end()) after(state_.on_client_ready(wire::request_id{*it}, clock::now()));
    it = slow_.erase(it);
  }
  if (slow_.empty()) return;
  if (auto self = caf::actor_cast<caf::actor>(self_)) {
    caf::delayed_anon_send(self, drain_check, drain_atom::value);
  }
}

void router_core::on_member(const wire::member& m) {
  std::lock_guard lock(mutex_);
  received_ = clock::now();
  learn(m);
}

void router_core::on_buried() {
  std::lock_guard lock(mutex_);
  received_ = clock::now();
  spdlog::warn("router: this node had been declared dead: {} requests are placed again",
               state_.inflight());
  after(state_.on_buried(received_));
}

void router_core::on_actor_gone(const wire::actor_address& actor) {
  std::lock_guard lock(mutex_);
  received_ = clock::now();
  const auto role = actor.actor == prefill_name ? wire::role::prefill : wire::role::decode;
  after(state_.on_actor_restarted(actor.node, role, received_));
}

void router_core::abandon() {
  std::lock_guard lock(mutex_);
  for (auto& [id, o] : open_) {
    (void)o.stream->send(
        wire::rejected{0, errc::disconnected, "the router restarted; resume the request"});
  }
  if (!open_.empty())
    spdlog::warn("router: {} open requests ended: the router stops", open_.size());
  open_.clear();
  by_stream_.clear();
  state_.forget_all();
  ctx_.set_work(router_name, 0);
}

void router_core::on_failure(const runtime::delivery_failure& f) {
  std::lock_guard lock(mutex_);
  spdlog::warn("router: to {}/{}: {}", f.target.node, f.target.actor, f.reason.message);
  received_ = clock::now();
  after(state_.on_undeliverable(f.target.node, clock::now()));
}

void router_core::learn(const wire::member& m) {
  const auto now = clock::now();
  if (m.state == wire::member_state::dead || m.state == wire::member_state::left) {
    after(state_.on_node_gone(m.node, now));
    return;
  }
  if (m.state != wire::member_state::alive) return;
  if (m.draining) {
    state_.on_draining(m.node);
    after({});
    return;
  }
  for (const wire::role r : m.roles) {
    if (r == wire::role::prefill) {
      after(state_.add_worker({m.node, prefill_name}, r, m.kind, 0, now, m.incarnation));
    } else if (r == wire::role::decode) {
      // What the node says of its pool; a node of an older build says nothing.
      const auto blocks = options_.kv_blocks.find(m.node);
      const std::size_t kv = m.kv_blocks > 0                      ? m.kv_blocks
                             : blocks == options_.kv_blocks.end() ? 0
                                                                  : blocks->second;
      after(state_.add_worker({m.node, decode_name}, r, m.kind, kv, now));
    }
  }
  const bool prefill_ok = state_.workers(wire::role::prefill) > 0 ||
                          options_.config.when_no_prefill != no_prefill_policy::wait;
  if (!announced_ && prefill_ok && state_.workers(wire::role::decode) > 0) {
    announced_ = true;
    spdlog::info("router ready native={}{} ({} prefill, {} decode workers)",
                 options_.native_address.empty() ? "-" : options_.native_address,
                 options_.http_address.empty() ? std::string()
                                               : fmt::format(" http={}", options_.http_address),
                 state_.workers(wire::role::prefill), state_.workers(wire::role::decode));
  }
  after({});
}

namespace {

struct router_shell {
  std::shared_ptr<router_core> core;
  std::map<std::string, std::uint64_t> watched;  ///< workers' actors monitored
};
using router_actor = caf::stateful_actor<router_shell>;

caf::behavior router_behavior(router_actor* self, runtime::node_context* ctx,
                              const engine::tokenizer* tok, router_options options) {
  install_failure_boundary(*ctx, self, router_name);
  auto entry = options.entry;
  auto core = std::make_shared<router_core>(*ctx, *tok, std::move(options));
  self->state.core = core;
  core->attach(caf::actor_cast<caf::actor>(self->address()));
  ctx->set_taker(router_name, [core](const wire::frame& f, clock::time_point received) {
    return core->take(f, received);
  });
  if (entry) {
    std::lock_guard lock(entry->mutex);
    entry->core = core;
  }
  // Gone: the fast paths stop reaching this core (a restarted router installs its own), and
  // its open requests end so that their clients resume them.
  self->attach_functor([ctx, entry, weak = std::weak_ptr<router_core>(core)] {
    ctx->set_taker(router_name, {});
    if (auto c = weak.lock()) c->abandon();
    if (!entry) return;
    std::lock_guard lock(entry->mutex);
    if (entry->core == weak.lock()) entry->core.reset();
  });
  const auto watch = [self, ctx](const wire::member& m) {
    if (m.state != wire::member_state::alive || m.draining) return;
    for (const auto role : m.roles) {
      if (role == wire::role::decode) {
        watch_actor(*ctx, self, router_name, m, decode_name, self->state.watched);
      }
      if (role == wire::role::prefill) {
        watch_actor(*ctx, self, router_name, m, prefill_name, self->state.watched);
      }
    }
  };
  for (const auto& m : ctx->watch_members(caf::actor_cast<caf::actor>(self->address()))) watch(m);
  return {
      [self](timer_atom, std::uint64_t) { self->state.core->on_timer(); },
      [self](drain_atom) { self->state.core->on_drain(); },
      [self, watch](runtime::member_update& u) {
        if (u.buried) return self->state.core->on_buried();
        self->state.core->on_member(u.member);
        watch(u.member);
      },
      [self, ctx](runtime::remote_down& d) {
        self->state.watched.erase(d.actor.node + "/" + d.actor.actor);
        const auto m = ctx->member(d.actor.node);
        if (!m || m->state != wire::member_state::alive) return;  // membership says the rest
        if (d.reason.code != errc::not_found) {
          spdlog::warn("router: {}/{} terminated ({}): its requests move", d.actor.node,
                       d.actor.actor, d.reason.message);
          self->state.core->on_actor_gone(d.actor);
        }
        self->delayed_send(self, rewatch_delay, rewatch_atom::value, d.actor.node);
      },
      [watch, ctx](rewatch_atom, const std::string& node) {
        if (auto m = ctx->member(node)) watch(*m);
      },
      [self](evict_atom) { self->state.core->abandon(); },
      [](crash_atom) {
        throw std::runtime_error("fault injected: the router crashes (--fault-crash router)");
      },
      [self](runtime::delivery_failure& f) { self->state.core->on_failure(f); },
      [self](runtime::inbound& in) {
        if (!self->state.core->take(*in.frame, in.received)) {
          spdlog::warn("router: ignoring {} from {}/{}", wire::body_name(in.frame->body),
                       in.frame->source.node, in.frame->source.actor);
        }
      },
  };
}

}  // namespace

caf::actor spawn_router(runtime::node_context& ctx, const engine::tokenizer& tok,
                        router_options options) {
  return ctx.system().spawn(router_behavior, &ctx, &tok, std::move(options));
}

void router_gateway::start(const wire::generate_request& request,
                           std::shared_ptr<frontend::response_stream> stream) {
  const auto received = clock::now();
  std::shared_ptr<router_core> core;
  {
    std::lock_guard lock(entry_->mutex);
    core = entry_->core;
  }
  if (!core) {
    // Starting or restarting: disconnected, so that a router client tries the next router.
    (void)stream->send(wire::rejected{request.client_tag, errc::disconnected,
                                      "the router is not running yet: use another router"});
    return;
  }
  if (entry_->draining.load()) {
    (void)stream->send(wire::rejected{request.client_tag, errc::disconnected,
                                      "this router is draining: use another router"});
    return;
  }
  core->start(request, std::move(stream), received);
}

void router_gateway::cancel(const frontend::response_stream& stream, frontend::cancel_reason) {
  std::shared_ptr<router_core> core;
  {
    std::lock_guard lock(entry_->mutex);
    core = entry_->core;
  }
  if (core) core->stop(stream.id());
}

}  // namespace baton::actors
