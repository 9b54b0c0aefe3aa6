#include "actors/prefill/prefill_actor.hpp"

#include <map>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "actors/shell.hpp"
#include "runtime/messages.hpp"

namespace baton::actors {
namespace {

/// A slice write held back by the delay_writes fault.
struct delayed_write {
  slice_write write;
};

}  // namespace
}  // namespace baton::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::actors::delayed_write)

namespace baton::actors {
namespace {

/// Posts slice writes on the node's transport; completions come back as rma_done.
class fabric_writer final : public slice_writer {
 public:
  fabric_writer(runtime::node_context& ctx, runtime::kv_fabric::region region,
                std::span<const std::byte> pool, caf::actor self, const prefill_options& o)
      : ctx_(ctx),
        region_(region),
        pool_offset_(static_cast<std::uint64_t>(pool.data() - region.bytes.data())),
        pool_bytes_(pool.size()),
        self_(std::move(self)),
        timeout_(o.write_timeout),
        faults_(o.faults) {}

  void post(const slice_write& w) override {
    if (faults_.delay_writes.count() > 0) {
      caf::delayed_anon_send(self_, faults_.delay_writes, delayed_write{w});
      return;
    }
    post_now(w);
  }

  void post_now(const slice_write& w) {
    std::uint64_t source = w.source_offset;
    if (faults_.corrupt_slice && *faults_.corrupt_slice == written_) {
      // Wrong bytes of the right length: the slice after this one, or the pool's first.
      source = source + 2 * w.length <= pool_bytes_ ? source + w.length : 0;
      spdlog::warn("prefill: fault injected: slice write {} sends the wrong bytes", written_);
    }
    ++written_;
    (void)ctx_.bridge(w.node);  // attaches the node if this is its first write
    ctx_.rma()->write(
        w.node, {region_.id, pool_offset_ + source, w.length},
        {transport::node_id{w.target_fabric_node}, w.target_key, w.target_offset, w.length},
        w.notify, transport::clock::now() + timeout_, self_, w.tag);
  }

 private:
  runtime::node_context& ctx_;
  runtime::kv_fabric::region region_;
  std::uint64_t pool_offset_;
  std::uint64_t pool_bytes_;
  caf::actor self_;
  std::chrono::milliseconds timeout_;
  prefill_faults faults_;
  std::uint64_t written_ = 0;
};

struct prefill_shell {
  runtime::node_context* ctx = nullptr;
  std::unique_ptr<engine::device> engine;
  std::unique_ptr<fabric_writer> writer;
  std::unique_ptr<prefill_state> state;
  bool step_queued = false;
  crash_fault crash;
  runtime::gauge* queue_depth = nullptr;
  std::optional<stat_counters> counters;
  // Timing of each job: compute, then the KV transfer still exposed after it.
  std::map<std::pair<wire::request_id, std::uint32_t>, clock::time_point> computed_at;
  runtime::histogram* compute_seconds = nullptr;
  runtime::histogram* exposed_seconds = nullptr;
  runtime::gauge* last_compute = nullptr;
  runtime::gauge* last_exposed = nullptr;
};
using prefill_actor = caf::stateful_actor<prefill_shell>;

/// Records the exposed transfer time of every job that `out` ends.
void time_transfers(prefill_shell& st, const effects& out) {
  for (const auto& s : out.sends) {
    std::pair<wire::request_id, std::uint32_t> key;
    if (const auto* d = std::get_if<wire::prefill_done>(&s.body)) {
      key = {d->request, d->attempt};
    } else if (const auto* a = std::get_if<wire::abort_attempt>(&s.body)) {
      key = {a->request, a->attempt};
    } else {
      continue;
    }
    auto it = st.computed_at.find(key);
    if (it == st.computed_at.end()) continue;
    const double exposed = std::chrono::duration<double>(clock::now() - it->second).count();
    st.exposed_seconds->observe(exposed);
    st.last_exposed->set(exposed);
    st.computed_at.erase(it);
  }
}

void after(prefill_actor* self, effects out) {
  auto& st = self->state;
  time_transfers(st, out);
  perform(*st.ctx, self, prefill_name, std::move(out));
  if (st.state->has_work() && !st.step_queued) {
    st.step_queued = true;
    self->send(self, step_atom::value);
  }
  st.queue_depth->set(static_cast<double>(st.state->queue_depth()));
  st.ctx->set_work(prefill_name, st.state->queue_depth() + st.state->writing());
  st.counters->publish();
}

void mirror_stats(prefill_shell& st) {
  const auto& s = st.state->stats();
  auto& c = *st.counters;
  c.mirror(s.jobs, "baton_prefill_jobs_total", "Prompts computed");
  c.mirror(s.refused, "baton_prefill_refused_total", "Jobs refused: queue full");
  c.mirror(s.aborted, "baton_prefill_aborted_total", "Jobs that ended in abort");
  c.mirror(s.slices, "baton_prefill_slices_total", "KV slices written by RMA");
  c.mirror(s.bytes, "baton_prefill_kv_bytes_total", "KV bytes written by RMA");
  c.mirror(s.write_failures, "baton_prefill_write_failures_total", "KV slice writes that failed");
}

/// The prefill's own series: queue depth, compute time and exposed transfer time.
void register_metrics(prefill_shell& st, runtime::metrics_registry& metrics) {
  st.counters.emplace(metrics);
  st.queue_depth =
      &metrics.get_gauge("baton_prefill_queue_depth", "Prefill jobs waiting for compute");
  const auto bounds = runtime::exponential_bounds(0.0005, 2, 16);
  st.compute_seconds = &metrics.get_histogram("baton_prefill_compute_seconds",
                                              "Prompt compute time per job", bounds);
  st.exposed_seconds = &metrics.get_histogram(
      "baton_prefill_kv_exposed_seconds",
      "From the end of a job's compute to every KV slice landed at the decode node", bounds);
  st.last_compute =
      &metrics.get_gauge("baton_prefill_last_compute_seconds", "Compute time of the latest job");
  st.last_exposed = &metrics.get_gauge("baton_prefill_last_kv_exposed_seconds",
                                       "Exposed KV transfer time of the latest job");
}

/// Runs the next queued job and times its compute (its exposed transfer time is taken when
/// its last slice lands: time_transfers).
void step(prefill_actor* self) {
  auto& s = self->state;
  s.step_queued = false;
  const auto* job = s.state->next_job();
  if (job == nullptr) return;
  const std::pair key{job->request, job->attempt};
  const auto start = clock::now();
  auto out = s.state->run_next(clock::now());
  const auto end = clock::now();
  const double compute = std::chrono::duration<double>(end - start).count();
  s.compute_seconds->observe(compute);
  s.last_compute->set(compute);
  s.computed_at[key] = end;
  after(self, std::move(out));
}

void on_inbound(prefill_actor* self, runtime::inbound& in) {
  auto& s = self->state;
  s.crash.tick(prefill_name);
  const auto& from = in.frame->source;
  if (const auto* job = std::get_if<wire::prefill>(&in.frame->body)) {
    after(self, s.state->on_prefill(from, *job));
  } else if (const auto* stop = std::get_if<wire::cancel>(&in.frame->body)) {
    after(self, s.state->on_cancel(from, *stop));
  } else {
    spdlog::warn("prefill: ignoring {} from {}/{}", wire::body_name(in.frame->body), from.node,
                 from.actor);
  }
}

caf::behavior prefill_behavior(prefill_actor* self, runtime::node_context* ctx,
                               const engine::model* model, prefill_options options) {
  install_failure_boundary(*ctx, self, prefill_name);
  auto& st = self->state;
  st.ctx = ctx;
  register_metrics(st, ctx->metrics());
  auto made = make_registered_device(*ctx, self, *model, options.device);
  if (!made) {
    spdlog::error("prefill: {}", made.error().message);
    self->quit(caf::make_error(caf::sec::runtime_error));
    return {};
  }
  st.engine = std::move(made->device);
  const auto region = made->region;
  st.writer =
      std::make_unique<fabric_writer>(*ctx, region, st.engine->pool().bytes(),
                                      caf::actor_cast<caf::actor>(self->address()), options);
  st.state = std::make_unique<prefill_state>(
      *st.engine, wire::actor_address{ctx->name(), prefill_name}, *st.writer, options.config);
  st.crash = options.faults.crash;
  mirror_stats(st);
  (void)ctx->watch_members(caf::actor_cast<caf::actor>(self->address()));
  spdlog::info("prefill: {} KV blocks of {} tokens (registered), engine {}",
               st.engine->pool().n_blocks(), st.engine->pool().layout().block_tokens,
               st.engine->describe());
  return {
      [self](runtime::inbound& in) { on_inbound(self, in); },
      [self](step_atom) { step(self); },
      [self](delayed_write& d) { self->state.writer->post_now(d.write); },
      [self](timer_atom, std::uint64_t id) { after(self, self->state.state->on_timer(id)); },
      [self](runtime::rma_done& d) {
        after(self, self->state.state->on_write_done(d.tag, d.status));
      },
      [self](runtime::member_update& u) {
        if (u.buried) return;  // its decode nodes ended the attempts it writes for
        const auto& m = u.member;
        if (m.state == wire::member_state::dead || m.state == wire::member_state::left) {
          after(self, self->state.state->on_node_gone(m.node));
        }
      },
      [](runtime::delivery_failure& f) {
        spdlog::warn("prefill: to {}/{}: {}", f.target.node, f.target.actor, f.reason.message);
      },
  };
}

}  // namespace

caf::actor spawn_prefill(runtime::node_context& ctx, const engine::model& model,
                         prefill_options options) {
  return ctx.system().spawn<caf::detached>(prefill_behavior, &ctx, &model, std::move(options));
}

}  // namespace baton::actors
