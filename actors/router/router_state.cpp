#include "actors/router/router_state.hpp"

#include "base/check.hpp"

#include <algorithm>

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
  r.timer = ++next_timer_;
  timers_.emplace(r.timer, id);
  const auto timeout =
      in.timeout_ms > 0 ? std::chrono::milliseconds(in.timeout_ms) : config_.default_timeout;
  out.timers.push_back({r.timer, now + timeout});
  auto [it, inserted] = requests_.emplace(id, std::move(r));
  auto placed = start_attempt(id, it->second);
  if (auto e_it = requests_.find(id); e_it != requests_.end()) {
    const auto* e = &e_it->second;
    acc.prefill_node = e->prefill;
    acc.decode_node = e->decode;
    acc.placement = e->prefill.empty() ? "prefill-on-decode" : "disaggregated";
    out.events.push_back({id, std::move(acc)});
  }
  out.append(std::move(placed));
  return out;
}

router_effects router_state::start_attempt(wire::request_id id, request& r) {
  router_effects out;
  if (r.delivered.size() >= r.max_tokens) {  // everything was delivered before a failure
    const auto n = static_cast<std::uint32_t>(r.delivered.size());
    out.events.push_back({id, wire::finished{0, wire::finish_reason::length,
                                             static_cast<std::uint32_t>(r.prompt.size()), n}});
    ++stats_.finished;
    finish_request(id);
    return out;
  }
  if (r.attempt >= config_.max_attempts) {
    return fail(id, r.last_error.value_or(error{errc::failed, "no attempt left"}));
  }
  ++r.attempt;
  const std::size_t tokens = r.prompt.size() + r.delivered.size();
  const std::size_t remaining = r.max_tokens - r.delivered.size();
  r.blocks = blocks_for(tokens + remaining - 1);
  worker* d = pick(wire::role::decode, r.avoid, r.blocks);
  if (d == nullptr) {
    return fail(id, error{errc::overloaded, "no decode worker has room for the request"});
  }
  worker* p = nullptr;
  if (tokens > config_.prefill_on_decode_max_tokens) {
    p = pick(wire::role::prefill, r.avoid, 0);
    if (p == nullptr && config_.when_no_prefill == no_prefill_policy::fail) {
      return fail(id, error{errc::overloaded, "no prefill worker is alive"});
    }
    if (p == nullptr) ++stats_.no_prefill_fallback;
  }
  ++(p == nullptr ? stats_.prefill_on_decode : stats_.disaggregated);
  r.decode = d->address.node;
  r.prefill = p == nullptr ? std::string{} : p->address.node;
  r.at = p == nullptr ? stage::decoding : stage::prefilling;
  adjust(wire::role::decode, *d, 1, static_cast<std::ptrdiff_t>(r.blocks));
  if (p != nullptr) adjust(wire::role::prefill, *p, 1, 0);

  r.window = static_cast<std::uint32_t>(tokens) + wire::initial_stream_window;
  wire::admit m;
  m.request = id;
  m.attempt = r.attempt;
  m.tokens.assign(r.prompt.begin(), r.prompt.end());
  m.tokens.insert(m.tokens.end(), r.delivered.begin(), r.delivered.end());
  m.prompt_length = static_cast<std::uint32_t>(r.prompt.size());
  m.max_tokens = r.max_tokens;
  m.params = r.params;
  m.writer = r.prefill;
  out.send(d->address, std::move(m));
  return out;
}

router_effects router_state::on_tokens(const wire::actor_address& from, const wire::token_batch& m,
                                       bool client_has_room) {
  router_effects out;
  request* r = current(m.request, m.attempt);
  if (r == nullptr || from.node != r->decode) {
    ++stats_.stale_messages;
    return out;
  }
  if (r->at != stage::decoding) {  // the prefill's part of this attempt is over
    if (auto p = prefill_.find(r->prefill); p != prefill_.end()) {
      adjust(wire::role::prefill, p->second, -1, 0);
    }
    r->at = stage::decoding;
  }
  wire::token_chunk chunk;
  std::uint32_t position = m.first_position;
  for (const std::uint32_t t : m.tokens) {
    const std::size_t expected = r->prompt.size() + r->delivered.size();
    if (position++ != expected || r->delivered.size() >= r->max_tokens) continue;  // a repeat
    const std::int32_t prev = r->delivered.empty() ? r->prompt.back() : r->delivered.back();
    if (chunk.tokens.empty()) chunk.first_position = static_cast<std::uint32_t>(expected);
    chunk.tokens.push_back(t);
    chunk.text += engine::printable(tok_.decode(prev, static_cast<std::int32_t>(t)));
    r->delivered.push_back(static_cast<std::int32_t>(t));
    ++stats_.tokens;
  }
  if (!chunk.tokens.empty()) out.events.push_back({m.request, std::move(chunk)});
  if (m.finish) {
    complete(m.request, *r, *m.finish, out);
  } else if (client_has_room) {
    widen_window(m.request, *r, out);
  }
  return out;
}

router_effects router_state::on_client_ready(wire::request_id id) {
  router_effects out;
  auto it = requests_.find(id);
  if (it != requests_.end() && it->second.at == stage::decoding) widen_window(id, it->second, out);
  return out;
}

void router_state::widen_window(wire::request_id id, request& r, router_effects& out) {
  const auto delivered = static_cast<std::uint32_t>(r.prompt.size() + r.delivered.size());
  const std::uint32_t limit = delivered + config_.stream_window;
  if (limit < r.window + std::max<std::uint32_t>(1, config_.stream_window / 4)) return;
  auto d = decode_.find(r.decode);
  if (d == decode_.end()) return;
  r.window = limit;
  out.send(d->second.address, wire::stream_window{id, r.attempt, limit});
}

router_effects router_state::on_finish(const wire::actor_address& from, const wire::finish& m) {
  router_effects out;
  request* r = current(m.request, m.attempt);
  if (r == nullptr || from.node != r->decode) {
    ++stats_.stale_messages;
    return out;
  }
  complete(m.request, *r, m.reason, out);
  return out;
}

void router_state::complete(wire::request_id id, const request& r, wire::finish_reason reason,
                            router_effects& out) {
  out.events.push_back({id, wire::finished{0, reason, static_cast<std::uint32_t>(r.prompt.size()),
                                           static_cast<std::uint32_t>(r.delivered.size())}});
  ++stats_.finished;
  finish_request(id);
}

router_effects router_state::on_abort(const wire::actor_address& from, const wire::abort_attempt& m,
                                      time_point) {
  request* r = current(m.request, m.attempt);
  if (r == nullptr || from.node != r->decode) {
    ++stats_.stale_messages;
    return {};
  }
  if (m.code == errc::invalid_argument) {
    return fail(m.request, error{m.code, fmt::format("{}: {}", from.node, m.message)});
  }
  if (m.code == errc::overloaded) r->avoid.insert(from.node);
  // Other failures of a disaggregated attempt (a timed-out or failed prefill, as the decode
  // relays them) steer the retry away from its prefill node.
  if (m.code != errc::overloaded && !r->prefill.empty()) r->avoid.insert(r->prefill);
  router_effects out;
  cancel_workers(m.request, *r, out);
  out.append(retry(m.request, *r, error{m.code, fmt::format("{}: {}", from.node, m.message)}));
  return out;
}

router_effects router_state::retry(wire::request_id id, request& r, error why) {
  ++stats_.retries;
  r.last_error = std::move(why);
  end_attempt(r);
  return start_attempt(id, r);
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
    const bool prefill_hit = r.prefill == node && r.at != stage::decoding;
    if (prefill_hit || r.decode == node) hit.push_back(id);
  }
  for (const wire::request_id id : hit) {
    request& r = must_find(requests_, id, "a request hit by a node's death is open");
    r.avoid.insert(node);
    cancel_workers(id, r, out);
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
  if (auto d = decode_.find(r.decode); d != decode_.end()) {
    out.send(d->second.address, wire::cancel{id, "request ended"});
  }
  if (r.at != stage::decoding) {
    if (auto p = prefill_.find(r.prefill); p != prefill_.end()) {
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

void router_state::end_attempt(request& r) {
  if (auto d = decode_.find(r.decode); d != decode_.end()) {
    adjust(wire::role::decode, d->second, -1, -static_cast<std::ptrdiff_t>(r.blocks));
  }
  if (r.at != stage::decoding) {
    if (auto p = prefill_.find(r.prefill); p != prefill_.end()) {
      adjust(wire::role::prefill, p->second, -1, 0);
    }
  }
  r.decode.clear();
  r.prefill.clear();
  r.blocks = 0;
}

void router_state::finish_request(wire::request_id id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  end_attempt(it->second);
  timers_.erase(it->second.timer);
  requests_.erase(it);
}

router_state::request* router_state::current(wire::request_id id, std::uint32_t attempt) {
  auto it = requests_.find(id);
  if (it == requests_.end() || it->second.attempt != attempt) return nullptr;
  return &it->second;
}

}  // namespace baton::actors
