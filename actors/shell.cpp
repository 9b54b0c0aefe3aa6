#include "actors/shell.hpp"

#include <exception>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "runtime/messages.hpp"
#include "runtime/remote_actor.hpp"

namespace baton::actors {

bool send_local(runtime::node_context& ctx, const std::string& name, outgoing& s) {
  if (s.to.node != ctx.name()) return false;
  if (auto local = ctx.lookup(s.to.actor)) {
    auto f = std::make_shared<wire::frame>();
    f->source = {ctx.name(), name};
    f->target = s.to;
    f->sender_incarnation = ctx.incarnation();
    f->message_id = ctx.next_message_id();
    f->body = std::move(s.body);
    caf::anon_send(local, runtime::inbound{std::move(f), clock::now()});
  }
  return true;
}

void perform(runtime::node_context& ctx, caf::event_based_actor* self, const std::string& name,
             effects out) {
  for (auto& s : out.sends) {
    if (send_local(ctx, name, s)) continue;
    runtime::remote_actor(ctx, std::move(s.to)).send(self, name, std::move(s.body));
  }
  const auto now = clock::now();
  for (const auto& t : out.timers) {
    const auto delay = t.at > now ? t.at - now : clock::duration::zero();
    self->delayed_send(self, delay, timer_atom::value, t.id);
  }
}

void install_failure_boundary(runtime::node_context& ctx, caf::scheduled_actor* self,
                              const std::string& name) {
  auto& failures = ctx.metrics().get_counter(
      "baton_actor_failures_total", "Serving actors ended by a failure in a handler (restarted)",
      {{"actor", name}});
  self->set_exception_handler([&failures, name](caf::scheduled_actor*, std::exception_ptr& e) {
    std::string what = "an exception that is not a std::exception";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {  // NOLINT(bugprone-empty-catch): described above
    }
    failures.add();
    spdlog::error("{}: a handler failed: {}; the actor ends and its supervisor restarts it", name,
                  what);
    return caf::make_error(caf::exit_reason::unhandled_exception);
  });
}

crash_fault::crash_fault(std::uint64_t after)
    : after_(after), count_(std::make_shared<std::atomic<std::uint64_t>>(0)) {}

bool crash_fault::count() const {
  return count_ && count_->fetch_add(1) + 1 == after_;
}

void crash_fault::tick(const std::string& actor) const {
  if (count()) {
    throw std::runtime_error(
        fmt::format("fault injected: {} crashes at its message {} (--fault-crash)", actor, after_));
  }
}

void watch_actor(runtime::node_context& ctx, caf::event_based_actor* self, const std::string& as,
                 const wire::member& node, const std::string& name,
                 std::map<std::string, std::uint64_t>& watched) {
  const auto key = node.node + "/" + name;
  auto it = watched.find(key);
  if (it != watched.end() && it->second == node.incarnation) return;
  watched[key] = node.incarnation;
  runtime::remote_actor(ctx, {node.node, name}).monitor(self, as);
}

namespace {

/// A region of `bytes` for `self`'s pool, freed when `self` terminates.
expected<runtime::kv_fabric::region> pool_region(runtime::node_context& ctx,
                                                 caf::event_based_actor* self, std::size_t bytes) {
  auto region = ctx.rma()->allocate_region(bytes);
  if (!region) return fail(region.error(), "KV pool: ");
  self->attach_functor([rma_owner = &ctx, id = region->id] {
    if (auto* rma = rma_owner->rma()) (void)rma->free_region(id);
  });
  return region;
}

std::size_t pool_blocks(std::size_t kv_blocks, std::size_t max_sequences, std::size_t context,
                        std::size_t block_tokens) {
  return kv_blocks != 0 ? kv_blocks : max_sequences * ((context + block_tokens - 1) / block_tokens);
}

}  // namespace

expected<registered_device> make_registered_device(runtime::node_context& ctx,
                                                   caf::event_based_actor* self,
                                                   const engine::model& model,
                                                   device_options options) {
  const auto& c = model.config();
  auto& cpu = options.engine;
  if (options.device == "cpu") {
    const engine::kv_layout layout{static_cast<std::size_t>(c.n_layers),
                                   static_cast<std::size_t>(c.kv_dim()),
                                   static_cast<std::size_t>(c.head_size()), cpu.block_tokens};
    cpu.kv_blocks = pool_blocks(cpu.kv_blocks, cpu.max_sequences,
                                static_cast<std::size_t>(c.seq_len), cpu.block_tokens);
    auto region = pool_region(ctx, self, cpu.kv_blocks * layout.block_bytes());
    if (!region) return tl::unexpected(region.error());
    cpu.kv_memory = region->bytes;
    auto engine = engine::cpu_engine::create(model, cpu);
    if (!engine) return tl::unexpected(engine.error());
    return registered_device{*region, engine::make_device(std::move(*engine))};
  }
  auto& emulated = options.emulated;
  emulated.block_tokens = cpu.block_tokens;
  emulated.max_sequences = cpu.max_sequences;
  auto setup =
      engine::resolve_emulated(options.device, options.shape, c, options.checkpoint, emulated);
  if (!setup) return tl::unexpected(setup.error());
  auto layout = engine::emulated_kv_layout(setup->shape, setup->options);
  if (!layout) return tl::unexpected(layout.error());
  setup->options.kv_blocks =
      pool_blocks(cpu.kv_blocks, cpu.max_sequences, setup->options.max_context, cpu.block_tokens);
  auto region = pool_region(ctx, self, setup->options.kv_blocks * layout->block_bytes());
  if (!region) return tl::unexpected(region.error());
  setup->options.kv_memory = region->bytes;
  auto engine = engine::emulated_engine::create(setup->profile, setup->shape, setup->options);
  if (!engine) return tl::unexpected(engine.error());
  return registered_device{*region, engine::make_device(std::move(*engine))};
}

void stat_counters::mirror(const std::uint64_t& total, const std::string& name,
                           const std::string& help, runtime::metric_labels labels) {
  entries_.push_back({&total, &metrics_.get_counter(name, help, std::move(labels)), 0});
}

void stat_counters::publish() {
  for (auto& e : entries_) {
    if (*e.total > e.published) e.counter->add(*e.total - e.published);
    e.published = *e.total;
  }
}

}  // namespace baton::actors
