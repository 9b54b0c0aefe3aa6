#include "actors/router/router_state.hpp"

#include "base/check.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <xxhash.h>

namespace baton::actors {

router_state::router_state(const engine::tokenizer& tok, std::int32_t seq_len,
                           std::size_t block_tokens, wire::actor_address self, router_config config)
    : tok_(tok),
      seq_len_(seq_len),
      block_tokens_(block_tokens),
      self_(std::move(self)),
      config_(config),
      seeds_(config.seed),
      // Request ids of different routers differ in their top 24 bits.
      next_request_((XXH3_64bits(self_.node.data(), self_.node.size()) & 0xffffffu) << 40) {}

std::size_t router_state::blocks_for(std::size_t positions) const {
  return (positions + block_tokens_ - 1) / block_tokens_;
}

std::size_t router_state::workers(wire::role role) const {
  return role == wire::role::prefill ? prefill_.size() : decode_.size();
}

std::size_t router_state::score(wire::role role, const worker& w) const {
  const auto preferred =
      role == wire::role::prefill ? wire::node_kind::trainium : wire::node_kind::wafer_scale;
  return w.load + (w.kind == preferred ? 0 : config_.kind_penalty);
}

void router_state::add_worker(const wire::actor_address& address, wire::role role,
                              wire::node_kind kind, std::size_t kv_blocks) {
  auto& table = role == wire::role::prefill ? prefill_ : decode_;
  auto& rank = role == wire::role::prefill ? prefill_rank_ : decode_rank_;
  if (table.contains(address.node)) return;
  worker w{address, kind, kv_blocks, 0, 0, 0};
  w.score = score(role, w);
  rank.emplace(w.score, address.node);
  table.emplace(address.node, std::move(w));
}

void router_state::adjust(wire::role role, worker& w, std::ptrdiff_t load, std::ptrdiff_t blocks) {
  auto& rank = role == wire::role::prefill ? prefill_rank_ : decode_rank_;
  rank.erase({w.score, w.address.node});
  w.load = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(w.load) + load);
  w.committed = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(w.committed) + blocks);
  w.score = score(role, w);
  rank.emplace(w.score, w.address.node);
}

router_state::worker* router_state::pick(wire::role role, const std::set<std::string>& avoid,
                                         std::size_t blocks) {
  auto& table = role == wire::role::prefill ? prefill_ : decode_;
  const auto& rank = role == wire::role::prefill ? prefill_rank_ : decode_rank_;
  // Nodes that failed this request are avoided while another one fits.
  for (const bool avoiding : {true, false}) {
    for (const auto& [s, node] : rank) {
      if (avoiding && avoid.contains(node)) continue;
      worker& w = must_find(table, node, "a ranked worker is in its role's table");
      if (role == wire::role::decode && w.kv_blocks > 0 && w.committed + blocks > w.kv_blocks) {
        continue;
      }
      return &w;
    }
  }
  return nullptr;
}

router_effects router_state::on_generate(const wire::generate_request& in, time_point now) {
  router_effects out;
  const wire::request_id id{++next_request_};
  auto refuse = [&](errc code, std::string message) {
    ++(code == errc::overloaded ? stats_.overloaded : stats_.invalid);
    out.events.push_back({id, wire::rejected{in.client_tag, code, std::move(message)}});
    return out;
  };
  if (requests_.size() >= config_.max_inflight) {
    return refuse(errc::overloaded,
                  fmt::format("router {}: {} requests in flight", self_.node, requests_.size()));
  }
  if (decode_.empty()) return refuse(errc::overloaded, "no decode worker is alive");
  if (in.params.temperature < 0 || !(in.params.top_p > 0 && in.params.top_p <= 1)) {
    return refuse(errc::invalid_argument,
                  fmt::format("temperature {} must be >= 0 and top_p {} in (0, 1]",
                              in.params.temperature, in.params.top_p));
  }
  if (in.n == 0 || in.n > wire::max_choices) {
    return refuse(errc::invalid_argument,
                  fmt::format("n {} must be in [1, {}]", in.n, wire::max_choices));
  }
  for (const auto& b : in.params.logit_bias) {
    if (b.token >= static_cast<std::uint32_t>(tok_.vocab_size())) {
      return refuse(errc::invalid_argument,
                    fmt::format("logit_bias names token {}; the vocabulary has {} tokens", b.token,
                                tok_.vocab_size()));
    }
  }
  request r;
  r.prompt = tok_.encode(in.prompt, true, false);
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
  // The prompt pieces llama2.c echoes before sampling.
  for (std::int32_t pos = 0; pos < std::min(steps, n_prompt - 1); ++pos) {
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
  r.timer = ++next_timer_;
  timers_.emplace(r.timer, id);
  const auto timeout =
      in.timeout_ms > 0 ? std::chrono::milliseconds(in.timeout_ms) : config_.default_timeout;
  out.timers.push_back({r.timer, now + timeout});
  auto [it, inserted] = requests_.emplace(id, std::move(r));
  auto placed = place(id, it->second);
  if (auto e_it = requests_.find(id); e_it != requests_.end() && !e_it->second.attempts.empty()) {
    const auto& first = e_it->second.attempts.begin()->second;
    acc.prefill_node = first.prefill;
    acc.decode_node = first.decode;
    acc.placement = first.prefill.empty() ? "prefill-on-decode" : "disaggregated";
    out.events.push_back({id, std::move(acc)});
  }
  out.append(std::move(placed));
  return out;
}

router_effects router_state::place(wire::request_id id, request& r) {
  router_effects out;
  std::vector<std::uint32_t> open;
  for (std::uint32_t c = 0; c < r.choices.size(); ++c) {
    if (!r.choices[c].done) open.push_back(c);
  }
  if (open.empty()) {  // everything was delivered before a failure
    std::uint32_t generated = 0;
    for (const auto& c : r.choices) generated += static_cast<std::uint32_t>(c.delivered.size());
    out.events.push_back(
        {id, wire::finished{0, r.choices.front().reason,
                            static_cast<std::uint32_t>(r.prompt.size()), generated}});
    ++stats_.finished;
    finish_request(id);
    return out;
  }
  if (r.rounds >= config_.max_attempts) {
    return fail(id, r.last_error.value_or(error{errc::failed, "no attempt left"}));
  }
  ++r.rounds;
  // Choices that have delivered nothing (the first round) share one attempt and the
  // prompt's KV; once they diverge, each resumes from its own tokens.
  const bool together =
      std::all_of(open.begin(), open.end(),
                  [&](std::uint32_t c) { return r.choices[c].delivered.empty(); }) &&
      open.back() - open.front() + 1 == open.size();
  if (together) {
    if (!place_attempt(id, r, open.front(), static_cast<std::uint32_t>(open.size()), out)) {
      return out;
    }
  } else {
    for (const std::uint32_t c : open) {
      if (!place_attempt(id, r, c, 1, out)) return out;
    }
  }
  return out;
}

bool router_state::place_attempt(wire::request_id id, request& r, std::uint32_t first,
                                 std::uint32_t count, router_effects& out) {
  const auto& delivered = r.choices[first].delivered;
  const std::size_t tokens = r.prompt.size() + delivered.size();
  const std::size_t remaining = r.max_tokens - delivered.size();
  const std::size_t one = blocks_for(tokens + remaining - 1);
  const std::size_t blocks = one + (count - 1) * (one - tokens / block_tokens_);
  worker* d = pick(wire::role::decode, r.avoid, blocks);
  if (d == nullptr) {
    cancel_workers(id, r, out);
    out.append(fail(id, error{errc::overloaded, "no decode worker has room for the request"}));
    return false;
  }
  worker* p = nullptr;
  if (tokens > config_.prefill_on_decode_max_tokens) {
    p = pick(wire::role::prefill, r.avoid, 0);
    if (p == nullptr && config_.when_no_prefill == no_prefill_policy::fail) {
      cancel_workers(id, r, out);
      out.append(fail(id, error{errc::overloaded, "no prefill worker is alive"}));
      return false;
    }
    if (p == nullptr) ++stats_.no_prefill_fallback;
  }
  ++(p == nullptr ? stats_.prefill_on_decode : stats_.disaggregated);
  const std::uint32_t number = ++r.last_attempt;
  attempt_state& a = r.attempts[number];
  a.first = first;
  a.count = count;
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
  m.choice = first;
  m.choices = count;
  out.send(d->address, std::move(m));
  return true;
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
                                       bool client_has_room) {
  router_effects out;
  auto [r, a] = current(m.request, m.attempt, from.node);
  if (r == nullptr || m.choice < a->first || m.choice >= a->first + a->count ||
      r->choices[m.choice].done) {
    ++stats_.stale_messages;
    return out;
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
  return out;
}

router_effects router_state::on_client_ready(wire::request_id id) {
  router_effects out;
  auto it = requests_.find(id);
  if (it == requests_.end()) return out;
  std::vector<std::uint32_t> live;
  for (const auto& [number, a] : it->second.attempts) {
    if (a.at == stage::decoding) live.push_back(number);
  }
  for (const auto number : live) widen_window(id, it->second, number, out);
  return out;
}

void router_state::widen_window(wire::request_id id, request& r, std::uint32_t attempt,
                                router_effects& out) {
  auto& a = must_find(r.attempts, attempt, "a window of a live attempt");
  std::size_t delivered = std::numeric_limits<std::size_t>::max();
  for (std::uint32_t c = a.first; c < a.first + a.count; ++c) {
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

router_effects router_state::on_finish(const wire::actor_address& from, const wire::finish& m) {
  router_effects out;
  auto [r, a] = current(m.request, m.attempt, from.node);
  if (r == nullptr || m.choice < a->first || m.choice >= a->first + a->count ||
      r->choices[m.choice].done) {
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
  return out;
}

void router_state::choice_done(wire::request_id id, request& r, std::uint32_t attempt,
                               std::uint32_t c, wire::finish_reason reason, router_effects& out) {
  r.choices[c].done = true;
  r.choices[c].reason = reason;
  const auto& a = must_find(r.attempts, attempt, "a choice ends in a live attempt");
  bool attempt_over = true;
  for (std::uint32_t i = a.first; i < a.first + a.count; ++i) {
    attempt_over = attempt_over && r.choices[i].done;
  }
  if (attempt_over) end_attempt(r, attempt);
  if (!std::all_of(r.choices.begin(), r.choices.end(), [](const auto& x) { return x.done; })) {
    return;
  }
  std::uint32_t generated = 0;
  for (const auto& x : r.choices) generated += static_cast<std::uint32_t>(x.delivered.size());
  out.events.push_back(
      {id, wire::finished{0, r.choices.front().reason, static_cast<std::uint32_t>(r.prompt.size()),
                          generated}});
  ++stats_.finished;
  finish_request(id);
}

router_effects router_state::on_abort(const wire::actor_address& from, const wire::abort_attempt& m,
                                      time_point) {
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
  if (m.code == errc::overloaded) r->avoid.insert(from.node);
  // Other failures of a disaggregated attempt (a timed-out or failed prefill, as the decode
  // relays them) steer the retry away from its prefill node.
  if (m.code != errc::overloaded && !a->prefill.empty()) r->avoid.insert(a->prefill);
  return retry(m.request, *r, error{m.code, fmt::format("{}: {}", from.node, m.message)});
}

router_effects router_state::retry(wire::request_id id, request& r, error why) {
  ++stats_.retries;
  r.last_error = std::move(why);
  router_effects out;
  cancel_workers(id, r, out);
  while (!r.attempts.empty()) end_attempt(r, r.attempts.begin()->first);
  out.append(place(id, r));
  return out;
}

router_effects router_state::on_node_gone(const std::string& node, time_point) {
  for (auto* table : {&prefill_, &decode_}) {
    auto it = table->find(node);
    if (it == table->end()) continue;
    auto& rank = table == &prefill_ ? prefill_rank_ : decode_rank_;
    rank.erase({it->second.score, node});
    table->erase(it);
  }
  return retry_all_on(node, error{errc::disconnected, fmt::format("node {} is gone", node)});
}

router_effects router_state::on_undeliverable(const std::string& node, time_point) {
  return retry_all_on(
      node, error{errc::disconnected, fmt::format("node {} did not take a message", node)});
}

router_effects router_state::retry_all_on(const std::string& node, const error& why) {
  router_effects out;
  std::vector<wire::request_id> hit;
  for (const auto& [id, r] : requests_) {
    for (const auto& [number, a] : r.attempts) {
      if ((a.prefill == node && a.at != stage::decoding) || a.decode == node) {
        hit.push_back(id);
        break;
      }
    }
  }
  for (const wire::request_id id : hit) {
    request& r = must_find(requests_, id, "a request hit by a node's death is open");
    r.avoid.insert(node);
    out.append(retry(id, r, why));
  }
  return out;
}

router_effects router_state::on_client_gone(wire::request_id id) {
  router_effects out;
  auto it = requests_.find(id);
  if (it == requests_.end()) return out;
  cancel_workers(id, it->second, out);
  ++stats_.client_gone;
  finish_request(id);
  return out;
}

router_effects router_state::on_timer(std::uint64_t id, time_point) {
  router_effects out;
  auto t = timers_.find(id);
  if (t == timers_.end()) return out;
  const wire::request_id rid = t->second;
  timers_.erase(t);
  auto it = requests_.find(rid);
  if (it == requests_.end()) return out;
  cancel_workers(rid, it->second, out);
  ++stats_.timed_out;
  out.append(fail(rid, error{errc::timed_out, "the request's deadline passed"}));
  return out;
}

void router_state::cancel_workers(wire::request_id id, const request& r, router_effects& out) {
  std::set<std::string> told;  // one cancel per node ends every attempt of the request there
  for (const auto& [number, a] : r.attempts) {
    if (auto d = decode_.find(a.decode); d != decode_.end() && told.insert(a.decode).second) {
      out.send(d->second.address, wire::cancel{id, "request ended"});
    }
    if (a.at == stage::decoding) continue;
    if (auto p = prefill_.find(a.prefill); p != prefill_.end() && told.insert(a.prefill).second) {
      out.send(p->second.address, wire::cancel{id, "request ended"});
    }
  }
}

router_effects router_state::fail(wire::request_id id, error why) {
  router_effects out;
  ++stats_.failed;
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
}

void router_state::finish_request(wire::request_id id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  while (!it->second.attempts.empty()) end_attempt(it->second, it->second.attempts.begin()->first);
  timers_.erase(it->second.timer);
  requests_.erase(it);
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
