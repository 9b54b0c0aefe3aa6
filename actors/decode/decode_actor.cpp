#include "actors/decode/decode_actor.hpp"

#include <functional>
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "actors/shell.hpp"
#include "runtime/messages.hpp"

namespace baton::actors {
namespace {

/// A held admit's wait for its writer is over: (writer_wait_atom, request, attempt).
using writer_wait_atom = caf::atom_constant<caf::atom("s_writer")>;
/// How long an admit waits for this node to learn of the writer it names (membership
/// converges in milliseconds; this bounds a writer that never comes).
constexpr auto writer_wait = std::chrono::seconds(2);
/// Admits held at most, over all writers; more are refused as overloaded.
constexpr std::size_t max_held_admits = 1024;

/// An admit whose writer this node does not know alive yet.
struct held_admit {
  wire::actor_address from;
  wire::admit admit;
};

struct decode_shell {
  runtime::node_context* ctx = nullptr;
  std::optional<runtime::kv_fabric::region> region;
  std::unique_ptr<engine::device> engine;
  std::unique_ptr<decode_state> state;
  /// Writer nodes granted the whole pool, with the incarnation granted to: a restarted
  /// node is a new endpoint and needs a new grant.
  std::map<std::string, std::uint64_t> granted;
  std::set<std::string> warned;  ///< nodes a delivery failure was logged for (until they go)
  std::map<std::string, std::uint64_t> watched;  ///< routers and prefills monitored
  /// Admits naming a writer newer than this node knows (the router saw it restart
  /// first): they go on when membership tells of it, or fail after writer_wait.
  std::map<std::string, std::vector<held_admit>> awaiting_writer;
  std::size_t held_admits = 0;
  crash_fault crash;
  bool step_queued = false;
  runtime::gauge* free_blocks = nullptr;
  std::optional<stat_counters> counters;
};
using decode_actor = caf::stateful_actor<decode_shell>;

void publish_metrics(decode_shell& st) {
  st.free_blocks->set(static_cast<double>(st.state->uncommitted_blocks()));
  st.ctx->set_work(decode_name, st.state->active());
  st.counters->publish();
}

void mirror_stats(decode_shell& st) {
  const auto& s = st.state->stats();
  auto& c = *st.counters;
  c.mirror(s.admitted, "baton_decode_admitted_total", "Attempts admitted");
  c.mirror(s.refused, "baton_decode_refused_total", "Admits refused (overloaded or invalid)");
  c.mirror(s.local_prefills, "baton_decode_local_prefills_total",
           "Prompts prefilled on this decode node by policy");
  c.mirror(s.checksum_failures, "baton_decode_checksum_failures_total",
           "Prefill-done whose KV blocks did not verify");
  c.mirror(s.recomputed, "baton_decode_recomputed_total",
           "Prompts recomputed here after a bad transfer");
  c.mirror(s.finished, "baton_decode_finished_total", "Attempts that finished");
  c.mirror(s.cancelled, "baton_decode_cancelled_total", "Attempts cancelled");
  c.mirror(s.slices_landed, "baton_decode_slices_landed_total",
           "KV slices written into this node (notifications)");
  c.mirror(s.tokens, "baton_decode_tokens_total", "Tokens generated");
  c.mirror(s.orphaned, "baton_decode_orphaned_total",
           "Running attempts kept after their router died, for a claim");
  c.mirror(s.claimed, "baton_decode_claimed_total",
           "Orphaned attempts handed over to a router resuming their request");
  c.mirror(s.orphans_released, "baton_decode_orphans_released_total",
           "Orphaned attempts released unclaimed after the grace period");
}

/// Grants `writer` RMA access to the whole pool (once per node incarnation). Blocks are
/// protected by decode_state's reservations and quarantine, not by the grant.
expected<void> grant(decode_shell& st, const std::string& writer) {
  if (writer.empty()) return {};
  const auto member = st.ctx->member(writer);
  const std::uint64_t incarnation = member ? member->incarnation : 0;
  if (auto it = st.granted.find(writer); it != st.granted.end() && it->second == incarnation) {
    return {};
  }
  if (!st.ctx->bridge(writer)) {
    // Not yet known here (membership still converging) or gone: the router may retry.
    return fail(errc::disconnected, fmt::format("writer {} is not a member", writer));
  }
  const auto bytes = st.engine->pool().bytes();
  transport::local_slice all{st.region->id,
                             static_cast<std::uint64_t>(bytes.data() - st.region->bytes.data()),
                             bytes.size()};
  auto slice = st.ctx->rma()->grant(writer, all, transport::clock::now() + std::chrono::seconds(2));
  if (!slice) return tl::unexpected(slice.error());
  st.granted[writer] = incarnation;
  st.state->set_region(
      {static_cast<std::uint64_t>(st.ctx->rma()->local_node()), slice->key, slice->offset});
  return {};
}

void after(decode_actor* self, effects out) {
  auto& st = self->state;
  perform(*st.ctx, self, decode_name, std::move(out));
  if (st.state->has_work() && !st.step_queued) {
    st.step_queued = true;
    self->send(self, step_atom::value);
  }
  publish_metrics(st);
}

/// Watches the router and prefill actors of `m`, so a crash of one is noticed.
void watch_peer(decode_actor* self, const wire::member& m) {
  auto& st = self->state;
  if (m.state != wire::member_state::alive || m.node == st.ctx->name()) return;
  for (const auto role : m.roles) {
    if (role == wire::role::router)
      watch_actor(*st.ctx, self, decode_name, m, router_name, st.watched);
    if (role == wire::role::prefill) {
      watch_actor(*st.ctx, self, decode_name, m, prefill_name, st.watched);
    }
  }
}

/// Takes out the held admits `pick` selects, of every writer.
std::vector<held_admit> take_held(decode_shell& st,
                                  const std::function<bool(const held_admit&)>& pick) {
  std::vector<held_admit> taken;
  for (auto it = st.awaiting_writer.begin(); it != st.awaiting_writer.end();) {
    auto& held = it->second;
    for (auto h = held.begin(); h != held.end();) {
      if (pick(*h)) {
        taken.push_back(std::move(*h));
        h = held.erase(h);
      } else {
        ++h;
      }
    }
    it = held.empty() ? st.awaiting_writer.erase(it) : std::next(it);
  }
  st.held_admits -= taken.size();
  return taken;
}

void abort_held(decode_actor* self, const held_admit& h, errc code, std::string why) {
  after(self,
        effects{
            {{h.from, wire::abort_attempt{h.admit.request, h.admit.attempt, code, std::move(why)}}},
            {}});
}

/// Whether this node knows `a`'s writer alive in the incarnation the router placed on (or
/// a later one): the grant and the prefill job must go to that process.
bool writer_known(const decode_shell& st, const wire::admit& a) {
  if (a.writer.empty()) return true;
  const auto m = st.ctx->member(a.writer);
  return m && (m->state == wire::member_state::alive || m->state == wire::member_state::suspect) &&
         m->incarnation >= a.writer_incarnation;
}

void admit(decode_actor* self, const wire::actor_address& from, const wire::admit& a) {
  auto& st = self->state;
  if (!writer_known(st, a)) {
    if (st.held_admits >= max_held_admits) {
      abort_held(self, {from, a}, errc::overloaded, "too many admits wait for their writer");
      return;
    }
    st.awaiting_writer[a.writer].push_back({from, a});
    ++st.held_admits;
    self->delayed_send(self, writer_wait, writer_wait_atom::value,
                       static_cast<std::uint64_t>(a.request), a.attempt);
    return;
  }
  if (auto g = grant(st, a.writer); !g) {
    after(self, effects{{{from, wire::abort_attempt{a.request, a.attempt, g.error().code,
                                                    g.error().message}}},
                        {}});
    return;
  }
  after(self, st.state->on_admit(from, a, clock::now()));
}

void on_frame(decode_actor* self, const runtime::inbound& in) {
  auto& st = self->state;
  st.crash.tick(decode_name);
  const auto& from = in.frame->source;
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, wire::admit>) {
          admit(self, from, body);
        } else if constexpr (std::is_same_v<T, wire::prefill_done>) {
          after(self, st.state->on_prefill_done(from, body, clock::now()));
        } else if constexpr (std::is_same_v<T, wire::cancel>) {
          (void)take_held(st, [&](const held_admit& h) {  // its router ended it: dropped
            return (body.request == wire::request_id{} || h.admit.request == body.request) &&
                   (body.attempt == 0 || h.admit.attempt == body.attempt) &&
                   h.from.node == from.node;
          });
          after(self, st.state->on_cancel(from, body));
        } else if constexpr (std::is_same_v<T, wire::claim>) {
          after(self, st.state->on_claim(from, body, clock::now()));
        } else if constexpr (std::is_same_v<T, wire::stream_window>) {
          st.state->on_window(body);
          after(self, {});
        } else if constexpr (std::is_same_v<T, wire::abort_attempt>) {
          // A writer that failed may have missed its grant (a restarted node reached over
          // a stale connection): grant it again on its next admit.
          st.granted.erase(from.node);
          after(self, st.state->on_abort(from, body));
        } else {
          spdlog::warn("decode: ignoring {} from {}/{}", wire::body_name(in.frame->body), from.node,
                       from.actor);
        }
      },
      in.frame->body);
}

caf::behavior decode_behavior(decode_actor* self, runtime::node_context* ctx,
                              const engine::model* model, decode_options options) {
  install_failure_boundary(*ctx, self, decode_name);
  auto& st = self->state;
  st.ctx = ctx;
  auto& metrics = ctx->metrics();
  st.counters.emplace(metrics);
  st.free_blocks = &metrics.get_gauge("baton_decode_kv_free_blocks",
                                      "KV blocks neither held nor promised to a request");
  auto made = make_registered_device(*ctx, self, *model, options.device);
  if (!made) {
    spdlog::error("decode: {}", made.error().message);
    self->quit(caf::make_error(caf::sec::runtime_error));
    return {};
  }
  st.region = made->region;
  st.engine = std::move(made->device);
  st.state = std::make_unique<decode_state>(
      *st.engine, wire::actor_address{ctx->name(), decode_name},
      kv_region{static_cast<std::uint64_t>(ctx->rma()->local_node()), 0, 0}, options.config);
  st.crash = options.crash;
  mirror_stats(st);
  publish_metrics(st);
  ctx->rma()->set_notify_sink(caf::actor_cast<caf::actor>(self->address()));
  // Writers are granted on their first admit; a node that dies or leaves is forgotten.
  // Routers' and prefills' actors are watched: one that crashes ends what it held here.
  for (const auto& m : ctx->watch_members(caf::actor_cast<caf::actor>(self->address()))) {
    watch_peer(self, m);
  }
  spdlog::info("decode: {} KV blocks of {} tokens ({} MiB, registered), engine {}",
               st.engine->pool().n_blocks(), st.engine->pool().layout().block_tokens,
               st.region->bytes.size() >> 20, st.engine->describe());
  return {
      [self](runtime::inbound& in) { on_frame(self, in); },
      [self](step_atom) {
        auto& s = self->state;
        s.step_queued = false;
        after(self, s.state->step(clock::now()));
      },
      [self](timer_atom, std::uint64_t id) {
        after(self, self->state.state->on_timer(id, clock::now()));
      },
      [self](runtime::rma_notify& n) {
        self->state.state->on_slice_landed(n.data);
        publish_metrics(self->state);
      },
      [self](runtime::member_update& u) {
        auto& s = self->state;
        // The routers that buried it end what they moved (a cancel); jobs sent meanwhile
        // may have been refused by prefill nodes that buried it.
        if (u.buried) return after(self, s.state->on_buried());
        const auto& m = u.member;
        if (m.state == wire::member_state::dead || m.state == wire::member_state::left) {
          s.granted.erase(m.node);
          s.warned.erase(m.node);
          after(self, s.state->on_node_gone(m.node, clock::now()));
          return;
        }
        watch_peer(self, m);
        const auto known = take_held(s, [&](const held_admit& h) {
          return h.admit.writer == m.node && writer_known(s, h.admit);
        });
        for (const auto& h : known) admit(self, h.from, h.admit);
      },
      [self](writer_wait_atom, std::uint64_t request, std::uint32_t attempt) {
        const auto late = take_held(self->state, [&](const held_admit& h) {
          return static_cast<std::uint64_t>(h.admit.request) == request &&
                 h.admit.attempt == attempt;
        });
        for (const auto& h : late) {
          abort_held(
              self, h, errc::unavailable,
              fmt::format("writer {} (incarnation {}) did not become known here within {} ms",
                          h.admit.writer, h.admit.writer_incarnation,
                          std::chrono::milliseconds(writer_wait).count()));
        }
      },
      [self](runtime::remote_down& d) {
        auto& s = self->state;
        s.watched.erase(d.actor.node + "/" + d.actor.actor);
        const auto m = s.ctx->member(d.actor.node);
        if (!m || m->state != wire::member_state::alive) return;  // membership says the rest
        if (d.reason.code == errc::not_found) {  // not restarted yet: look again later
          self->delayed_send(self, rewatch_delay, rewatch_atom::value, d.actor.node);
          return;
        }
        spdlog::warn("decode: {}/{} terminated ({}): what it held here ends", d.actor.node,
                     d.actor.actor, d.reason.message);
        after(self, s.state->on_actor_gone(d.actor, clock::now()));
        // Watch its successor once its supervisor has restarted it.
        self->delayed_send(self, rewatch_delay, rewatch_atom::value, d.actor.node);
      },
      [self](rewatch_atom, const std::string& node) {
        if (auto m = self->state.ctx->member(node)) watch_peer(self, *m);
      },
      [self](evict_atom) {
        spdlog::warn("decode: draining: {} attempts move to other nodes",
                     self->state.state->active());
        const auto why = "node " + self->state.ctx->name() + " is draining";
        for (const auto& h : take_held(self->state, [](const held_admit&) { return true; }))
          abort_held(self, h, errc::unavailable, why);
        after(self, self->state.state->evict("node " + self->state.ctx->name() + " is draining"));
      },
      [self](runtime::delivery_failure& f) {
        // Once per peer: a dead router would otherwise cost a line per token sent to it.
        if (self->state.warned.insert(f.target.node).second) {
          spdlog::warn("decode: to {}/{}: {} (further failures to it are not logged)",
                       f.target.node, f.target.actor, f.reason.message);
        }
        after(self, self->state.state->on_undeliverable(f.target));
      },
  };
}

}  // namespace

caf::actor spawn_decode(runtime::node_context& ctx, const engine::model& model,
                        decode_options options) {
  return ctx.system().spawn<caf::detached>(decode_behavior, &ctx, &model, std::move(options));
}

}  // namespace baton::actors
