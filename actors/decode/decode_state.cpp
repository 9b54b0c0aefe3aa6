#include "actors/decode/decode_state.hpp"

#include "base/check.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "actors/sampling.hpp"
#include "engine/kv_transfer.hpp"
#include "engine/tokenizer.hpp"

namespace baton::actors {

decode_state::decode_state(engine::device& engine, wire::actor_address self, kv_region region,
                           decode_config config)
    : engine_(engine), self_(std::move(self)), region_(region), config_(config) {}

std::size_t decode_state::blocks_for(std::size_t positions) const {
  const std::size_t per_block = engine_.pool().layout().block_tokens;
  return (positions + per_block - 1) / per_block;
}

std::size_t decode_state::uncommitted_blocks() const {
  return engine_.pool().n_blocks() - committed_;
}

std::size_t decode_state::quarantined_blocks() const {
  std::size_t n = 0;
  for (const auto& [k, a] : attempts_) {
    if (a.state == phase::quarantined) n += a.committed;
  }
  return n;
}

expected<std::size_t> decode_state::blocks_to_admit(const wire::admit& m) const {
  const std::size_t seq_len = engine_.max_context();
  const std::size_t delivered = m.tokens.size() - m.prompt_length;
  if (m.tokens.empty() || m.max_tokens <= delivered) {
    return baton::fail(errc::invalid_argument,
                       fmt::format("admit: {} tokens with prompt length {} and max_tokens {}",
                                   m.tokens.size(), m.prompt_length, m.max_tokens));
  }
  if (m.tokens.size() > seq_len) {
    return baton::fail(errc::invalid_argument,
                       fmt::format("admit: {} tokens exceed seq_len {}", m.tokens.size(), seq_len));
  }
  for (const std::int32_t t : m.tokens) {
    if (t < 0 || t >= engine_.vocab_size()) {
      return baton::fail(errc::invalid_argument, fmt::format("admit: token {} out of range", t));
    }
  }
  // The last token sampled is never fed back, so the sequence holds at most this many.
  const std::size_t positions = m.tokens.size() + (m.max_tokens - delivered) - 1;
  const std::size_t one = blocks_for(std::min(std::max(positions, m.tokens.size()), seq_len));
  // More choices share the prompt's full blocks and need the rest each.
  const std::size_t shared = m.tokens.size() / engine_.pool().layout().block_tokens;
  const std::size_t need = one + (m.choices - 1) * (one - shared);
  if (need > uncommitted_blocks()) {
    return baton::fail(errc::overloaded, fmt::format("kv pool: {} blocks needed, {} uncommitted",
                                                     need, uncommitted_blocks()));
  }
  return need;
}

wire::prefill decode_state::prefill_job(const wire::admit& m, const attempt& a) const {
  const auto block_bytes =
      static_cast<std::uint32_t>(engine_.pool().layout().block_floats() * sizeof(float));
  wire::kv_descriptor kv;
  kv.node = self_.node;
  kv.fabric_node = region_.fabric_node;
  kv.region_key = region_.key;
  kv.offset = region_.pool_offset;
  kv.block_bytes = block_bytes;
  for (const engine::block_id b : engine_.blocks(a.lanes.front().sequence)) {
    kv.block_ids.push_back(static_cast<std::uint32_t>(b));
  }
  kv.length = std::uint64_t{block_bytes} * kv.block_ids.size();
  wire::prefill job;
  job.request = m.request;
  job.attempt = m.attempt;
  job.tokens = m.tokens;
  job.prompt_length = m.prompt_length;
  job.params = m.params;
  job.target = std::move(kv);
  job.decode = self_;
  job.choice = m.choice;
  job.choices = m.choices;
  return job;
}

effects decode_state::on_admit(const wire::actor_address& from, const wire::admit& m,
                               time_point now) {
  effects out;
  const key k{m.request, m.attempt};
  if (attempts_.contains(k)) return out;  // a duplicate admit: the first one is answered
  auto refuse = [&](errc code, std::string message) {
    ++stats_.refused;
    out.send(from, wire::abort_attempt{m.request, m.attempt, code, std::move(message)});
    return out;
  };
  const auto blocks = blocks_to_admit(m);
  if (!blocks) return refuse(blocks.error().code, blocks.error().message);
  const std::size_t need = *blocks;
  attempt a;
  a.router = from;
  a.writer = m.writer;
  a.tokens.assign(m.tokens.begin(), m.tokens.end());
  a.prompt_length = m.prompt_length;
  a.max_tokens = m.max_tokens;
  a.params = m.params;
  for (std::uint32_t c = m.choice; c < m.choice + m.choices; ++c) {
    lane l;
    l.choice = c;
    l.generated = static_cast<std::uint32_t>(m.tokens.size() - m.prompt_length);
    l.history.assign(m.tokens.begin() + m.prompt_length, m.tokens.end());
    a.lanes.push_back(std::move(l));
  }
  a.committed = need;
  a.limit = static_cast<std::uint32_t>(m.tokens.size()) + wire::initial_stream_window;
  if (m.writer.empty()) {
    auto [it, inserted] = attempts_.emplace(k, std::move(a));
    committed_ += need;
    ++stats_.admitted;
    ++stats_.local_prefills;
    out.append(prefill_here(k, it->second, now));
    return out;
  }
  auto sequence = engine_.reserve_sequence(a.tokens.size());
  if (!sequence) return refuse(sequence.error().code, sequence.error().message);
  a.lanes.front().sequence = *sequence;
  a.lanes.front().holds_sequence = true;
  a.timer = ++next_timer_;
  timers_.emplace(a.timer, k);
  out.timers.push_back({a.timer, now + config_.kv_timeout});
  // The job goes straight to the prefill actor (not back through the router): one hop less
  // on the way to the first token.
  auto job = prefill_job(m, a);
  attempts_.emplace(k, std::move(a));
  committed_ += need;
  ++stats_.admitted;
  out.send({m.writer, prefill_name}, std::move(job));
  return out;
}

effects decode_state::prefill_here(const key& k, attempt& a, time_point now) {
  lane& first = a.lanes.front();
  auto sequence = engine_.add_sequence();
  if (!sequence) return fail(k, sequence.error().code, sequence.error().message);
  first.sequence = *sequence;
  first.holds_sequence = true;
  const auto prompt = std::span(a.tokens).first(a.prompt_length);
  const auto generated = std::span(a.tokens).subspan(a.prompt_length);
  std::vector<engine::sampler> picks;
  std::vector<engine::sampler*> pick_ptrs;
  for (const lane& l : a.lanes)
    picks.push_back(make_sampler(a.params, l.choice, prompt, generated));
  for (auto& p : picks) pick_ptrs.push_back(&p);
  auto step = engine_.prefill(first.sequence, a.tokens, pick_ptrs, nullptr);
  if (!step) return fail(k, step.error().code, step.error().message);
  const std::vector<std::int32_t> tokens(step->tokens.begin(), step->tokens.end());
  std::vector<wire::token_logprobs> logprobs;
  if (a.params.logprobs) {
    for (std::size_t i = 0; i < picks.size(); ++i)
      logprobs.push_back(logprobs_of(picks[i], tokens[i]));
  }
  return publish(start_lanes(k, a, tokens, logprobs), step->modelled, now);
}

effects decode_state::start_lanes(const key& k, attempt& a,
                                  std::span<const std::int32_t> first_tokens,
                                  std::span<const wire::token_logprobs> logprobs) {
  for (std::size_t i = 1; i < a.lanes.size(); ++i) {
    auto fork = engine_.fork_sequence(a.lanes.front().sequence);
    if (!fork) return fail(k, fork.error().code, fork.error().message);
    a.lanes[i].sequence = *fork;
    a.lanes[i].holds_sequence = true;
  }
  const auto prompt = std::span(a.tokens).first(a.prompt_length);
  std::vector<std::int32_t> history(a.tokens.begin() + a.prompt_length, a.tokens.end());
  history.push_back(0);
  a.state = phase::running;
  effects out;
  for (std::size_t i = 0; i < a.lanes.size(); ++i) {
    // The sampler resumes after the first token, which the prefill drew.
    history.back() = first_tokens[i];
    a.lanes[i].pick = make_sampler(a.params, a.lanes[i].choice, prompt, history);
    running_.push_back({k, i});
  }
  for (std::size_t i = 0; i < first_tokens.size() && attempts_.contains(k); ++i) {
    std::optional<wire::token_logprobs> lp;
    if (i < logprobs.size()) lp = logprobs[i];
    out.append(emit(k, a, i, first_tokens[i], std::move(lp)));
  }
  return out;
}

effects decode_state::publish(effects out, std::chrono::nanoseconds modelled, time_point now) {
  if (modelled.count() <= 0) return out;
  const std::uint64_t id = ++next_timer_;
  held_.emplace(id, std::move(out.sends));
  out.sends.clear();
  out.timers.push_back({id, now + std::chrono::duration_cast<clock::duration>(modelled)});
  return out;
}

effects decode_state::on_prefill_done(const wire::actor_address& from, const wire::prefill_done& m,
                                      time_point now) {
  effects out;
  const key k{m.request, m.attempt};
  auto it = attempts_.find(k);
  if (it == attempts_.end() || from.node != it->second.writer) return out;  // stale
  attempt& a = it->second;
  if (a.state == phase::quarantined) {  // the writer's attempt has ended: blocks are safe
    release(k);
    return out;
  }
  if (a.state != phase::awaiting_kv) return out;
  timers_.erase(a.timer);
  lane& first = a.lanes.front();
  const auto blocks = engine_.blocks(first.sequence);
  bool good = m.checksums.size() == blocks.size() && m.position == a.tokens.size() &&
              m.first_tokens.size() == a.lanes.size() &&
              std::all_of(m.first_tokens.begin(), m.first_tokens.end(), [&](std::uint32_t t) {
                return t < static_cast<std::uint32_t>(engine_.vocab_size());
              });
  for (std::size_t i = 0; good && i < blocks.size(); ++i) {
    good = engine::verify_block(engine_, first.sequence, i, m.checksums[i]).has_value();
  }
  if (!good) {
    // Wrong bytes never decode: recompute the prompt here from its tokens.
    ++stats_.checksum_failures;
    ++stats_.recomputed;
    engine_.remove_sequence(first.sequence);
    first.holds_sequence = false;
    return prefill_here(k, a, now);
  }
  const std::vector<std::int32_t> tokens(m.first_tokens.begin(), m.first_tokens.end());
  return start_lanes(k, a, tokens, m.logprobs);
}

effects decode_state::emit(const key& k, attempt& a, std::size_t index, std::int32_t token,
                           std::optional<wire::token_logprobs> logprobs) {
  effects out;
  lane& l = a.lanes[index];
  const std::size_t position = engine_.length(l.sequence);
  if (token == engine::tokenizer::bos && !a.params.ignore_eos) {
    ++stats_.finished;
    l.finished = wire::finish_reason::end_of_text;
    to_router(
        a, wire::finish{k.first, k.second, wire::finish_reason::end_of_text, l.generated, l.choice},
        out);
    end_lane(k, a, index);
    return out;
  }
  ++l.generated;
  ++stats_.tokens;
  l.history.push_back(token);
  if (logprobs) l.logprobs.push_back(*logprobs);
  wire::token_batch batch{
      k.first, k.second, static_cast<std::uint32_t>(position), {static_cast<std::uint32_t>(token)},
      {},      l.choice};
  if (logprobs) batch.logprobs.push_back(std::move(*logprobs));
  if (l.generated >= a.max_tokens || position >= engine_.max_context()) {
    ++stats_.finished;
    l.finished = wire::finish_reason::length;
    batch.finish = wire::finish_reason::length;  // the last token and the end in one message
    to_router(a, std::move(batch), out);
    end_lane(k, a, index);
    return out;
  }
  to_router(a, std::move(batch), out);
  l.last_token = token;
  return out;
}

void decode_state::close_lane(const key& k, attempt& a, std::size_t index) {
  lane& l = a.lanes[index];
  l.done = true;
  if (l.holds_sequence) engine_.remove_sequence(l.sequence);
  l.holds_sequence = false;
  std::erase(running_, lane_key{k, index});
}

void decode_state::end_lane(const key& k, attempt& a, std::size_t index) {
  close_lane(k, a, index);
  // An orphan keeps its ended lanes' tokens for a claim.
  if (!a.orphaned &&
      std::all_of(a.lanes.begin(), a.lanes.end(), [](const lane& x) { return x.done; })) {
    release(k);
  }
}

void decode_state::to_router(const attempt& a, wire::body m, effects& out) const {
  if (!a.orphaned) out.send(a.router, std::move(m));
}

std::size_t decode_state::orphans() const {
  return static_cast<std::size_t>(std::count_if(
      attempts_.begin(), attempts_.end(), [](const auto& entry) { return entry.second.orphaned; }));
}

bool decode_state::may_step(const attempt& a, const lane& l) const {
  return engine_.length(l.sequence) + 1 < a.limit;
}

bool decode_state::has_work() const {
  if (!held_.empty()) return false;  // the device is busy for a modelled time
  return std::any_of(running_.begin(), running_.end(), [&](const lane_key& r) {
    const auto& a = must_find(attempts_, r.first, "a running lane has its attempt");
    return may_step(a, a.lanes[r.second]);
  });
}

std::size_t decode_state::parked() const {
  return static_cast<std::size_t>(
      std::count_if(running_.begin(), running_.end(), [&](const lane_key& r) {
        const auto& a = must_find(attempts_, r.first, "a running lane has its attempt");
        return !may_step(a, a.lanes[r.second]);
      }));
}

void decode_state::on_window(const wire::stream_window& m) {
  auto it = attempts_.find({m.request, m.attempt});
  if (it != attempts_.end()) it->second.limit = std::max(it->second.limit, m.limit);
}

effects decode_state::step(time_point now) {
  effects out;
  if (running_.empty()) return out;
  if (next_ >= running_.size()) next_ = 0;
  std::vector<lane_key> batch;
  std::vector<engine::decode_input> inputs;
  std::vector<engine::sampler*> picks;
  std::size_t scanned = 0;
  for (; scanned < running_.size() && batch.size() < config_.max_batch; ++scanned) {
    const lane_key r = running_[(next_ + scanned) % running_.size()];
    attempt& a = must_find(attempts_, r.first, "a running lane has its attempt");
    lane& l = a.lanes[r.second];
    if (!may_step(a, l)) continue;  // parked: its client has not made room yet
    batch.push_back(r);
    inputs.push_back({l.sequence, l.last_token});
    picks.push_back(&*l.pick);
  }
  next_ = (next_ + scanned) % running_.size();
  if (batch.empty()) return out;
  auto step = engine_.decode(inputs, picks);
  if (!step) {
    for (const lane_key& r : batch)
      out.append(fail(r.first, step.error().code, step.error().message));
    return out;
  }
  // Copy first: emit() may finish sequences, and the span lives until the next engine call.
  const std::vector<std::int32_t> tokens(step->tokens.begin(), step->tokens.end());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto it = attempts_.find(batch[i].first);
    if (it == attempts_.end()) continue;  // a failure above released it
    attempt& a = it->second;
    std::optional<wire::token_logprobs> lp;
    if (a.params.logprobs) lp = logprobs_of(*a.lanes[batch[i].second].pick, tokens[i]);
    out.append(emit(batch[i].first, a, batch[i].second, tokens[i], std::move(lp)));
  }
  return publish(std::move(out), step->modelled, now);
}

effects decode_state::on_cancel(const wire::actor_address& from, const wire::cancel& m) {
  effects out;
  std::vector<key> keys;
  for (const auto& [k, a] : attempts_) {
    // Only its router ends an attempt: a router that lost its client must not cancel what
    // another router has claimed.
    const bool all = m.request == wire::request_id{};  // the router moved everything
    if ((all || k.first == m.request) && (m.attempt == 0 || k.second == m.attempt) &&
        a.state != phase::quarantined && a.router.node == from.node && !a.orphaned) {
      keys.push_back(k);
    }
  }
  for (const key& k : keys) {
    ++stats_.cancelled;
    // The job went from here, so a cancel from here reaches its prefill after it (the
    // router's own cancel may overtake the job); the blocks stay quarantined meanwhile.
    end_waiting(k, m.reason, out);
  }
  return out;
}

effects decode_state::on_abort(const wire::actor_address& from, const wire::abort_attempt& m) {
  effects out;
  const key k{m.request, m.attempt};
  auto it = attempts_.find(k);
  if (it == attempts_.end() || from.node != it->second.writer) return out;
  if (it->second.state == phase::awaiting_kv) {
    out.send(it->second.router, wire::abort_attempt{m.request, m.attempt, m.code,
                                                    fmt::format("prefill: {}", m.message)});
  }
  if (it->second.state != phase::running) release(k);
  return out;
}

effects decode_state::on_node_gone(const std::string& node, time_point now) {
  effects out = writer_gone(node);
  out.append(router_gone(node, now));
  return out;
}

effects decode_state::on_actor_gone(const wire::actor_address& actor, time_point now) {
  if (actor.actor == router_name) return router_gone(actor.node, now);
  if (actor.actor == prefill_name) return writer_gone(actor.node);
  return {};
}

effects decode_state::writer_gone(const std::string& node) {
  effects out;
  std::vector<key> gone;
  for (const auto& [k, a] : attempts_) {
    if (a.writer == node && a.state != phase::running) gone.push_back(k);
  }
  for (const key& k : gone) {
    const attempt& a = must_find(attempts_, k, "a running sequence has its attempt");
    if (a.state == phase::awaiting_kv) {
      out.send(a.router, wire::abort_attempt{k.first, k.second, errc::disconnected,
                                             fmt::format("prefill on {} is gone", node)});
    }
    release(k);
  }
  return out;
}

effects decode_state::router_gone(const std::string& node, time_point now) {
  effects out;
  std::vector<key> gone;
  for (const auto& [k, a] : attempts_) {
    if (a.router.node == node && a.state != phase::quarantined && !a.orphaned) gone.push_back(k);
  }
  for (const key& k : gone) {
    attempt& a = must_find(attempts_, k, "an attempt of a dead router");
    if (a.state != phase::running) {
      ++stats_.cancelled;
      quarantine_or_release(k);
      continue;
    }
    // Kept for a router that resumes the request, for orphan_grace.
    ++stats_.orphaned;
    a.orphaned = true;
    a.timer = ++next_timer_;
    timers_.emplace(a.timer, k);
    out.timers.push_back({a.timer, now + config_.orphan_grace});
    if (std::all_of(a.lanes.begin(), a.lanes.end(), [](const lane& x) { return x.done; })) {
      release(k);  // nothing left to hand over
    }
  }
  return out;
}

effects decode_state::on_claim(const wire::actor_address& from, const wire::claim& m, time_point) {
  effects out;
  std::vector<key> held;
  for (const auto& [k, a] : attempts_) {
    if (k.first != m.request || a.state != phase::running) continue;
    if (a.orphaned || a.router.node != from.node) held.push_back(k);
  }
  wire::claimed reply{m.new_request, {}};
  effects replay;
  std::uint32_t number = m.attempt_base;
  for (const key& k : held) {
    if (hand_over(k, m, from, number, replay, reply)) ++number;
  }
  // The answer first: the router learns the attempts before their tokens arrive.
  out.send(from, std::move(reply));
  out.append(std::move(replay));
  return out;
}

bool decode_state::hand_over(const key& k, const wire::claim& m, const wire::actor_address& from,
                             std::uint32_t number, effects& out, wire::claimed& reply) {
  attempt& a = must_find(attempts_, k, "a claimed attempt");
  const std::size_t prompt = a.prompt_length;
  const std::size_t delivered_before = a.tokens.size() - prompt;
  std::vector<std::pair<std::size_t, std::size_t>> serving;  // (lane, client's history index)
  for (std::size_t i = 0; i < a.lanes.size(); ++i) {
    lane& l = a.lanes[i];
    const auto wanted =
        std::find_if(m.choices.begin(), m.choices.end(),
                     [&](const wire::claim_choice& c) { return c.choice == l.choice; });
    const bool servable = wanted != m.choices.end() && wanted->position >= prompt &&
                          wanted->position - prompt <= l.history.size() &&
                          (!a.params.logprobs || wanted->position - prompt >= delivered_before);
    if (!servable) {
      // Not asked for (done at the client), or the client is past or before what this
      // lane can send: the claimer places it afresh.
      close_lane(k, a, i);
      continue;
    }
    serving.emplace_back(i, wanted->position - prompt);
  }
  if (serving.empty()) {
    release(k);
    return false;
  }
  const key moved{m.new_request, number};
  timers_.erase(a.timer);
  a.timer = 0;
  a.orphaned = false;
  a.router = from;
  wire::claimed_attempt taken{number, {}, static_cast<std::uint32_t>(a.committed)};
  std::uint32_t lowest = std::numeric_limits<std::uint32_t>::max();
  for (const auto& [i, from_index] : serving) {
    lane& l = a.lanes[i];
    taken.choices.push_back(l.choice);
    lowest = std::min(lowest, static_cast<std::uint32_t>(prompt + from_index));
    if (from_index < l.history.size()) {
      wire::token_batch batch{
          m.new_request, number,  static_cast<std::uint32_t>(prompt + from_index), {},
          l.finished,    l.choice};
      for (std::size_t h = from_index; h < l.history.size(); ++h) {
        batch.tokens.push_back(static_cast<std::uint32_t>(l.history[h]));
        if (a.params.logprobs) batch.logprobs.push_back(l.logprobs[h - delivered_before]);
      }
      out.send(from, std::move(batch));
    } else if (l.finished) {
      out.send(from, wire::finish{m.new_request, number, *l.finished, l.generated, l.choice});
    }
  }
  a.limit = std::max(a.limit, lowest + wire::initial_stream_window);
  ++stats_.claimed;
  reply.attempts.push_back(std::move(taken));
  auto entry = attempts_.extract(k);
  entry.key() = moved;
  attempts_.insert(std::move(entry));
  for (auto& r : running_) {
    if (r.first == k) r.first = moved;
  }
  attempt& now_held = must_find(attempts_, moved, "the attempt just handed over");
  if (std::all_of(now_held.lanes.begin(), now_held.lanes.end(),
                  [](const lane& x) { return x.done; })) {
    release(moved);  // everything it had is on its way
  }
  return true;
}

effects decode_state::on_undeliverable(const wire::actor_address& to) {
  effects out;
  if (to.actor != prefill_name) return out;
  std::vector<key> refused;
  for (const auto& [k, a] : attempts_) {
    if (a.writer == to.node && a.state != phase::running) refused.push_back(k);
  }
  for (const key& k : refused) {
    // The job never reached the prefill actor, so nothing writes into these blocks: a
    // quarantined attempt (cancelled while its job was on the way) is over too.
    const attempt& a = must_find(attempts_, k, "a running sequence has its attempt");
    if (a.state == phase::awaiting_kv) {
      out.send(a.router,
               wire::abort_attempt{k.first, k.second, errc::disconnected,
                                   fmt::format("prefill on {} did not take the job", to.node)});
    }
    release(k);
  }
  return out;
}

effects decode_state::on_timer(std::uint64_t id, time_point) {
  effects out;
  if (auto h = held_.find(id); h != held_.end()) {  // a modelled step has taken its time
    out.sends = std::move(h->second);
    held_.erase(h);
    return out;
  }
  auto t = timers_.find(id);
  if (t == timers_.end()) return out;
  const key k = t->second;
  timers_.erase(t);
  auto it = attempts_.find(k);
  if (it != attempts_.end() && it->second.orphaned) {  // nobody claimed it in time
    ++stats_.orphans_released;
    release(k);
    return out;
  }
  if (it == attempts_.end() || it->second.state != phase::awaiting_kv) return out;
  out.send(it->second.router,
           wire::abort_attempt{k.first, k.second, errc::timed_out,
                               fmt::format("no prefill-done from {} within {} ms",
                                           it->second.writer, config_.kv_timeout.count())});
  end_waiting(k, "no prefill-done in time", out);
  return out;
}

effects decode_state::on_buried() {
  effects out;
  std::vector<key> waiting;
  for (const auto& [k, a] : attempts_) {
    if (a.state == phase::awaiting_kv && !a.writer.empty()) waiting.push_back(k);
  }
  for (const key& k : waiting) {
    const attempt& a = must_find(attempts_, k, "a waiting attempt");
    out.send(a.router, wire::abort_attempt{k.first, k.second, errc::disconnected,
                                           "this decode node was declared dead: its prefill "
                                           "job may have been refused"});
    end_waiting(k, "its decode node was declared dead", out);
  }
  return out;
}

void decode_state::end_waiting(const key& k, const std::string& why, effects& out) {
  const attempt& a = must_find(attempts_, k, "an attempt to end");
  // The prefill ends its job, or says it has none: either way the quarantine ends.
  if (a.state == phase::awaiting_kv && !a.writer.empty()) {
    out.send({a.writer, prefill_name}, wire::cancel{k.first, why, k.second});
  }
  quarantine_or_release(k);
}

effects decode_state::evict(const std::string& why) {
  effects out;
  std::vector<key> keys;
  for (const auto& [k, a] : attempts_) {
    if (a.state != phase::quarantined) keys.push_back(k);
  }
  for (const key& k : keys) {
    attempt& a = must_find(attempts_, k, "an attempt to evict");
    to_router(a, wire::abort_attempt{k.first, k.second, errc::unavailable, why}, out);
    end_waiting(k, why, out);
  }
  return out;
}

void decode_state::on_slice_landed(std::uint64_t) {
  ++stats_.slices_landed;
}

effects decode_state::fail(const key& k, errc code, std::string message) {
  effects out;
  auto it = attempts_.find(k);
  if (it == attempts_.end()) return out;
  to_router(it->second, wire::abort_attempt{k.first, k.second, code, std::move(message)}, out);
  release(k);
  return out;
}

void decode_state::quarantine_or_release(const key& k) {
  attempt& a = must_find(attempts_, k, "a running sequence has its attempt");
  if (a.state == phase::awaiting_kv && !a.writer.empty() && config_.quarantine_late_writes) {
    a.state = phase::quarantined;
    timers_.erase(a.timer);
    return;
  }
  release(k);
}

void decode_state::release(const key& k) {
  auto it = attempts_.find(k);
  if (it == attempts_.end()) return;
  attempt& a = it->second;
  for (const lane& l : a.lanes) {
    if (l.holds_sequence) engine_.remove_sequence(l.sequence);
  }
  timers_.erase(a.timer);
  committed_ -= a.committed;
  std::erase_if(running_, [&](const lane_key& r) { return r.first == k; });
  attempts_.erase(it);
}

}  // namespace baton::actors
