#include "actors/router/router_state.hpp"

#include "base/check.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <xxhash.h>

namespace baton::actors {
namespace {

/// The bits of a request id that count requests (see router_config::first_request).
constexpr std::uint64_t request_counter = (std::uint64_t{1} << 40) - 1;

}  // namespace

std::string_view to_string(migration_cause cause) noexcept {
  switch (cause) {
    case migration_cause::node_death: return "node_death";
    case migration_cause::router_death: return "router_death";
    case migration_cause::drain: return "drain";
    case migration_cause::actor_crash: return "actor_crash";
    case migration_cause::worker_failure: return "worker_failure";
    case migration_cause::lost: return "lost";
  }
  return "?";
}

router_state::router_state(const engine::tokenizer& tok, std::int32_t seq_len,
                           std::size_t block_tokens, wire::actor_address self, router_config config)
    : tok_(tok),
      seq_len_(seq_len),
      block_tokens_(block_tokens),
      self_(std::move(self)),
      config_(config),
      seeds_(config.seed),
      // Request ids of different routers differ in their top 24 bits.
      next_request_((XXH3_64bits(self_.node.data(), self_.node.size()) & 0xffffffu) << 40 |
                    (config.first_request & request_counter)),
      seeds_tie_(XXH3_64bits(self_.node.data(), self_.node.size())) {}

std::size_t router_state::blocks_for(std::size_t positions) const {
  return (positions + block_tokens_ - 1) / block_tokens_;
}

std::size_t router_state::blocks_needed(const request& r, std::size_t tokens,
                                        std::size_t count) const {
  const std::size_t remaining = r.max_tokens - (tokens - r.prompt.size());
  const std::size_t one = blocks_for(tokens + remaining - 1);
  return one + (count - 1) * (one - tokens / block_tokens_);
}

std::size_t router_state::workers(wire::role role) const {
  const auto& table = role == wire::role::prefill ? prefill_ : decode_;
  return static_cast<std::size_t>(std::count_if(
      table.begin(), table.end(), [](const auto& entry) { return !entry.second.draining; }));
}

std::size_t router_state::score(wire::role role, const worker& w) const {
  const auto preferred =
      role == wire::role::prefill ? wire::node_kind::trainium : wire::node_kind::wafer_scale;
  return w.load + (w.kind == preferred ? 0 : config_.kind_penalty);
}

std::uint64_t router_state::add_timer(wire::request_id id, timer_kind kind, time_point at,
                                      router_effects& out) {
  const std::uint64_t t = ++next_timer_;
  timers_.emplace(t, std::pair{id, kind});
  out.timers.push_back({t, at});
  return t;
}

router_effects router_state::add_worker(const wire::actor_address& address, wire::role role,
                                        wire::node_kind kind, std::size_t kv_blocks, time_point now,
                                        std::uint64_t incarnation) {
  router_effects out;
  auto& table = role == wire::role::prefill ? prefill_ : decode_;
  auto& rank = role == wire::role::prefill ? prefill_rank_ : decode_rank_;
  if (table.contains(address.node)) return out;
  if (role == wire::role::decode && gone_decodes_.erase(address.node) > 0) {
    // It was gone (declared dead: perhaps only cut off, and alive all along): what this
    // router had there was moved elsewhere, so it ends everything of this router's.
    out.send(address, wire::cancel{wire::request_id{}, "moved while this node was gone", 0});
  }
  worker w{address, kind, kv_blocks, 0, 0, 0, false, incarnation};
  w.score = score(role, w);
  w.tie = XXH3_64bits_withSeed(address.node.data(), address.node.size(), seeds_tie_);
  rank.emplace(w.score, w.tie, address.node);
  table.emplace(address.node, std::move(w));
  capacity_changed_ = true;
  settle(now, out);
  return out;
}

void router_state::on_draining(const std::string& node) {
  for (auto* table : {&prefill_, &decode_}) {
    auto it = table->find(node);
    if (it == table->end() || it->second.draining) continue;
    auto& rank = table == &prefill_ ? prefill_rank_ : decode_rank_;
    rank.erase({it->second.score, it->second.tie, node});
    it->second.draining = true;
  }
}

void router_state::adjust(wire::role role, worker& w, std::ptrdiff_t load, std::ptrdiff_t blocks) {
  auto& rank = role == wire::role::prefill ? prefill_rank_ : decode_rank_;
  if (!w.draining) rank.erase({w.score, w.tie, w.address.node});
  w.load = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(w.load) + load);
  w.committed = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(w.committed) + blocks);
  w.score = score(role, w);
  if (!w.draining) rank.emplace(w.score, w.tie, w.address.node);
}

router_state::worker* router_state::pick(wire::role role, const std::set<std::string>& avoid,
                                         std::size_t blocks) {
  auto& table = role == wire::role::prefill ? prefill_ : decode_;
  const auto& rank = role == wire::role::prefill ? prefill_rank_ : decode_rank_;
  // Nodes that failed this request are avoided while another one fits.
  for (const bool avoiding : {true, false}) {
    for (const auto& [s, tie, node] : rank) {
      if ((avoiding && avoid.contains(node)) || unreachable_.contains(node)) continue;
      worker& w = must_find(table, node, "a ranked worker is in its role's table");
      if (role == wire::role::decode && w.kv_blocks > 0 && w.committed + blocks > w.kv_blocks) {
        continue;
      }
      return &w;
    }
  }
  return nullptr;
}

std::optional<std::string> router_state::check(const wire::generate_request& in) const {
  if (in.params.temperature < 0 || !(in.params.top_p > 0 && in.params.top_p <= 1)) {
    return fmt::format("temperature {} must be >= 0 and top_p {} in (0, 1]", in.params.temperature,
                       in.params.top_p);
  }
  if (in.n == 0 || in.n > wire::max_choices) {
    return fmt::format("n {} must be in [1, {}]", in.n, wire::max_choices);
  }
  if (in.resume && (in.resume->choices.size() != in.n || !in.has_seed)) {
    return "a resumed request carries its seed and one state per choice";
  }
  for (const auto& b : in.params.logit_bias) {
    if (b.token >= static_cast<std::uint32_t>(tok_.vocab_size())) {
      return fmt::format("logit_bias names token {}; the vocabulary has {} tokens", b.token,
                         tok_.vocab_size());
    }
  }
  return std::nullopt;
}

void router_state::take_resume(const wire::resume_state& from, request& r) const {
  // The client's tokens are what was delivered; a choice it saw end is done.
  for (std::size_t c = 0; c < r.choices.size(); ++c) {
    const auto& seen = from.choices[c];
    auto& choice = r.choices[c];
    for (const auto t : seen.tokens) {
      if (choice.delivered.size() >= r.max_tokens) break;
      choice.delivered.push_back(static_cast<std::int32_t>(
          std::min<std::uint32_t>(t, static_cast<std::uint32_t>(tok_.vocab_size() - 1))));
    }
    choice.done = seen.done || choice.delivered.size() >= r.max_tokens;
    choice.reason = seen.done ? seen.reason : wire::finish_reason::length;
  }
  r.resumed_from = from.request;
}

router_effects router_state::on_generate(const wire::generate_request& in, time_point now) {
  return admit(in, std::nullopt, now);
}

router_effects router_state::on_generate_tokens(const wire::generate_request& in,
                                                std::vector<std::int32_t> prompt, time_point now) {
  return admit(in, std::move(prompt), now);
}

router_effects router_state::admit(const wire::generate_request& in,
                                   std::optional<std::vector<std::int32_t>> tokens,
                                   time_point now) {
  router_effects out;
  next_request_ = (next_request_ & ~request_counter) | ((next_request_ + 1) & request_counter);
  const wire::request_id id{next_request_};
  auto refuse = [&](errc code, std::string message) {
    ++(code == errc::overloaded ? stats_.overloaded : stats_.invalid);
    out.events.push_back({id, wire::rejected{in.client_tag, code, std::move(message)}});
    return out;
  };
  if (requests_.size() >= config_.max_inflight) {
    return refuse(errc::overloaded,
                  fmt::format("router {}: {} requests in flight", self_.node, requests_.size()));
  }
  if (auto bad = check(in)) return refuse(errc::invalid_argument, std::move(*bad));
  if (tokens) {
    const auto bad = std::find_if(tokens->begin(), tokens->end(),
                                  [&](std::int32_t t) { return t < 0 || t >= tok_.vocab_size(); });
    if (tokens->empty() || bad != tokens->end()) {
      return refuse(errc::invalid_argument,
                    tokens->empty() ? std::string("the prompt has no tokens")
                                    : fmt::format("the prompt names token {}; the vocabulary has "
                                                  "{} tokens",
                                                  *bad, tok_.vocab_size()));
    }
  }
  request r;
  r.prompt = tokens ? std::move(*tokens) : tok_.encode(in.prompt, true, false);
  const auto n_prompt = static_cast<std::int32_t>(r.prompt.size());
  const std::int32_t steps =
      in.max_positions == 0 || in.max_positions > static_cast<std::uint32_t>(seq_len_)
          ? seq_len_
          : static_cast<std::int32_t>(in.max_positions);
  if (in.max_positions == 0 && n_prompt >= seq_len_) {
    return refuse(
        errc::invalid_argument,
        fmt::format("the prompt has {} tokens; the model's context is {}", n_prompt, seq_len_));
  }
  r.params = in.params;
  if (!in.has_seed) r.params.seed = seeds_();
  wire::accepted acc;
  acc.client_tag = in.client_tag;
  acc.request = id;
  acc.seed = r.params.seed;
  acc.prompt_tokens = static_cast<std::uint32_t>(n_prompt);
  // The prompt pieces llama2.c echoes before sampling (a caller of tokens has them).
  for (std::int32_t pos = 0; !tokens && pos < std::min(steps, n_prompt - 1); ++pos) {
    acc.prompt_text += engine::printable(tok_.decode(r.prompt[pos], r.prompt[pos + 1]));
  }
  ++stats_.accepted;
  const std::int32_t can_generate = steps - n_prompt + 1;
  if (can_generate <= 0) {
    out.events.push_back({id, std::move(acc)});
    out.events.push_back(
        {id, wire::finished{in.client_tag, wire::finish_reason::length, acc.prompt_tokens, 0}});
    ++stats_.finished;
    return out;
  }
  r.max_tokens = static_cast<std::uint32_t>(can_generate);
  if (in.max_tokens > 0) r.max_tokens = std::min(r.max_tokens, in.max_tokens);
  r.choices.resize(in.n);
  if (in.resume) {
    take_resume(*in.resume, r);
    ++stats_.resumed;
    ++stats_.migrations[static_cast<std::size_t>(migration_cause::router_death)];
    acc.placement = "resumed";
    out.log.push_back(fmt::format("request {} resumes request {} of a router that went away",
                                  static_cast<std::uint64_t>(id),
                                  static_cast<std::uint64_t>(in.resume->request)));
  }
  const auto timeout =
      in.timeout_ms > 0 ? std::chrono::milliseconds(in.timeout_ms) : config_.default_timeout;
  auto [it, inserted] = requests_.emplace(id, std::move(r));
  request& req = it->second;
  req.timer = add_timer(id, timer_kind::deadline, now + timeout, out);
  if (in.resume) {
    out.events.push_back({id, std::move(acc)});
    claim(id, req, now, out);
    return out;
  }
  auto placed = place(id, req, now);
  if (auto e_it = requests_.find(id); e_it != requests_.end() && !e_it->second.attempts.empty()) {
    const auto& first = e_it->second.attempts.begin()->second;
    acc.prefill_node = first.prefill;
    acc.decode_node = first.decode;
    acc.placement = first.prefill.empty() ? "prefill-on-decode" : "disaggregated";
  } else if (requests_.contains(id)) {
    acc.placement = "waiting";
  }
  if (!placed.events.empty() &&
      std::holds_alternative<wire::rejected>(placed.events.front().what)) {
    // Refused at once (the queue is full): no accepted before it, and not a failure.
    --stats_.accepted;
    --stats_.failed;
    out.append(std::move(placed));
    return out;
  }
  out.events.push_back({id, std::move(acc)});
  out.append(std::move(placed));
  return out;
}

void router_state::claim(wire::request_id id, request& r, time_point now, router_effects& out) {
  wire::claim c{r.resumed_from, id, 0, {}};
  for (std::uint32_t i = 0; i < r.choices.size(); ++i) {
    if (r.choices[i].done) continue;
    c.choices.push_back(
        {i, static_cast<std::uint32_t>(r.prompt.size() + r.choices[i].delivered.size())});
  }
  if (c.choices.empty() || decode_.empty()) {
    out.append(place(id, r, now));
    return;
  }
  std::vector<const worker*> nodes;  // in name order
  for (const auto& [node, w] : decode_) nodes.push_back(&w);
  std::sort(nodes.begin(), nodes.end(),
            [](const worker* a, const worker* b) { return a->address.node < b->address.node; });
  for (const worker* w : nodes) {
    // Each node renumbers what it hands over from its own base: numbers never collide.
    c.attempt_base = r.last_attempt + 1;
    r.last_attempt += wire::max_choices;
    r.claiming.insert(w->address.node);
    out.send(w->address, c);
  }
  r.claim_timer = add_timer(id, timer_kind::claim, now + config_.claim_timeout, out);
}

router_effects router_state::on_claimed(const wire::actor_address& from, const wire::claimed& m,
                                        time_point now) {
  router_effects out;
  auto it = requests_.find(m.request);
  const bool due = it != requests_.end() && it->second.claiming.erase(from.node) > 0;
  for (const auto& a : m.attempts) {
    request* r = due ? &it->second : nullptr;
    // Each choice once: an attempt that brings one already served (or done) is not needed.
    const bool wanted =
        r != nullptr && std::all_of(a.choices.begin(), a.choices.end(), [&](std::uint32_t c) {
          return c < r->choices.size() && !r->choices[c].done &&
                 std::none_of(r->attempts.begin(), r->attempts.end(),
                              [&](const auto& live) { return live.second.serves(c); });
        });
    auto d = decode_.find(from.node);
    if (!wanted || d == decode_.end() || r->attempts.contains(a.attempt)) {
      out.send(from, wire::cancel{m.request, "not needed", a.attempt});
      continue;
    }
    attempt_state taken;
    taken.choices = a.choices;
    std::sort(taken.choices.begin(), taken.choices.end());
    taken.at = stage::decoding;
    taken.heard = now;
    taken.decode = from.node;
    taken.blocks = a.blocks;
    std::size_t lowest = std::numeric_limits<std::size_t>::max();
    for (const auto c : taken.choices) {
      lowest = std::min(lowest, r->prompt.size() + r->choices[c].delivered.size());
    }
    taken.window = static_cast<std::uint32_t>(lowest) + wire::initial_stream_window;
    r->attempts.emplace(a.attempt, std::move(taken));
    adjust(wire::role::decode, d->second, 1, static_cast<std::ptrdiff_t>(a.blocks));
    ++stats_.claimed;
  }
  if (due && it->second.claiming.empty()) end_claim(m.request, it->second, now, out);
  settle(now, out);
  return out;
}

void router_state::end_claim(wire::request_id id, request& r, time_point now, router_effects& out) {
  r.claiming.clear();
  timers_.erase(r.claim_timer);
  r.claim_timer = 0;
  std::size_t taken = 0;
  for (const auto& [n, a] : r.attempts) taken += a.choices.size();
  out.log.push_back(fmt::format("request {}: decode nodes handed over {} of its choices",
                                static_cast<std::uint64_t>(id), taken));
  out.append(place(id, r, now));
}

router_effects router_state::place(wire::request_id id, request& r, time_point now) {
  router_effects out;
  if (std::all_of(r.choices.begin(), r.choices.end(), [](const auto& c) { return c.done; })) {
    maybe_finished(id, r, out);  // everything was delivered before a failure
    return out;
  }
  if (!r.claiming.empty() || r.waiting) return out;  // placed when the claim or wait ends
  std::vector<std::uint32_t> unplaced;
  for (std::uint32_t c = 0; c < r.choices.size(); ++c) {
    const bool live = std::any_of(r.attempts.begin(), r.attempts.end(),
                                  [&](const auto& a) { return a.second.serves(c); });
    if (!r.choices[c].done && !live) unplaced.push_back(c);
  }
  if (unplaced.empty()) return out;
  // Choices that have delivered nothing (the first round) share one attempt and the
  // prompt's KV; once they diverge, each resumes from its own tokens.
  const bool together =
      r.attempts.empty() && unplaced.back() - unplaced.front() + 1 == unplaced.size() &&
      std::all_of(unplaced.begin(), unplaced.end(),
                  [&](std::uint32_t c) { return r.choices[c].delivered.empty(); });
  std::vector<std::vector<std::uint32_t>> groups;
  if (together) {
    groups.push_back(unplaced);
  } else {
    for (const auto c : unplaced) groups.push_back({c});
  }
  bool must_wait = false;
  for (const auto& g : groups) {
    switch (place_attempt(id, r, g, out)) {
      case fit::placed: break;
      case fit::wait: must_wait = true; break;
      case fit::never: {
        cancel_workers(id, r, out);
        const std::size_t need =
            blocks_needed(r, r.prompt.size() + r.choices[g.front()].delivered.size(), g.size());
        std::size_t largest = 0;
        for (const auto& [n, w] : decode_) largest = std::max(largest, w.kv_blocks);
        out.append(fail(id, error{errc::invalid_argument,
                                  fmt::format("the request needs {} KV blocks; the largest decode "
                                              "worker has {}",
                                              need, largest)}));
        return out;
      }
    }
  }
  for (auto& [number, a] : r.attempts) {
    if (a.heard || a.placed) continue;
    a.placed = now;
    if (r.silence_timer == 0 && config_.silence_timeout.count() > 0) {
      r.silence_timer = add_timer(id, timer_kind::silence, now + config_.silence_timeout, out);
    }
  }
  if (must_wait) wait(id, r, now, out);
  return out;
}

router_state::fit router_state::place_attempt(wire::request_id id, request& r,
                                              const std::vector<std::uint32_t>& choices,
                                              router_effects& out) {
  const std::uint32_t first = choices.front();
  const auto count = static_cast<std::uint32_t>(choices.size());
  const auto& delivered = r.choices[first].delivered;
  const std::size_t tokens = r.prompt.size() + delivered.size();
  const std::size_t blocks = blocks_needed(r, tokens, count);
  worker* d = pick(wire::role::decode, r.avoid, blocks);
  if (d == nullptr) {
    // Never, when every decode worker is too small for it; else wait for one.
    const bool fits_somewhere =
        decode_.empty() || std::any_of(decode_.begin(), decode_.end(), [&](const auto& w) {
          return w.second.kv_blocks == 0 || w.second.kv_blocks >= blocks;
        });
    if (!fits_somewhere) return fit::never;
    r.last_error = error{errc::unavailable, decode_rank_.empty()
                                                ? "no decode worker is alive"
                                                : "no decode worker has room for the request"};
    return fit::wait;
  }
  worker* p = nullptr;
  if (tokens > config_.prefill_on_decode_max_tokens) {
    p = pick(wire::role::prefill, r.avoid, 0);
    if (p == nullptr && config_.when_no_prefill == no_prefill_policy::wait) {
      r.last_error = error{errc::unavailable, "no prefill worker is alive"};
      return fit::wait;
    }
    if (p == nullptr) ++stats_.no_prefill_fallback;
  }
  ++(p == nullptr ? stats_.prefill_on_decode : stats_.disaggregated);
  const std::uint32_t number = ++r.last_attempt;
  attempt_state& a = r.attempts[number];
  a.choices = choices;
  a.decode = d->address.node;
  a.prefill = p == nullptr ? std::string{} : p->address.node;
  a.at = p == nullptr ? stage::decoding : stage::prefilling;
  a.blocks = blocks;
  adjust(wire::role::decode, *d, 1, static_cast<std::ptrdiff_t>(blocks));
  if (p != nullptr) adjust(wire::role::prefill, *p, 1, 0);
  a.window = static_cast<std::uint32_t>(tokens) + wire::initial_stream_window;
  wire::admit m;
  m.request = id;
  m.attempt = number;
  m.tokens.assign(r.prompt.begin(), r.prompt.end());
  m.tokens.insert(m.tokens.end(), delivered.begin(), delivered.end());
  m.prompt_length = static_cast<std::uint32_t>(r.prompt.size());
  m.max_tokens = r.max_tokens;
  m.params = r.params;
  m.writer = a.prefill;
  m.writer_incarnation = p == nullptr ? 0 : p->incarnation;
  m.choice = first;
  m.choices = count;
  out.send(d->address, std::move(m));
  return fit::placed;
}

void router_state::wait(wire::request_id id, request& r, time_point now, router_effects& out) {
  if (r.waiting) return;
  if (waiting_.size() >= config_.max_waiting) {
    ++stats_.overloaded;
    cancel_workers(id, r, out);
    out.append(
        fail(id, error{errc::overloaded,
                       fmt::format("{} requests already wait for a worker ({})", waiting_.size(),
                                   r.last_error ? r.last_error->message : "no capacity")}));
    return;
  }
  r.waiting = true;
  waiting_.push_back(id);
  if (r.wait_timer != 0) return;  // back in the queue: its max_wait runs on
  ++stats_.waited;
  r.wait_timer = add_timer(id, timer_kind::wait, now + config_.max_wait, out);
  out.log.push_back(fmt::format("request {} waits for a worker: {}", static_cast<std::uint64_t>(id),
                                r.last_error ? r.last_error->message : "no capacity"));
}

void router_state::settle(time_point now, router_effects& out) {
  if (!capacity_changed_ || waiting_.empty()) return;
  capacity_changed_ = false;
  auto queued = std::move(waiting_);
  waiting_.clear();
  for (const auto id : queued) {
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    it->second.waiting = false;
    // Placed, or back in the queue (in its turn: what still waits keeps its order).
    out.append(place(id, it->second, now));
    if (auto placed = requests_.find(id); placed != requests_.end() && !placed->second.waiting) {
      timers_.erase(placed->second.wait_timer);
      placed->second.wait_timer = 0;
    }
  }
}

wire::token_chunk router_state::chunk_of(request& r, std::uint32_t c, const wire::token_batch& m) {
  auto& choice = r.choices[c];
  wire::token_chunk chunk;
  chunk.choice = c;
  std::uint32_t position = m.first_position;
  for (std::size_t i = 0; i < m.tokens.size(); ++i) {
    const std::uint32_t t = m.tokens[i];
    const std::size_t expected = r.prompt.size() + choice.delivered.size();
    if (position++ != expected || choice.delivered.size() >= r.max_tokens) continue;  // a repeat
    const std::int32_t prev = choice.delivered.empty() ? r.prompt.back() : choice.delivered.back();
    if (chunk.tokens.empty()) chunk.first_position = static_cast<std::uint32_t>(expected);
    chunk.tokens.push_back(t);
    const auto piece = tok_.decode(prev, static_cast<std::int32_t>(t));
    chunk.text += engine::printable(piece);
    if (i < m.logprobs.size()) {
      const auto& lp = m.logprobs[i];
      wire::client_logprobs out{t, lp.logprob, piece, {}};
      for (const auto& alt : lp.top) {
        out.top.push_back({alt.token, alt.logprob,
                           alt.token < static_cast<std::uint32_t>(tok_.vocab_size())
                               ? tok_.decode(prev, static_cast<std::int32_t>(alt.token))
                               : std::string{}});
      }
      chunk.logprobs.push_back(std::move(out));
    }
    choice.delivered.push_back(static_cast<std::int32_t>(t));
    ++stats_.tokens;
  }
  return chunk;
}

router_effects router_state::on_tokens(const wire::actor_address& from, const wire::token_batch& m,
                                       bool client_has_room, time_point now) {
  router_effects out;
  auto [r, a] = current(m.request, m.attempt, from.node);
  if (r == nullptr) {
    // Not an attempt this router has there (any more): moved, ended, or admitted late from
    // a connection older than the cancels the router sent since. It ends, or it holds
    // its blocks waiting for a window that never comes.
    ++stats_.stale_messages;
    out.send(from, wire::cancel{m.request, "not an attempt of this router's", m.attempt});
    return out;
  }
  a->heard = now;
  if (!a->serves(m.choice) || r->choices[m.choice].done) {
    ++stats_.stale_messages;
    return out;
  }
  if (const auto next = r->prompt.size() + r->choices[m.choice].delivered.size();
      m.first_position > next) {
    // Tokens are sent in order on one connection: the batch before this one was lost.
    return migrate(m.request, *r,
                   error{errc::failed, fmt::format("{}: tokens from position {} arrived, {} "
                                                   "expected: a batch was lost",
                                                   from.node, m.first_position, next)},
                   migration_cause::lost, now);
  }
  if (a->at != stage::decoding) {  // the prefill's part of this attempt is over
    if (auto p = prefill_.find(a->prefill); p != prefill_.end()) {
      adjust(wire::role::prefill, p->second, -1, 0);
    }
    a->at = stage::decoding;
  }
  auto chunk = chunk_of(*r, m.choice, m);
  // A request of several choices says when each ends; one of a single choice, by finished.
  if (m.finish && r->choices.size() > 1) chunk.finish = *m.finish;
  if (!chunk.tokens.empty() || chunk.finish) out.events.push_back({m.request, std::move(chunk)});
  if (m.finish) {
    choice_done(m.request, *r, m.attempt, m.choice, *m.finish, out);
  } else if (client_has_room) {
    widen_window(m.request, *r, m.attempt, out);
  }
  settle(now, out);
  return out;
}

router_effects router_state::on_client_ready(wire::request_id id, time_point now) {
  router_effects out;
  auto it = requests_.find(id);
  if (it == requests_.end()) return out;
  std::vector<std::uint32_t> live;
  for (auto& [number, a] : it->second.attempts) {
    if (a.at != stage::decoding) continue;
    live.push_back(number);
    a.heard = now;  // its silence counts from the new window
  }
  for (const auto number : live) widen_window(id, it->second, number, out);
  return out;
}

void router_state::widen_window(wire::request_id id, request& r, std::uint32_t attempt,
                                router_effects& out) {
  auto& a = must_find(r.attempts, attempt, "a window of a live attempt");
  std::size_t delivered = std::numeric_limits<std::size_t>::max();
  for (const auto c : a.choices) {
    if (!r.choices[c].done) delivered = std::min(delivered, r.choices[c].delivered.size());
  }
  if (delivered == std::numeric_limits<std::size_t>::max()) return;
  const auto limit =
      static_cast<std::uint32_t>(r.prompt.size() + delivered) + config_.stream_window;
  if (limit < a.window + std::max<std::uint32_t>(1, config_.stream_window / 4)) return;
  auto d = decode_.find(a.decode);
  if (d == decode_.end()) return;
  a.window = limit;
  out.send(d->second.address, wire::stream_window{id, attempt, limit});
}

router_effects router_state::on_finish(const wire::actor_address& from, const wire::finish& m,
                                       time_point now) {
  router_effects out;
  auto [r, a] = current(m.request, m.attempt, from.node);
  if (r == nullptr || !a->serves(m.choice) || r->choices[m.choice].done) {
    ++stats_.stale_messages;
    return out;
  }
  if (r->choices.size() > 1) {
    wire::token_chunk end;
    end.choice = m.choice;
    end.first_position =
        static_cast<std::uint32_t>(r->prompt.size() + r->choices[m.choice].delivered.size());
    end.finish = m.reason;
    out.events.push_back({m.request, std::move(end)});
  }
  choice_done(m.request, *r, m.attempt, m.choice, m.reason, out);
  settle(now, out);
  return out;
}

void router_state::choice_done(wire::request_id id, request& r, std::uint32_t attempt,
                               std::uint32_t c, wire::finish_reason reason, router_effects& out) {
  r.choices[c].done = true;
  r.choices[c].reason = reason;
  const auto& a = must_find(r.attempts, attempt, "a choice ends in a live attempt");
  const bool attempt_over = std::all_of(a.choices.begin(), a.choices.end(),
                                        [&](std::uint32_t i) { return r.choices[i].done; });
  if (attempt_over) end_attempt(r, attempt);
  maybe_finished(id, r, out);
}

void router_state::maybe_finished(wire::request_id id, request& r, router_effects& out) {
  if (!std::all_of(r.choices.begin(), r.choices.end(), [](const auto& x) { return x.done; })) {
    return;
  }
  std::uint32_t generated = 0;
  for (const auto& x : r.choices) generated += static_cast<std::uint32_t>(x.delivered.size());
  cancel_workers(id, r, out);  // attempts still open (a claimed duplicate) end too
  out.events.push_back(
      {id, wire::finished{0, r.choices.front().reason, static_cast<std::uint32_t>(r.prompt.size()),
                          generated}});
  ++stats_.finished;
  finish_request(id);
}

router_effects router_state::on_abort(const wire::actor_address& from, const wire::abort_attempt& m,
                                      time_point now) {
  auto [r, a] = current(m.request, m.attempt, from.node);
  if (r == nullptr) {
    ++stats_.stale_messages;
    return {};
  }
  if (m.code == errc::invalid_argument) {
    router_effects out;
    cancel_workers(m.request, *r, out);
    out.append(fail(m.request, error{m.code, fmt::format("{}: {}", from.node, m.message)}));
    return out;
  }
  const bool draining = [&] {
    auto d = decode_.find(from.node);
    return d != decode_.end() && d->second.draining;
  }();
  if (m.code == errc::overloaded) r->avoid.insert(from.node);
  router_effects out;
  if (m.code == errc::disconnected) back_off(a->prefill, now, out);  // the job did not arrive
  // Other failures of a disaggregated attempt (a timed-out or failed prefill, as the decode
  // relays them) steer the retry away from its prefill node.
  if (m.code != errc::overloaded && !a->prefill.empty()) r->avoid.insert(a->prefill);
  // A job that never reached its prefill node (disconnected) is the fabric's failure, not
  // the worker's: like a death, it does not count against max_attempts.
  const auto cause = draining                       ? migration_cause::drain
                     : m.code == errc::disconnected ? migration_cause::actor_crash
                                                    : migration_cause::worker_failure;
  if (cause == migration_cause::worker_failure && ++r->failures >= config_.max_attempts) {
    cancel_workers(m.request, *r, out);
    out.append(fail(m.request, error{m.code, fmt::format("{} attempts failed; the last: {}: {}",
                                                         r->failures, from.node, m.message)}));
    return out;
  }
  out.append(migrate(m.request, *r, error{m.code, fmt::format("{}: {}", from.node, m.message)},
                     cause, now));
  return out;
}

router_effects router_state::migrate(wire::request_id id, request& r, error why,
                                     migration_cause cause, time_point now) {
  ++stats_.retries;
  ++stats_.migrations[static_cast<std::size_t>(cause)];
  router_effects out;
  out.log.push_back(fmt::format("request {} moves ({}): {}", static_cast<std::uint64_t>(id),
                                to_string(cause), why.message));
  r.last_error = std::move(why);
  cancel_workers(id, r, out);
  while (!r.attempts.empty()) end_attempt(r, r.attempts.begin()->first);
  out.append(place(id, r, now));
  settle(now, out);
  return out;
}

router_effects router_state::on_buried(time_point now) {
  std::vector<wire::request_id> hit;
  for (const auto& [id, r] : requests_) {
    if (!r.attempts.empty()) hit.push_back(id);
  }
  std::sort(hit.begin(), hit.end());  // the oldest first
  router_effects out;
  for (const auto id : hit) {
    out.append(migrate(id, must_find(requests_, id, "a request of a buried router"),
                       error{errc::unavailable, "this router was declared dead"},
                       migration_cause::node_death, now));
  }
  return out;
}

router_effects router_state::on_node_gone(const std::string& node, time_point now,
                                          migration_cause cause) {
  for (auto* table : {&prefill_, &decode_}) {
    auto it = table->find(node);
    if (it == table->end()) continue;
    auto& rank = table == &prefill_ ? prefill_rank_ : decode_rank_;
    if (!it->second.draining) rank.erase({it->second.score, it->second.tie, node});
    if (it->second.draining) cause = migration_cause::drain;
    if (table == &decode_) gone_decodes_.insert(node);
    table->erase(it);
  }
  router_effects out;
  // A resumed request stops waiting for an answer that will not come.
  std::vector<wire::request_id> claims;
  for (auto& [id, r] : requests_) {
    if (r.claiming.erase(node) > 0 && r.claiming.empty()) claims.push_back(id);
  }
  std::sort(claims.begin(), claims.end());
  for (const auto id : claims)
    end_claim(id, must_find(requests_, id, "a claiming request"), now, out);
  out.append(migrate_all_on(
      node,
      error{errc::unavailable,
            fmt::format("node {} {}", node,
                        cause == migration_cause::drain ? "drained and left" : "is gone")},
      cause, now));
  return out;
}

router_effects router_state::on_undeliverable(const std::string& node, time_point now) {
  router_effects out;
  back_off(node, now, out);
  out.append(migrate_all_on(
      node, error{errc::unavailable, fmt::format("node {} did not take a message", node)},
      migration_cause::actor_crash, now));
  return out;
}

void router_state::back_off(const std::string& node, time_point now, router_effects& out) {
  if (node.empty() || !unreachable_.insert(node).second) return;
  const std::uint64_t t = ++next_timer_;
  backoffs_.emplace(t, node);
  out.timers.push_back({t, now + config_.unreachable_backoff});
}

router_effects router_state::on_actor_restarted(const std::string& node, wire::role role,
                                                time_point now) {
  return migrate_all_on(
      node,
      error{errc::unavailable, fmt::format("the {} actor of {} restarted", node,
                                           role == wire::role::prefill ? "prefill" : "decode")},
      migration_cause::actor_crash, now, role);
}

router_effects router_state::migrate_all_on(const std::string& node, const error& why,
                                            migration_cause cause, time_point now,
                                            std::optional<wire::role> only) {
  router_effects out;
  std::vector<wire::request_id> hit;
  for (const auto& [id, r] : requests_) {
    for (const auto& [number, a] : r.attempts) {
      const bool on_prefill =
          a.prefill == node && a.at != stage::decoding && (!only || *only == wire::role::prefill);
      const bool on_decode = a.decode == node && (!only || *only == wire::role::decode);
      if (on_prefill || on_decode) {
        hit.push_back(id);
        break;
      }
    }
  }
  std::sort(hit.begin(), hit.end());  // the oldest first
  for (const wire::request_id id : hit) {
    request& r = must_find(requests_, id, "a request hit by a node's failure is open");
    r.avoid.insert(node);
    out.append(migrate(id, r, why, cause, now));
  }
  return out;
}

router_effects router_state::on_client_gone(wire::request_id id, time_point now) {
  router_effects out;
  auto it = requests_.find(id);
  if (it == requests_.end()) return out;
  cancel_workers(id, it->second, out);
  ++stats_.client_gone;
  finish_request(id);
  settle(now, out);
  return out;
}

router_effects router_state::on_timer(std::uint64_t id, time_point now) {
  router_effects out;
  if (auto b = backoffs_.find(id); b != backoffs_.end()) {
    unreachable_.erase(b->second);
    backoffs_.erase(b);
    capacity_changed_ = true;
    settle(now, out);
    return out;
  }
  auto t = timers_.find(id);
  if (t == timers_.end()) return out;
  const auto [rid, kind] = t->second;
  timers_.erase(t);
  auto it = requests_.find(rid);
  if (it == requests_.end()) return out;
  request& r = it->second;
  switch (kind) {
    case timer_kind::claim: end_claim(rid, r, now, out); break;
    case timer_kind::silence: {
      r.silence_timer = 0;
      std::string silent;
      auto next = now + config_.silence_timeout;
      for (const auto& [number, a] : r.attempts) {
        const auto since = a.heard ? a.heard : a.placed;
        if (!since) continue;
        // A decode node at the end of its window waits for the client: silent, not lost.
        std::size_t lowest = std::numeric_limits<std::size_t>::max();
        for (const auto c : a.choices) {
          if (!r.choices[c].done) {
            lowest = std::min(lowest, r.prompt.size() + r.choices[c].delivered.size());
          }
        }
        if (a.heard && lowest >= a.window) continue;
        if (*since + config_.silence_timeout <= now) {
          silent = a.decode;
        } else {
          next = std::min(next, *since + config_.silence_timeout);
        }
      }
      if (!silent.empty()) {
        out.append(migrate(
            rid, r,
            error{errc::timed_out, fmt::format("decode {} said nothing of its attempt for {} ms",
                                               silent, config_.silence_timeout.count())},
            migration_cause::lost, now));
      } else if (!r.attempts.empty()) {
        r.silence_timer = add_timer(rid, timer_kind::silence, next, out);
      }
      break;
    }
    case timer_kind::wait: {
      ++stats_.unavailable;
      cancel_workers(rid, r, out);
      out.append(
          fail(rid, error{errc::unavailable,
                          fmt::format("no worker could take the request within {} ms: {}",
                                      config_.max_wait.count(),
                                      r.last_error ? r.last_error->message : "no capacity")}));
      break;
    }
    case timer_kind::deadline: {
      cancel_workers(rid, r, out);
      ++stats_.timed_out;
      out.append(fail(rid, error{errc::timed_out, "the request's deadline passed"}));
      break;
    }
  }
  settle(now, out);
  return out;
}

void router_state::forget_all() {
  while (!requests_.empty()) finish_request(requests_.begin()->first);
}

void router_state::cancel_workers(wire::request_id id, const request& r, router_effects& out) {
  // Each attempt by its number: a retry placed on the same prefill node may reach it
  // (through its decode node) before this cancel does, and must not end with it.
  for (const auto& [number, a] : r.attempts) {
    if (auto d = decode_.find(a.decode); d != decode_.end()) {
      out.send(d->second.address, wire::cancel{id, "request ended", number});
    }
    if (a.at == stage::decoding) continue;
    if (auto p = prefill_.find(a.prefill); p != prefill_.end()) {
      out.send(p->second.address, wire::cancel{id, "request ended", number});
    }
  }
}

router_effects router_state::fail(wire::request_id id, error why) {
  router_effects out;
  ++stats_.failed;
  // A worker that went away is the service's unavailability to the client; disconnected
  // is kept for this router going away (which a client resumes elsewhere).
  if (why.code == errc::disconnected) why.code = errc::unavailable;
  out.log.push_back(
      fmt::format("request {} failed: {}", static_cast<std::uint64_t>(id), why.to_string()));
  out.events.push_back({id, wire::rejected{0, why.code, std::move(why.message)}});
  finish_request(id);
  return out;
}

void router_state::end_attempt(request& r, std::uint32_t attempt) {
  auto it = r.attempts.find(attempt);
  if (it == r.attempts.end()) return;
  const auto& a = it->second;
  if (auto d = decode_.find(a.decode); d != decode_.end()) {
    adjust(wire::role::decode, d->second, -1, -static_cast<std::ptrdiff_t>(a.blocks));
  }
  if (a.at != stage::decoding) {
    if (auto p = prefill_.find(a.prefill); p != prefill_.end()) {
      adjust(wire::role::prefill, p->second, -1, 0);
    }
  }
  r.attempts.erase(it);
  capacity_changed_ = true;
}

void router_state::finish_request(wire::request_id id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  auto& r = it->second;
  while (!r.attempts.empty()) end_attempt(r, r.attempts.begin()->first);
  timers_.erase(r.timer);
  timers_.erase(r.wait_timer);
  timers_.erase(r.claim_timer);
  timers_.erase(r.silence_timer);
  if (r.waiting) std::erase(waiting_, id);
  requests_.erase(it);
  capacity_changed_ = true;  // a place in flight and in the queue
}

std::pair<router_state::request*, router_state::attempt_state*> router_state::current(
    wire::request_id id, std::uint32_t attempt, const std::string& from) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return {nullptr, nullptr};
  auto a = it->second.attempts.find(attempt);
  if (a == it->second.attempts.end() || a->second.decode != from) return {nullptr, nullptr};
  return {&it->second, &a->second};
}

}  // namespace baton::actors
