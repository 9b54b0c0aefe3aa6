#include "runtime/membership.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

#include <fmt/format.h>

namespace baton::runtime {
namespace {

using wire::member_state;

bool live(member_state s) {
  return s == member_state::alive || s == member_state::suspect;
}

/// SWIM's precedence: does `update` override what is known as `known`?
bool overrides(const wire::member& update, const wire::member& known) {
  if (update.incarnation != known.incarnation) return update.incarnation > known.incarnation;
  switch (update.state) {
    case member_state::alive: return false;
    case member_state::suspect: return known.state == member_state::alive;
    case member_state::dead:
    case member_state::left: return live(known.state);
  }
  return false;
}

}  // namespace

membership_state::membership_state(wire::join self, std::vector<seed_node> seeds,
                                   membership_config config, std::uint64_t random_seed)
    : self_(std::move(self)), seeds_(std::move(seeds)), config_(config), rng_(random_seed) {
  self_.member.state = member_state::alive;
  // A node never joins through itself.
  const bool first_seed = seeds_.empty() || seeds_.front().node == self_.member.node;
  std::erase_if(seeds_, [&](const seed_node& s) { return s.node == self_.member.node; });
  joined_ = first_seed;
}

membership_output membership_state::start(time_point now) {
  membership_output out;
  next_probe_ = now + config_.probe_interval;
  if (!joined_) send_join(now, out);
  return out;
}

void membership_state::require_secret(std::shared_ptr<const cluster_secret> secret,
                                      std::function<nonce()> nonces) {
  secret_ = std::move(secret);
  nonces_ = std::move(nonces);
}

nonce membership_state::fresh_nonce() {
  if (nonces_) return nonces_();
  return {rng_(), rng_()};
}

void membership_state::send_join(time_point now, membership_output& out) {
  if (seeds_.empty()) {
    out.refused = "no seed to join through";
    return;
  }
  asked_ = seeds_[join_attempts_++ % seeds_.size()];
  // Each round proves the secret afresh: an answer to an older round's challenge may be
  // late, and the seed keeps each round's challenge apart.
  auto j = self_;
  j.auth = {};
  if (secret_) {
    join_nonce_ = fresh_nonce();
    j.auth.nonce = join_nonce_;
  }
  answered_ = false;
  seed_proved_ = false;
  out.sends.push_back({asked_.node, asked_.fabric_address, std::move(j)});
  join_deadline_ = now + config_.join_timeout;
}

namespace {
constexpr std::string_view seed_label = "baton join: seed";
constexpr std::string_view joiner_label = "baton join: joiner";
}  // namespace

void membership_state::answer_challenge(const std::string& from, const wire::join_reply& reply,
                                        time_point now, membership_output& out) {
  if (reply.auth.peer != join_nonce_ || answered_) return;  // an older round's challenge
  answered_ = true;
  if (!secret_) {  // answered without a proof: the seed refuses, says why, and counts it
    auto j = self_;
    j.auth = {};
    j.auth.peer = reply.auth.nonce;
    out.sends.push_back({from, asked_.fabric_address, std::move(j)});
    join_deadline_ = now + config_.join_timeout;
    return;
  }
  const auto& mine = self_.member;
  const auto& theirs = reply.auth.nonce;
  // Answered even when the seed's proof fails, so that a seed with the secret refuses,
  // logs and counts a node with another; this node then trusts no acceptance from it.
  seed_proved_ =
      secret_->verify(reply.auth.proof, seed_label,
                      {join_nonce_[0], join_nonce_[1], theirs[0], theirs[1]}, {from, mine.node});
  auto j = self_;
  j.auth.nonce = join_nonce_;
  j.auth.peer = theirs;
  j.auth.proof = secret_->sign(
      joiner_label, {theirs[0], theirs[1], join_nonce_[0], join_nonce_[1], mine.incarnation},
      {mine.node, from});
  out.sends.push_back({from, asked_.fabric_address, std::move(j)});
  join_deadline_ = now + config_.join_timeout;
}

void membership_state::refuse(const wire::join& j, const std::string& why, membership_output& out) {
  out.sends.push_back({j.member.node, j.member.fabric_address,
                       wire::join_reply{false, "join refused: " + why, {}}});
  out.refused_joins.push_back(fmt::format("join of {} (incarnation {}) at {} refused: {}",
                                          j.member.node, j.member.incarnation,
                                          j.member.fabric_address, why));
}

bool membership_state::authenticated(const wire::join& j, time_point now, membership_output& out) {
  if (!secret_) return true;
  std::erase_if(challenges_, [&](const auto& c) { return c.second.expires <= now; });
  const auto key = std::make_tuple(j.member.node, j.member.incarnation, j.auth.nonce);
  if (j.auth.peer == nonce{}) {  // asks for a challenge
    while (challenges_.size() >= config_.max_challenges) {
      challenges_.erase(std::min_element(
          challenges_.begin(), challenges_.end(),
          [](const auto& a, const auto& b) { return a.second.expires < b.second.expires; }));
    }
    const auto mine = fresh_nonce();
    challenges_[key] = {mine, now + config_.challenge_ttl};
    wire::join_reply reply;
    reply.challenge = true;
    reply.auth.nonce = mine;
    reply.auth.peer = j.auth.nonce;
    reply.auth.proof =
        secret_->sign(seed_label, {j.auth.nonce[0], j.auth.nonce[1], mine[0], mine[1]},
                      {self_.member.node, j.member.node});
    out.sends.push_back({j.member.node, j.member.fabric_address, std::move(reply)});
    return false;
  }
  const auto it = challenges_.find(key);
  if (it == challenges_.end() || it->second.seed != j.auth.peer) {
    // Logged and counted, not answered: the answer would go to the address in the join,
    // the node that made the handshake, which has joined already (or a late copy of its
    // own answer arrives) and must not be told it was refused.
    ++auth_failures_;
    out.refused_joins.push_back(fmt::format(
        "join of {} (incarnation {}) at {} refused: authentication failed: it answers no "
        "challenge outstanding here (a replayed or stale handshake)",
        j.member.node, j.member.incarnation, j.member.fabric_address));
    return false;
  }
  const auto seed_nonce = it->second.seed;
  challenges_.erase(it);  // answered once
  if (!secret_->verify(
          j.auth.proof, joiner_label,
          {seed_nonce[0], seed_nonce[1], j.auth.nonce[0], j.auth.nonce[1], j.member.incarnation},
          {j.member.node, self_.member.node})) {
    ++auth_failures_;
    refuse(j,
           j.auth.proof == proof{}
               ? "authentication failed: it holds no cluster secret (this cluster requires one: "
                 "[cluster] secret)"
               : "authentication failed: it does not hold this cluster's secret",
           out);
    return false;
  }
  return true;
}

std::optional<std::string> membership_state::incompatibility(const wire::join& j) const {
  if (j.wire_version != self_.wire_version) {
    return fmt::format("wire version {} differs from the cluster's {}", j.wire_version,
                       self_.wire_version);
  }
  if (j.model_hash != self_.model_hash) {
    return fmt::format("model hash {:016x} differs from the cluster's {:016x}", j.model_hash,
                       self_.model_hash);
  }
  if (j.layout != self_.layout) {
    return fmt::format(
        "KV layout (block {} tokens, {} layers, {} kv heads, head dim {}, {} B) "
        "differs from the cluster's ({}, {}, {}, {}, {} B)",
        j.layout.block_tokens, j.layout.layers, j.layout.kv_heads, j.layout.head_dim,
        j.layout.element_bytes, self_.layout.block_tokens, self_.layout.layers,
        self_.layout.kv_heads, self_.layout.head_dim, self_.layout.element_bytes);
  }
  if (j.numerics_fingerprint != self_.numerics_fingerprint) {
    return fmt::format("numerics fingerprint '{}' differs from the cluster's '{}'",
                       j.numerics_fingerprint, self_.numerics_fingerprint);
  }
  // The same incarnation at the same address again is a retried (or duplicated) join whose
  // reply was lost: answer it again. Anything else under a live member's name is refused.
  const auto* known = find(j.member.node);
  const bool retried = known != nullptr && j.member.incarnation == known->incarnation &&
                       j.member.fabric_address == known->fabric_address;
  if (known != nullptr && live(known->state) && j.member.incarnation <= known->incarnation &&
      !retried) {
    return fmt::format("node name '{}' is in use by a live member (incarnation {})", j.member.node,
                       known->incarnation);
  }
  return std::nullopt;
}

void membership_state::handle_join(const wire::join& j, time_point now, membership_output& out) {
  // A node that is not a member yet cannot vouch for others: stay silent, and the joiner
  // tries its next seed.
  if (!joined_ || leaving_) return;
  if (!authenticated(j, now, out)) return;
  if (auto why = incompatibility(j)) return refuse(j, *why, out);
  auto update = j.member;
  update.state = member_state::alive;
  apply(update, now, out);
  std::vector<wire::member> table;
  for (const auto& m : members()) {
    if (live(m.state)) table.push_back(m);
  }
  wire::join_reply accepted{true, "", std::move(table)};
  if (secret_) accepted.auth.peer = j.auth.nonce;  // which round of the joiner's it answers
  out.sends.push_back({j.member.node, j.member.fabric_address, std::move(accepted)});
}

membership_output membership_state::on_message(const std::string& from, std::uint64_t incarnation,
                                               const wire::body& body, time_point now) {
  membership_output out;
  if (!accepts(from, incarnation)) {
    // An incarnation this node buried, perhaps alive behind a partition that has healed
    // (or buried on stale news that has just arrived): it may be telling this node that it
    // was buried too. Refute that. A probe from the incarnation buried here is answered
    // with that news alone, so that it refutes at once and does not suspect this node
    // for a probe left unanswered; nothing else is answered.
    if (const auto* hb = std::get_if<wire::heartbeat>(&body)) {
      for (const auto& m : hb->updates) {
        if (m.node == self_.member.node) apply(m, now, out);
      }
      const auto* buried = find(from);
      if (!hb->is_ack && buried != nullptr && buried->state == member_state::dead &&
          buried->incarnation == incarnation) {
        auto ack = bare_probe(hb->sequence, *buried);
        ack.is_ack = true;
        out.sends.push_back(
            {from, buried->fabric_address, std::move(ack), now + config_.suspect_after});
      }
    }
    return out;
  }
  if (const auto* j = std::get_if<wire::join>(&body)) {
    handle_join(*j, now, out);
  } else if (const auto* reply = std::get_if<wire::join_reply>(&body)) {
    if (joined_) return out;
    if (reply->challenge) {
      answer_challenge(from, *reply, now, out);
      return out;
    }
    if (!reply->accepted) {
      out.refused = reply->reason;
      return out;
    }
    if (secret_ && reply->auth.peer == nonce{}) {
      out.refused = fmt::format(
          "join refused: {} accepted this node without asking for the cluster secret (it has "
          "none; this node's topology names one)",
          from);
      return out;
    }
    if (secret_ && (reply->auth.peer != join_nonce_ || !answered_)) return out;  // older round
    if (secret_ && !seed_proved_) {
      out.refused = fmt::format(
          "join refused: {} could not prove it holds the cluster secret (another secret, or "
          "not a node of this cluster)",
          from);
      return out;
    }
    joined_ = true;
    for (const auto& m : reply->members) apply(m, now, out);
  } else if (const auto* hb = std::get_if<wire::heartbeat>(&body)) {
    for (const auto& m : hb->updates) apply(m, now, out);
    const auto* sender = find(from);
    if (!hb->is_ack && sender != nullptr) {
      out.sends.push_back({from, sender->fabric_address, make_heartbeat(hb->sequence, true),
                           now + config_.suspect_after});
    } else if (hb->is_ack) {
      const auto answered = std::erase_if(
          probes_, [&](const probe& p) { return p.target == from && p.sequence == hb->sequence; });
      if (answered > 0) {
        lower_health();  // answered in time: this node keeps up
      } else if (std::erase_if(late_, [&](const auto& p) {
                   return p.first == from && p.second == hb->sequence;
                 }) > 0) {
        raise_health();  // answered after its timeout: this node (or its network) runs late
      }
    }
  } else if (std::holds_alternative<wire::leave>(body)) {
    if (const auto* sender = find(from)) {
      auto update = *sender;
      update.state = member_state::left;
      apply(update, now, out);
    }
  }
  return out;
}

milliseconds membership_state::probe_period() const {
  return config_.probe_interval * (1 + health_);
}

milliseconds membership_state::probe_timeout() const {
  return config_.suspect_after * (1 + health_);
}

milliseconds membership_state::suspicion_timeout(std::size_t suspecters) const {
  const auto base = config_.dead_after - config_.suspect_after;
  const auto longest = base * config_.suspicion_max_multiplier;
  // Confirmations to expect: no more than the other live members can give (as memberlist
  // does); a cluster too small to confirm anything gets the base at once.
  std::size_t others = 0;
  for (const auto& [name, r] : members_) others += live(r.info.state) ? 1 : 0;
  const auto k = std::min<std::size_t>(static_cast<std::size_t>(config_.suspicion_confirmations),
                                       others > 1 ? others - 1 : 0);
  if (k == 0) return base;
  const double confirmations = static_cast<double>(suspecters > 0 ? suspecters - 1 : 0);
  const double fraction =
      std::min(1.0, std::log(confirmations + 1) / std::log(static_cast<double>(k) + 1));
  const auto shrunk =
      longest - std::chrono::duration_cast<milliseconds>((longest - base) * fraction);
  return std::max(base, shrunk);
}

void membership_state::confirm(record& r, const wire::member& update, time_point now) {
  if (update.suspecter.empty() ||
      std::find(r.suspecters.begin(), r.suspecters.end(), update.suspecter) != r.suspecters.end()) {
    return;
  }
  r.suspecters.push_back(update.suspecter);
  r.suspect_deadline = std::min(
      r.suspect_deadline, std::max(now, r.suspect_since + suspicion_timeout(r.suspecters.size())));
  spread(update);  // confirmations travel too, so every suspecter's timer shrinks
}

void membership_state::apply(const wire::member& update, time_point now, membership_output& out) {
  if (update.node == self_.member.node) {
    // Someone suspects or buried this node: refute with a higher incarnation. Being
    // suspected is also a sign that this node may be the slow one.
    if (!leaving_ && update.state != member_state::alive &&
        update.incarnation >= self_.member.incarnation) {
      raise_health();
      refute(update.incarnation, out);
      if (update.state == member_state::dead) out.buried = true;
    }
    return;
  }
  auto it = members_.find(update.node);
  if (it != members_.end() && update.state == member_state::suspect &&
      it->second.info.state == member_state::suspect &&
      update.incarnation == it->second.info.incarnation) {
    confirm(it->second, update, now);
    return;
  }
  if (it != members_.end() && !overrides(update, it->second.info)) return;
  auto& r = it != members_.end() ? it->second : members_[update.node];
  // A new process under a live member's name: it was restarted before its predecessor's
  // death was noticed. Whatever watched the predecessor hears that it is gone first.
  const bool restarted = it != members_.end() && live(r.info.state) && update.started != 0 &&
                         r.info.started != 0 && update.started != r.info.started;
  if (restarted) {
    auto gone = r.info;
    gone.state = member_state::dead;
    out.changes.push_back(std::move(gone));
  }
  const bool joins = it == members_.end() || !live(r.info.state);
  if (r.info.state == member_state::dead && live(update.state)) r.returned = now;
  if (r.info.state == member_state::suspect && update.state == member_state::alive && !restarted) {
    ++false_suspicions_;  // it refuted: it was alive all along
  }
  r.info = update;
  if (update.state == member_state::suspect) {
    r.suspect_since = now;
    r.suspecters.clear();
    if (!update.suspecter.empty()) r.suspecters.push_back(update.suspecter);
    r.suspect_deadline = now + suspicion_timeout(std::max<std::size_t>(1, r.suspecters.size()));
    r.next_reprobe = now;  // tell it at once: an alive suspect refutes in its ack
  }
  if (joins || !live(update.state)) probe_order_.clear();  // rebuilt at the next probe
  if (update.state == member_state::dead && next_reconnect_ == time_point::max()) {
    next_reconnect_ = now + config_.reconnect_interval;
  }
  out.changes.push_back(update);
  spread(update);
}

void membership_state::refute(std::uint64_t incarnation, membership_output& out) {
  self_.member.incarnation = incarnation + 1;
  out.changes.push_back(self_.member);
  spread(self_.member);
}

void membership_state::spread(const wire::member& update) {
  const auto n = static_cast<unsigned>(members_.size() + 2);
  const int times = config_.gossip_multiplier * static_cast<int>(std::bit_width(n));
  auto same = std::find_if(gossip_.begin(), gossip_.end(),
                           [&](const gossip& g) { return g.update.node == update.node; });
  if (same != gossip_.end()) {
    *same = {update, times};
  } else {
    gossip_.push_back({update, times});
  }
}

std::vector<wire::member> membership_state::piggyback() {
  // The least-spread updates first.
  std::stable_sort(gossip_.begin(), gossip_.end(),
                   [](const gossip& a, const gossip& b) { return a.remaining > b.remaining; });
  std::vector<wire::member> out;
  for (auto& g : gossip_) {
    if (out.size() == config_.max_piggyback) break;
    out.push_back(g.update);
    --g.remaining;
  }
  std::erase_if(gossip_, [](const gossip& g) { return g.remaining <= 0; });
  return out;
}

wire::heartbeat membership_state::make_heartbeat(std::uint64_t sequence, bool is_ack) {
  auto updates = piggyback();
  // A probe carries its sender, so a member that has not yet heard of a new node by
  // gossip can still answer it.
  if (!is_ack) updates.insert(updates.begin(), self_.member);
  return wire::heartbeat{sequence, is_ack, 0, 0, std::move(updates)};
}

wire::heartbeat membership_state::bare_probe(std::uint64_t sequence,
                                             std::optional<wire::member> news) const {
  wire::heartbeat hb{sequence, false, 0, 0, {self_.member}};
  if (news) hb.updates.push_back(std::move(*news));
  return hb;
}

void membership_state::start_probe(time_point now, membership_output& out) {
  next_probe_ = now + probe_period();
  if (probe_order_.empty() || probe_index_ >= probe_order_.size()) {
    // Round-robin over a fresh random order: every member is probed within n periods.
    probe_order_.clear();
    for (const auto& [name, r] : members_) {
      if (live(r.info.state)) probe_order_.push_back(name);
    }
    std::shuffle(probe_order_.begin(), probe_order_.end(), rng_);
    probe_index_ = 0;
  }
  while (probe_index_ < probe_order_.size()) {
    const auto& target = probe_order_[probe_index_++];
    auto it = members_.find(target);
    if (it == members_.end() || !live(it->second.info.state)) continue;
    probes_.push_back(probe{target, ++probe_sequence_, now, now + config_.probe_retry});
    out.sends.push_back({target, it->second.info.fabric_address,
                         make_heartbeat(probe_sequence_, false), now + probe_timeout()});
    return;
  }
}

void membership_state::expire(time_point now, membership_output& out) {
  while (!probes_.empty() && now >= probes_.front().sent + probe_timeout()) {
    const auto p = probes_.front();
    probes_.erase(probes_.begin());
    late_.emplace_back(p.target, p.sequence);  // an answer now would come late
    if (late_.size() > max_late_probes) late_.erase(late_.begin());
    auto it = members_.find(p.target);
    if (it != members_.end() && live(it->second.info.state)) {
      // Suspects it, or (already suspect by another's word) confirms the suspicion.
      auto update = it->second.info;
      update.state = member_state::suspect;
      update.suspecter = self_.member.node;
      apply(update, std::min(now, p.sent + probe_timeout()), out);
    }
  }
  for (auto& [name, r] : members_) {
    if (r.info.state == member_state::suspect && now >= r.suspect_deadline) {
      auto update = r.info;
      update.state = member_state::dead;
      apply(update, now, out);
    }
  }
}

void membership_state::retry_probes(time_point now, membership_output& out) {
  for (auto& p : probes_) {
    if (now < p.next_retry) continue;
    p.next_retry = now + config_.probe_retry;
    auto it = members_.find(p.target);
    if (it == members_.end() || !live(it->second.info.state)) continue;
    // Retries carry no gossip: a dead target would swallow every transmission of it.
    out.sends.push_back({p.target, it->second.info.fabric_address, bare_probe(p.sequence, {}),
                         now + probe_timeout()});
  }
  for (auto& [name, r] : members_) {
    if (r.info.state != member_state::suspect || now < r.next_reprobe) continue;
    r.next_reprobe = now + config_.probe_retry;
    // Not tracked as a probe: its ack matters only for the refutation it carries.
    // Only the suspicion it must refute: other gossip would be lost on a dead node.
    out.sends.push_back({name, r.info.fabric_address, bare_probe(++probe_sequence_, r.info),
                         now + probe_timeout()});
  }
}

void membership_state::reconnect(time_point now, membership_output& out) {
  std::vector<const record*> dead;
  for (const auto& [name, r] : members_) {
    if (r.info.state == member_state::dead) dead.push_back(&r);
  }
  if (dead.empty()) {
    next_reconnect_ = time_point::max();
    return;
  }
  next_reconnect_ = now + config_.reconnect_interval;
  const auto& target = dead[reconnect_index_++ % dead.size()]->info;
  // Not tracked as a probe: what matters is that it tells the target it was buried.
  auto hb = bare_probe(++probe_sequence_, target);
  out.sends.push_back(
      {target.node, target.fabric_address, std::move(hb), now + config_.probe_retry});
}

membership_output membership_state::on_reachable(const std::string& node, time_point now) {
  membership_output out;
  auto it = members_.find(node);
  if (it == members_.end() || it->second.info.state == member_state::left || !joined_ || leaving_) {
    return out;
  }
  const auto& target = it->second.info;
  auto hb = bare_probe(++probe_sequence_, target);
  out.sends.push_back(
      {target.node, target.fabric_address, std::move(hb), now + config_.probe_retry, true});
  return out;
}

membership_output membership_state::on_tick(time_point now) {
  membership_output out;
  if (!joined_) {
    if (now >= join_deadline_) send_join(now, out);
    return out;
  }
  // A tick that comes a probe period after it was due: this node is starved of CPU, and
  // what it would conclude about others now is suspect.
  if (now > next_deadline() + config_.probe_interval) raise_health();
  expire(now, out);
  retry_probes(now, out);
  if (now >= next_probe_) start_probe(now, out);
  if (now >= next_reconnect_ && !leaving_) reconnect(now, out);
  return out;
}

membership_output membership_state::leave(time_point now) {
  membership_output out;
  leaving_ = true;
  self_.member.state = member_state::left;
  spread(self_.member);
  // Tell a few members directly; gossip carries it to the rest.
  int told = 0;
  for (const auto& [name, r] : members_) {
    if (!live(r.info.state)) continue;
    out.sends.push_back({name, r.info.fabric_address, wire::leave{"leaving"}});
    if (++told == 3) break;
  }
  next_probe_ = now;
  return out;
}

membership_output membership_state::drain(time_point now) {
  membership_output out;
  if (self_.member.draining || leaving_) return out;
  self_.member.draining = true;
  ++self_.member.incarnation;  // overrides the alive, not-draining record everywhere
  out.changes.push_back(self_.member);
  spread(self_.member);
  next_probe_ = now;
  return out;
}

membership_output membership_state::on_unreachable(const std::string& node, time_point now,
                                                   unreachable_evidence why) {
  membership_output out;
  auto it = members_.find(node);
  if (it == members_.end() || !live(it->second.info.state) || !joined_) return out;
  if (const auto& back = it->second.returned; why == unreachable_evidence::connection_failed &&
                                              back && now - *back < config_.returned_grace) {
    return on_reachable(node, now);
  }
  if (it->second.info.state == member_state::alive) {
    auto update = it->second.info;
    update.state = member_state::suspect;
    update.suspecter = self_.member.node;
    apply(update, now, out);
  }
  auto& r = it->second;
  r.suspect_deadline = std::min(r.suspect_deadline, now + config_.unreachable_confirm);
  return out;
}

time_point membership_state::next_deadline() const {
  if (!joined_) return join_deadline_;
  time_point next = std::min(next_probe_, next_reconnect_);
  if (!probes_.empty()) next = std::min(next, probes_.front().sent + probe_timeout());
  for (const auto& p : probes_) next = std::min(next, p.next_retry);
  for (const auto& [name, r] : members_) {
    if (r.info.state == member_state::suspect) {
      next = std::min({next, r.suspect_deadline, r.next_reprobe});
    }
  }
  return next;
}

std::vector<wire::member> membership_state::members() const {
  std::vector<wire::member> out;
  out.reserve(members_.size() + 1);
  for (const auto& [name, r] : members_) out.push_back(r.info);
  out.push_back(self_.member);
  std::sort(out.begin(), out.end(),
            [](const wire::member& a, const wire::member& b) { return a.node < b.node; });
  return out;
}

const wire::member* membership_state::find(const std::string& node) const {
  if (node == self_.member.node) return &self_.member;
  auto it = members_.find(node);
  return it == members_.end() ? nullptr : &it->second.info;
}

std::string_view to_string(wire::member_state state) noexcept {
  switch (state) {
    case member_state::alive: return "alive";
    case member_state::suspect: return "suspect";
    case member_state::dead: return "dead";
    case member_state::left: return "left";
  }
  return "unknown";
}

bool accepts_incarnation(const wire::member* known, std::uint64_t incarnation) {
  if (known == nullptr) return true;
  if (incarnation != known->incarnation) return incarnation > known->incarnation;
  return live(known->state);
}

bool membership_state::accepts(const std::string& node, std::uint64_t incarnation) const {
  return accepts_incarnation(find(node), incarnation);
}

}  // namespace baton::runtime
