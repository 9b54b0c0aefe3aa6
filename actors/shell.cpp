#include "actors/shell.hpp"

#include <memory>

#include <caf/all.hpp>

#include "runtime/messages.hpp"
#include "runtime/remote_actor.hpp"

namespace baton::actors {

void perform(runtime::node_context& ctx, caf::event_based_actor* self, const std::string& name,
             effects out) {
  for (auto& s : out.sends) {
    if (s.to.node == ctx.name()) {
      if (auto local = ctx.lookup(s.to.actor)) {
        auto f = std::make_shared<wire::frame>();
        f->source = {ctx.name(), name};
        f->target = s.to;
        f->sender_incarnation = ctx.incarnation();
        f->message_id = ctx.next_message_id();
        f->body = std::move(s.body);
        self->send(local, runtime::inbound{std::move(f)});
      }
      continue;
    }
    runtime::remote_actor(ctx, std::move(s.to)).send(self, name, std::move(s.body));
  }
  const auto now = clock::now();
  for (const auto& t : out.timers) {
    const auto delay = t.at > now ? t.at - now : clock::duration::zero();
    self->delayed_send(self, delay, timer_atom::value, t.id);
  }
}

expected<registered_engine> make_registered_engine(runtime::node_context& ctx,
                                                   caf::event_based_actor* self,
                                                   const engine::model& model,
                                                   engine::engine_options options) {
  const auto& c = model.config();
  const engine::kv_layout layout{static_cast<std::size_t>(c.n_layers),
                                 static_cast<std::size_t>(c.kv_dim()),
                                 static_cast<std::size_t>(c.head_size()), options.block_tokens};
  if (options.kv_blocks == 0) {
    options.kv_blocks =
        options.max_sequences *
        ((static_cast<std::size_t>(c.seq_len) + layout.block_tokens - 1) / layout.block_tokens);
  }
  auto region = ctx.rma()->allocate_region(options.kv_blocks * layout.block_bytes());
  if (!region) return fail(region.error(), "KV pool: ");
  self->attach_functor([rma_owner = &ctx, id = region->id] {
    if (auto* rma = rma_owner->rma()) (void)rma->free_region(id);
  });
  options.kv_memory = region->bytes;
  auto engine = engine::cpu_engine::create(model, options);
  if (!engine) return tl::unexpected(engine.error());
  return registered_engine{*region, std::move(*engine)};
}

void stat_counters::set(const std::string& name, const std::string& help, std::uint64_t total,
                        runtime::metric_labels labels) {
  auto key = std::make_pair(name, labels);
  auto it = counters_.find(key);
  if (it == counters_.end()) {
    auto& c = metrics_.get_counter(name, help, std::move(labels));
    it = counters_.emplace(std::move(key), std::make_pair(&c, std::uint64_t{0})).first;
  }
  auto& [c, last] = it->second;
  if (total > last) c->add(total - last);
  last = total;
}

}  // namespace baton::actors
