#include "actors/prefill/prefill_state.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "actors/sampling.hpp"
#include "engine/kv_transfer.hpp"

namespace baton::actors {

prefill_state::prefill_state(engine::device& engine, wire::actor_address self, slice_writer& writer,
                             prefill_config config)
    : engine_(engine), self_(std::move(self)), writer_(writer), config_(config) {}

effects prefill_state::on_prefill(const wire::actor_address&, const wire::prefill& m) {
  effects out;
  if (cancelled_.contains({m.request, m.attempt})) {
    ++stats_.aborted;
    out.send(m.decode, wire::abort_attempt{m.request, m.attempt, errc::failed,
                                           "cancelled before its job arrived"});
    return out;
  }
  if (queue_.size() >= config_.max_queued) {
    ++stats_.refused;
    out.send(m.decode, wire::abort_attempt{
                           m.request, m.attempt, errc::overloaded,
                           fmt::format("prefill {}: {} jobs queued", self_.node, queue_.size())});
    return out;
  }
  queue_.push_back(m);
  return out;
}

effects prefill_state::run_next(time_point now) {
  effects out;
  if (queue_.empty()) return out;
  const std::uint64_t id = ++next_job_;
  job& j = jobs_[id];
  j.request = std::move(queue_.front());
  queue_.pop_front();
  ++stats_.jobs;
  const wire::prefill& m = j.request;
  const auto& layout = engine_.pool().layout();
  const std::size_t block_bytes = layout.block_floats() * sizeof(float);
  const std::size_t n_blocks = (m.tokens.size() + layout.block_tokens - 1) / layout.block_tokens;
  j.computed = true;  // from here on, maybe_finish() decides
  if (m.tokens.empty() || m.prompt_length > m.tokens.size() ||
      m.target.block_ids.size() != n_blocks || m.target.block_bytes != block_bytes) {
    j.failure = error{errc::invalid_argument,
                      fmt::format("prefill: {} tokens need {} blocks of {} bytes; the target "
                                  "has {} of {}",
                                  m.tokens.size(), n_blocks, block_bytes, m.target.block_ids.size(),
                                  m.target.block_bytes)};
    return maybe_finish(id);
  }
  auto sequence = engine_.add_sequence();
  if (!sequence) {
    j.failure = sequence.error();
    return maybe_finish(id);
  }
  j.sequence = *sequence;
  j.holds_sequence = true;
  std::vector<std::int32_t> tokens(m.tokens.begin(), m.tokens.end());
  std::vector<std::size_t> next_block(layout.n_layers, 0);
  // One pick per choice the attempt serves, each from the same prompt's logits.
  const auto prompt = std::span(tokens).first(m.prompt_length);
  const auto generated = std::span(tokens).subspan(m.prompt_length);
  std::vector<engine::sampler> picks;
  for (std::uint32_t c = m.choice; c < m.choice + m.choices; ++c) {
    picks.push_back(make_sampler(m.params, c, prompt, generated));
  }
  std::vector<engine::sampler*> pick_ptrs;
  for (auto& p : picks) pick_ptrs.push_back(&p);
  const engine::layer_hook on_layer = [&](std::size_t layer, std::size_t, std::size_t end) {
    if (config_.pipeline) post_layer(id, j, layer, end, next_block);
  };
  auto step = engine_.prefill(j.sequence, tokens, pick_ptrs, &on_layer);
  if (!step) {
    j.failure = step.error();
    return maybe_finish(id);
  }
  if (!config_.pipeline) {
    for (std::size_t layer = 0; layer < layout.n_layers; ++layer) {
      post_layer(id, j, layer, m.tokens.size(), next_block);
    }
  }
  for (std::size_t i = 0; i < picks.size(); ++i) {
    j.first_tokens.push_back(static_cast<std::uint32_t>(step->tokens[i]));
    if (m.params.logprobs) j.logprobs.push_back(logprobs_of(picks[i], step->tokens[i]));
  }
  j.checksums = engine::block_checksums(engine_, j.sequence);
  if (step->modelled.count() > 0) {
    // The device is modelled to compute for this long: done waits for on_timer.
    j.computed = false;
    busy_ = id;
    out.timers.push_back({id, now + std::chrono::duration_cast<clock::duration>(step->modelled)});
    return out;
  }
  return maybe_finish(id);
}

void prefill_state::post_layer(std::uint64_t id, job& j, std::size_t layer, std::size_t end,
                               std::vector<std::size_t>& next_block) {
  const wire::prefill& m = j.request;
  const auto& layout = engine_.pool().layout();
  const std::size_t block_bytes = layout.block_floats() * sizeof(float);
  const auto blocks = engine_.blocks(j.sequence);
  const std::size_t n = m.tokens.size();
  for (std::size_t& b = next_block[layer]; b < m.target.block_ids.size(); ++b) {
    if (std::min((b + 1) * layout.block_tokens, n) > end) break;  // not final yet
    slice_write w;
    w.tag = (id << 32) | (layer * m.target.block_ids.size() + b);
    w.node = m.target.node;
    w.source_offset =
        static_cast<std::uint64_t>(blocks[b]) * block_bytes + layer * layout.slice_bytes();
    w.target_fabric_node = m.target.fabric_node;
    w.target_key = m.target.region_key;
    w.target_offset = m.target.offset + std::uint64_t{m.target.block_ids[b]} * block_bytes +
                      layer * layout.slice_bytes();
    w.length = layout.slice_bytes();
    w.notify = slice_notify_value(m.request, m.attempt);
    ++j.outstanding;
    ++stats_.slices;
    stats_.bytes += w.length;
    writer_.post(w);
  }
}

effects prefill_state::on_write_done(std::uint64_t tag, const expected<void>& status) {
  const std::uint64_t id = tag >> 32;
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {};
  job& j = it->second;
  if (j.outstanding > 0) --j.outstanding;
  if (!status) {
    ++stats_.write_failures;
    // Not the request's fault (a lost grant, a dead link): the router may retry it.
    if (!j.failure) {
      j.failure =
          error{errc::failed, fmt::format("KV slice write: {}", status.error().to_string())};
    }
  }
  return maybe_finish(id);
}

effects prefill_state::maybe_finish(std::uint64_t id) {
  effects out;
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return out;
  job& j = it->second;
  if (!j.computed || j.outstanding > 0) return out;
  const wire::prefill& m = j.request;
  if (j.cancelled || j.failure) {
    ++stats_.aborted;
    const error e = j.failure ? *j.failure : error{errc::failed, "cancelled"};
    out.send(m.decode, wire::abort_attempt{m.request, m.attempt, e.code, e.message});
  } else {
    out.send(m.decode, wire::prefill_done{m.request, m.attempt, std::move(j.first_tokens),
                                          static_cast<std::uint32_t>(m.tokens.size()),
                                          std::move(j.checksums), std::move(j.logprobs)});
  }
  if (j.holds_sequence) engine_.remove_sequence(j.sequence);
  jobs_.erase(it);
  return out;
}

effects prefill_state::on_timer(std::uint64_t id) {
  if (id != busy_) return {};
  busy_ = 0;
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {};
  it->second.computed = true;
  return maybe_finish(id);
}

effects prefill_state::on_cancel(const wire::actor_address& from, const wire::cancel& m) {
  effects out;
  if (m.attempt != 0 && cancelled_.insert({m.request, m.attempt}).second) {
    cancel_order_.emplace_back(m.request, m.attempt);
    if (cancel_order_.size() > config_.remembered_cancels) {
      cancelled_.erase(cancel_order_.front());
      cancel_order_.pop_front();
    }
  }
  bool found = false;
  // A cancel naming an attempt ends only that one (a retry may be queued here already).
  const auto hit = [&](const wire::prefill& p) {
    return p.request == m.request && (m.attempt == 0 || p.attempt == m.attempt);
  };
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (!hit(*it)) {
      ++it;
      continue;
    }
    found = true;
    // Nothing was written: the abort ends the decode node's quarantine at once.
    ++stats_.aborted;
    out.send(it->decode, wire::abort_attempt{it->request, it->attempt, errc::failed, "cancelled"});
    it = queue_.erase(it);
  }
  for (auto& [id, j] : jobs_) {
    if (!hit(j.request)) continue;
    j.cancelled = true;
    found = true;
  }
  if (!found && m.attempt != 0 && from.actor == decode_name) {
    out.send(from, wire::abort_attempt{m.request, m.attempt, errc::failed,
                                       fmt::format("prefill {}: no job of this attempt here "
                                                   "(done, or it never arrived)",
                                                   self_.node)});
  }
  return out;
}

effects prefill_state::on_node_gone(const std::string& node) {
  std::erase_if(queue_, [&](const wire::prefill& p) { return p.decode.node == node; });
  for (auto& [id, j] : jobs_) {
    if (j.request.decode.node == node) j.cancelled = true;
  }
  return {};
}

}  // namespace baton::actors
