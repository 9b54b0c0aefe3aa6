#include "launcher/role_actors.hpp"

#include <algorithm>
#include <random>

#include <fmt/format.h>

#include "actors/decode/decode_actor.hpp"
#include "launcher/node_identity.hpp"

namespace baton::launcher {
namespace {

/// The crash fault of `role`, if role_options asks for one.
actors::crash_fault crash_of(const role_options& r, wire::role role) {
  if (!r.crash || r.crash->first != role) return {};
  return actors::crash_fault(r.crash->second);
}

runtime::child_spec decode_actor(const runtime::topology& t, const runtime::node_spec& spec,
                                 const serving_model& sm, const role_options& r) {
  actors::decode_options o;
  o.crash = crash_of(r, wire::role::decode);
  o.device = device_options_for(t, spec);
  o.device.engine.kv_blocks = spec.kv_blocks;
  o.device.engine.max_sequences = std::max<std::size_t>(64, 2 * spec.max_batch);
  o.config.max_batch = spec.max_batch;
  o.config.orphan_grace = std::chrono::milliseconds(t.timeouts.orphan_grace_ms);
  return {actors::decode_name,
          [&sm, o](runtime::node_context& ctx) { return actors::spawn_decode(ctx, sm.model, o); }};
}

runtime::child_spec prefill_actor(const runtime::topology& t, const runtime::node_spec& spec,
                                  const serving_model& sm, const role_options& r) {
  actors::prefill_options o;
  o.device = device_options_for(t, spec);
  o.device.engine.kv_blocks = spec.kv_blocks;
  o.faults = r.faults;
  o.faults.crash = crash_of(r, wire::role::prefill);
  o.config.pipeline = !r.kv_after_compute;
  o.config.max_in_flight = o.device.engine.max_sequences;
  return {actors::prefill_name,
          [&sm, o](runtime::node_context& ctx) { return actors::spawn_prefill(ctx, sm.model, o); }};
}

runtime::child_spec router_actor(const runtime::topology& t, const serving_model& sm,
                                 const role_options& r) {
  actors::router_options o;
  o.config.max_inflight = t.limits.max_queued_requests;
  o.config.default_timeout = std::chrono::milliseconds(t.timeouts.request_ms);
  o.config.prefill_on_decode_max_tokens = t.router.prefill_on_decode_max_tokens;
  o.config.when_no_prefill = t.router.when_no_prefill == "wait"
                                 ? actors::no_prefill_policy::wait
                                 : actors::no_prefill_policy::prefill_on_decode;
  o.config.max_attempts = t.router.max_attempts;
  o.config.max_waiting = t.router.max_waiting;
  o.config.max_wait = std::chrono::milliseconds(t.router.max_wait_ms);
  o.config.seed = std::random_device{}();
  o.seq_len = sm.model.config().seq_len;
  o.block_tokens = static_cast<std::size_t>(t.limits.kv_block_tokens);
  o.native_address = r.native_address;
  if (!r.http_address.empty()) {
    o.http_address =
        fmt::format("{}://{}", t.router.tls_certificate.empty() ? "http" : "https", r.http_address);
  }
  o.entry = r.router;
  o.crash = crash_of(r, wire::role::router);
  for (const auto& n : t.nodes) {
    if (n.has_role(wire::role::decode)) o.kv_blocks[n.name] = n.kv_blocks;
  }
  return {actors::router_name,
          [&sm, o](runtime::node_context& ctx) { return actors::spawn_router(ctx, sm.tok, o); }};
}

}  // namespace

expected<std::unique_ptr<serving_model>> load_serving_model(const runtime::topology& t) {
  auto m = engine::model::load(t.model.checkpoint.string());
  if (!m) return tl::unexpected(m.error());
  auto tok = engine::tokenizer::load(t.model.tokenizer.string(), m->config().vocab_size);
  if (!tok) return tl::unexpected(tok.error());
  return std::make_unique<serving_model>(serving_model{std::move(*m), std::move(*tok)});
}

std::vector<runtime::child_spec> role_actors(const runtime::topology& t,
                                             const runtime::node_spec& spec,
                                             const serving_model& sm, const role_options& r) {
  std::vector<runtime::child_spec> out;
  if (spec.has_role(wire::role::decode)) out.push_back(decode_actor(t, spec, sm, r));
  if (spec.has_role(wire::role::prefill)) out.push_back(prefill_actor(t, spec, sm, r));
  if (spec.has_role(wire::role::router)) out.push_back(router_actor(t, sm, r));
  return out;
}

}  // namespace baton::launcher
