#include "runtime/membership_driver.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "runtime/messages.hpp"
#include "runtime/peer_link.hpp"

namespace baton::runtime {
namespace {

/// How long a leaving node keeps probing, so that its departure spreads.
constexpr auto leave_spread = std::chrono::milliseconds(300);

}  // namespace

membership_driver::membership_driver(node_context& ctx, wire::join self,
                                     std::vector<seed_node> seeds, membership_config config,
                                     std::uint64_t random_seed, membership_hooks hooks,
                                     std::shared_ptr<const cluster_secret> secret)
    : ctx_(ctx),
      hooks_(std::move(hooks)),
      local_health_(ctx.metrics().get_gauge(
          "baton_membership_local_health",
          "Lifeguard local health score: 0 healthy; each point multiplies probe periods and "
          "timeouts (this node's own probes or ticks ran late)")),
      false_suspicions_(ctx.metrics().get_counter(
          "baton_membership_false_suspicions_total",
          "Members suspected by this node's view that refuted: they were alive")),
      deaths_(ctx.metrics().get_counter("baton_membership_deaths_total",
                                        "Members this node saw declared dead")),
      joins_refused_(ctx.metrics().get_counter(
          "baton_membership_joins_refused_total",
          "Joins this node refused as a seed (a mismatch, or no proof of the cluster secret)")),
      auth_failures_(ctx.metrics().get_counter(
          "baton_membership_auth_failures_total",
          "Joins refused for want of the cluster secret (none, another, or a replayed answer)")),
      state_(std::move(self), std::move(seeds), config, random_seed),
      decoder_(ctx.config().limits) {
  if (secret) state_.require_secret(std::move(secret), random_nonce);
}

void membership_driver::start() {
  std::lock_guard lock(mutex_);
  ctx_.update_member(state_.self());
  const auto now = clock::now();
  apply(state_.start(now), now);
}

void membership_driver::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
}

void membership_driver::tick() {
  std::lock_guard lock(mutex_);
  if (stopped_) return;
  armed_ = time_point::max();  // this was it
  const auto now = clock::now();
  if (left_at_ && now >= *left_at_) {
    stopped_ = true;
    if (hooks_.left) hooks_.left();
    return;
  }
  if (now < state_.next_deadline()) return arm(now);  // the deadline moved since it was asked for
  apply(state_.on_tick(now), now + std::chrono::milliseconds(1));  // never a busy loop
}

void membership_driver::on_frame(const wire::frame& f) {
  std::lock_guard lock(mutex_);
  if (stopped_) return;
  const auto now = clock::now();
  apply(state_.on_message(f.source.node, f.sender_incarnation, f.body, now), now);
}

bool membership_driver::take(std::span<const std::byte> bytes) {
  if (!wire::is_membership(bytes)) return false;
  std::lock_guard lock(mutex_);
  if (stopped_) return true;  // the node is stopping: nobody is left to answer
  auto f = decoder_.decode(bytes);
  // A buried incarnation's frame goes by the bridge, which counts it (and hands it back).
  if (!f || !state_.accepts(f->source.node, f->sender_incarnation)) return false;
  const auto now = clock::now();
  apply(state_.on_message(f->source.node, f->sender_incarnation, f->body, now), now);
  return true;
}

void membership_driver::leave() {
  std::lock_guard lock(mutex_);
  if (stopped_) return;
  const auto now = clock::now();
  left_at_ = now + leave_spread;
  apply(state_.leave(now), now);
}

void membership_driver::drain() {
  std::lock_guard lock(mutex_);
  if (stopped_) return;
  const auto now = clock::now();
  apply(state_.drain(now), now);
}

void membership_driver::on_unreachable(const std::string& node,
                                       membership_state::unreachable_evidence why) {
  std::lock_guard lock(mutex_);
  if (stopped_) return;
  const auto now = clock::now();
  auto out = state_.on_unreachable(node, now, why);
  if (!out.changes.empty()) spdlog::info("member {}: the transport cannot reach it", node);
  apply(std::move(out), now);
}

void membership_driver::on_reachable(const std::string& node) {
  std::lock_guard lock(mutex_);
  if (stopped_) return;
  const auto now = clock::now();
  auto out = state_.on_reachable(node, now);
  if (!out.sends.empty()) {
    spdlog::info("member {}: the network reaches it again: probing over a new connection", node);
  }
  apply(std::move(out), now);
}

bool membership_driver::joined() const {
  std::lock_guard lock(mutex_);
  return state_.joined();
}

std::vector<wire::member> membership_driver::members() const {
  std::lock_guard lock(mutex_);
  return state_.members();
}

void membership_driver::arm(time_point not_before) {
  auto at = std::max(state_.next_deadline(), not_before);
  if (left_at_) at = std::min(at, *left_at_);
  if (at == armed_ || !hooks_.tick_at) return;
  armed_ = at;
  hooks_.tick_at(at);
}

void membership_driver::apply(membership_output out, time_point not_before) {
  ctx_.set_incarnation(state_.self().incarnation);
  local_health_.set(state_.local_health());
  if (state_.false_suspicions() > false_suspicions_seen_) {
    false_suspicions_.add(state_.false_suspicions() - false_suspicions_seen_);
    false_suspicions_seen_ = state_.false_suspicions();
  }
  if (state_.auth_failures() > auth_failures_seen_) {
    auth_failures_.add(state_.auth_failures() - auth_failures_seen_);
    auth_failures_seen_ = state_.auth_failures();
  }
  for (const auto& why : out.refused_joins) {
    joins_refused_.add();
    spdlog::warn("{}", why);
  }
  for (auto& s : out.sends) {
    auto link = ctx_.link(s.node, s.fabric_address);  // attaches the peer on first use
    if (!link) continue;
    if (s.fresh_connection) ctx_.sink().reconnect(s.node);
    auto sent = link->send({ctx_.name(), "membership"}, {s.node, "membership"}, std::move(s.body),
                           0, s.until);
    if (!sent) spdlog::error("membership frame to {} not sent: {}", s.node, sent.error().message);
  }
  for (const auto& m : out.changes) {
    ctx_.update_member(m);
    if (hooks_.changed) hooks_.changed(m);
    spdlog::info("member {} is {} (incarnation {})", m.node, to_string(m.state), m.incarnation);
    if (m.state == wire::member_state::dead) deaths_.add();
    if (m.state != wire::member_state::dead && m.state != wire::member_state::left) continue;
    if (auto bridge = ctx_.bridge(m.node)) {
      const bool dead = m.state == wire::member_state::dead;
      caf::anon_send(
          bridge,
          node_gone{m.node, error{errc::disconnected,
                                  fmt::format("node {} {}", m.node,
                                              dead ? "was declared dead" : "left the cluster")}});
      ctx_.drop_bridge(m.node);
    }
  }
  if (out.buried) {
    spdlog::warn(
        "this node had been declared dead (it refuted): its actors drop what their "
        "peers gave up");
    ctx_.buried();
  }
  if (out.refused && hooks_.refused) hooks_.refused(*out.refused);
  arm(not_before);
}

}  // namespace baton::runtime
