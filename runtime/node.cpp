#include "runtime/node.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "base/address.hpp"
#include "runtime/bridge.hpp"
#include "runtime/fabric_io.hpp"
#include "runtime/membership_driver.hpp"
#include "runtime/messages.hpp"
#include "runtime/peer_watch.hpp"
#include "runtime/remote_actor.hpp"

namespace baton::runtime {
namespace {

using hub_retry_atom = caf::atom_constant<caf::atom("hub_retry")>;

/// A frame from a node this one has not learned yet (it joined a moment ago and the
/// gossip that names it is on its way): kept until the node is known, in arrival order.
struct held_frame {
  std::shared_ptr<const wire::frame> frame;
  std::chrono::steady_clock::time_point received;
  transport::peer_id peer;
  std::chrono::steady_clock::time_point until;
};

struct hub_state {
  static inline const char* name = "baton.hub";
  std::optional<wire::decoder> decoder;
  std::deque<held_frame> held;
};

constexpr auto hold_for = std::chrono::seconds(2);
constexpr std::size_t max_held = 4096;
constexpr auto hold_retry = std::chrono::milliseconds(10);

/// Frames from peers that reached this node before it attached them: decode, find (or
/// spawn) the bridge of the sending node, route the peer there from now on. A frame from a
/// node not known yet (other than a membership frame) waits up to hold_for for the
/// membership to learn it (a node that just joined may talk to a member before the gossip
/// naming it has reached that member); then, or beyond max_held frames, it is dropped and
/// counted.
caf::behavior hub(caf::stateful_actor<hub_state>* self, node_context* ctx, fabric_io* io) {
  self->state.decoder.emplace(ctx->config().limits);
  auto& rejected = ctx->metrics().get_counter("baton_frames_rejected_total",
                                              "Frames the codec rejected.", {{"peer", "unknown"}});
  auto& unroutable = ctx->metrics().get_counter(
      "baton_frames_unroutable_total",
      "Frames from a node whose address did not become known within 2 s.");
  // Delivers the held frames in order while their nodes are known; true if none is left.
  auto deliver_held = [=, &unroutable] {
    auto& held = self->state.held;
    const auto now = std::chrono::steady_clock::now();
    std::deque<held_frame> still;
    std::set<std::string> waiting;  // nodes with an earlier frame still held: keep the order
    for (auto& h : held) {
      const auto& node = h.frame->source.node;
      auto bridge = waiting.contains(node) ? caf::actor() : ctx->bridge(node);
      if (bridge) {
        io->bind(node, h.peer);
        self->send(bridge, decoded_atom::value, inbound{std::move(h.frame), h.received});
      } else if (h.until <= now) {
        unroutable.add();
      } else {
        waiting.insert(node);
        still.push_back(std::move(h));
      }
    }
    held.swap(still);
    return held.empty();
  };
  return {
      [=, &rejected, &unroutable](raw_frame& r, transport::peer_id peer) {
        auto decoded = self->state.decoder->decode(*r.bytes);
        if (!decoded) {
          rejected.add();
          spdlog::warn("frame from an unknown peer rejected: {}", decoded.error().message);
          return;
        }
        auto f = std::make_shared<const wire::frame>(std::move(*decoded));
        std::string address;
        if (const auto* j = std::get_if<wire::join>(&f->body)) address = j->member.fabric_address;
        auto& held = self->state.held;
        // Membership frames are never held: late, a probe would only mislead.
        const bool membership = std::holds_alternative<wire::join>(f->body) ||
                                std::holds_alternative<wire::join_reply>(f->body) ||
                                std::holds_alternative<wire::heartbeat>(f->body) ||
                                std::holds_alternative<wire::leave>(f->body);
        if (held.empty() || membership) {
          if (auto bridge = ctx->bridge(f->source.node, address)) {
            io->bind(f->source.node, peer);
            self->send(bridge, decoded_atom::value, inbound{std::move(f), r.received});
            return;
          }
        }
        if (membership || held.size() >= max_held) {
          unroutable.add();
          return;
        }
        const bool first = held.empty();
        held.push_back({std::move(f), r.received, peer, r.received + hold_for});
        if (first) self->delayed_send(self, hold_retry, hub_retry_atom::value);
      },
      [=](hub_retry_atom) {
        if (!deliver_held()) self->delayed_send(self, hold_retry, hub_retry_atom::value);
      },
  };
}

std::uint64_t start_incarnation() {
  // Microseconds since the epoch: a restarted node always has a higher incarnation.
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::vector<seed_node> seeds_of(const node_options& o) {
  std::vector<seed_node> seeds;
  const auto& names = o.join.empty() ? o.topology.seeds : o.join;
  for (const auto& s : names) {
    if (const auto* n = o.topology.find(s)) {
      seeds.push_back({n->name, n->fabric_address});
    } else {
      seeds.push_back({"seed@" + s, s});  // an address: its name comes with the reply
    }
  }
  return seeds;
}

}  // namespace

caf::actor_system_config& node::configure(caf::actor_system_config& config) {
  config.set("scheduler.max-threads", 2);
  // Hand-offs from the fabric thread must not wait out the work-stealing scheduler's
  // 50 us "moderate" sleeps; idle workers still end up asleep on a condition variable.
  config.set("work-stealing.moderate-sleep-duration", caf::timespan{0});
  // Spin only briefly before sleeping, so an idle node stays near zero CPU.
  config.set("work-stealing.aggressive-poll-attempts", 4);
  config.set("work-stealing.moderate-poll-attempts", 8);
  config.set("work-stealing.relaxed-sleep-duration", caf::timespan{std::chrono::milliseconds(100)});
  config.set("logger.verbosity", caf::atom("quiet"));
  return config;
}

expected<std::unique_ptr<node>> node::start(node_options options) {
  const auto* spec = options.topology.find(options.name);
  if (spec == nullptr) {
    return fail(errc::not_found, fmt::format("{}: no node named '{}'",
                                             options.topology.file.string(), options.name));
  }
  if (options.topology.provider != "shm") {
    for (const auto& seed : seeds_of(options)) {
      auto at = parse_host_port(seed.fabric_address, port_zero::allowed);
      if (seed.node != options.name && at && at->port == 0) {
        return fail(errc::invalid_argument,
                    fmt::format("{}: seed {} listens on port 0 (any free port), so it cannot be "
                                "found by name: join it by address (--join HOST:PORT)",
                                options.topology.file.string(), seed.node));
      }
    }
  }
  transport::endpoint_config config;
  config.provider = options.topology.provider;
  config.bind = {spec->fabric_address};
  config.seed = options.random_seed;
  if (options.secret) config.frame_key = options.secret->frame_key();
  auto endpoint = transport::make_endpoint(config);
  if (!endpoint) return fail(endpoint.error(), fmt::format("node {}: ", options.name));
  auto copy = *spec;
  return std::unique_ptr<node>(new node(std::move(options), std::move(copy), std::move(*endpoint)));
}

std::string_view to_string(stop_reason r) noexcept {
  switch (r) {
    case stop_reason::left: return "left";
    case stop_reason::refused: return "refused";
    case stop_reason::stopped: return "stopped";
    case stop_reason::failed: return "failed";
  }
  return "?";
}

node::node(node_options options, node_spec spec, std::unique_ptr<transport::endpoint> endpoint)
    : system_(configure(config_)), spec_(std::move(spec)) {
  // What peers reach: the addresses as bound (a port 0 in the topology is resolved here).
  spec_.fabric_address = endpoint->local_address().text;
  if (!options.admin_address.empty()) spec_.admin_address = options.admin_address;
  io_ = std::make_unique<fabric_io>(std::move(endpoint), metrics_);
  context_ =
      std::make_unique<node_context>(spec_.name, start_incarnation(), system_, *io_, metrics_);
  context_->set_rma(io_.get());
  io_->set_hub(system_.spawn(hub, context_.get(), io_.get()));

  auto self = options.identity;
  self.member = {spec_.name,
                 context_->incarnation(),
                 wire::member_state::alive,
                 spec_.kind,
                 spec_.device,
                 spec_.roles,
                 spec_.fabric_address,
                 spec_.admin_address,
                 false,
                 spec_.has_role(wire::role::decode) ? spec_.kv_blocks : 0,
                 "",
                 options.restarts,
                 context_->incarnation()};
  const auto& t = options.topology.timeouts;
  membership_config mc;
  mc.probe_interval = milliseconds(t.probe_interval_ms);
  mc.suspect_after = milliseconds(t.suspect_after_ms);
  mc.dead_after = milliseconds(t.dead_after_ms);
  membership_hooks hooks;
  hooks.refused = [this](const std::string& reason) { stop(stop_reason::refused, reason); };
  hooks.left = [this] { stop(stop_reason::left, "left the cluster"); };
  hooks.tick_at = [io = io_.get()](time_point at) { io->tick_at(at); };
  hooks.changed = [this](const wire::member& m) { watch_->update(m); };
  spdlog::info("node {} ({} on {}) incarnation {}, probe seed {}", spec_.name,
               to_string(spec_.kind), spec_.device, context_->incarnation(), options.random_seed);
  membership_ = std::make_unique<membership_driver>(*context_, std::move(self), seeds_of(options),
                                                    mc, options.random_seed, std::move(hooks),
                                                    std::move(options.secret));
  auto* membership = membership_.get();
  watch_ = std::make_unique<peer_watch>(
      spec_.name,
      [membership](const std::string& n) {
        membership->on_unreachable(n, membership_state::unreachable_evidence::process_gone);
      },
      [membership](const std::string& n) { membership->on_reachable(n); });
  context_->set_membership([membership](const wire::frame& f) { membership->on_frame(f); });
  io_->set_filter(
      [membership, ctx = context_.get()](std::span<const std::byte> f,
                                         std::chrono::steady_clock::time_point received) {
        return membership->take(f) || ctx->take(f, received);
      });
  io_->set_ticker([membership] { membership->tick(); });
  io_->set_unreachable([membership](const std::string& n) {
    membership->on_unreachable(n, membership_state::unreachable_evidence::connection_failed);
  });
  // A seed that refuses our frames' seals refuses the join before it can be asked.
  io_->set_refused([this, membership](const std::string& n, const std::string& why) {
    if (!membership->joined()) stop(stop_reason::refused, fmt::format("{}: {}", n, why));
  });
  for (const auto& a : options.actors) actor_names_.push_back(a.name);
  membership->start();
  (void)spawn_echo(*context_);
  supervisor_ =
      spawn_supervisor(*context_, std::move(options.actors), options.budget,
                       [this](const std::string& why) { stop(stop_reason::failed, why); });
}

node::~node() {
  caf::anon_send_exit(supervisor_, caf::exit_reason::user_shutdown);
  membership_->stop();
  // The role actors use the fabric (RMA) until they are gone: wait for them before it goes.
  auto stopped = context_->shutdown();
  {
    caf::scoped_actor self{system_};
    for (const auto& a : stopped) self->wait_for(a);
  }
  context_->set_rma(nullptr);
  watch_.reset();  // before membership: it reports into it
  io_.reset();
  membership_.reset();  // nothing calls it now: the bridges and the progress thread are gone
  supervisor_ = nullptr;
  // system_'s destructor waits for every actor to finish.
}

std::vector<wire::member> node::members() const {
  return membership_->members();
}

void node::leave() {
  membership_->leave();  // its `left` hook stops the node once the news has spread
}

void node::drain() {
  if (draining_.exchange(true)) return;
  membership_->drain();
}

bool node::ready() const {
  if (draining_.load() || !membership_->joined()) return false;
  return std::all_of(actor_names_.begin(), actor_names_.end(), [this](const std::string& a) {
    return static_cast<bool>(context_->lookup(a));
  });
}

void node::stop(stop_reason reason, std::string detail) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = node_stop{reason, std::move(detail)};
  }
  stopped_cv_.notify_all();
}

node_stop node::wait() {
  std::unique_lock lock(mutex_);
  stopped_cv_.wait(lock, [this] { return stopped_.has_value(); });
  return *stopped_;
}

}  // namespace baton::runtime
