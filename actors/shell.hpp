#pragma once

// What the three serving actors share: carrying out a state class's effects (messages
// through remote_actor, timers as delayed self-messages) and the local atoms they use.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>

#include "actors/effects.hpp"
#include "engine/device.hpp"
#include "engine/model.hpp"
#include "runtime/node_context.hpp"

namespace baton::actors {

/// Run one more unit of work (a decode step, a prefill job).
using step_atom = caf::atom_constant<caf::atom("s_step")>;
/// A timer a state class asked for is due: (timer_atom, id).
using timer_atom = caf::atom_constant<caf::atom("s_timer")>;
/// Watch a node's actors again (their successor, after a crash): (rewatch_atom, node).
using rewatch_atom = caf::atom_constant<caf::atom("s_rewatch")>;
/// This node drains and its deadline passed: give up what is left, so that other nodes
/// take it over (decode: its attempts; router: its clients, who resume elsewhere).
using evict_atom = caf::atom_constant<caf::atom("s_evict")>;
/// How long after an actor's crash its successor is watched.
inline constexpr auto rewatch_delay = std::chrono::milliseconds(250);

/// Delivers `s` to the actor of this node it names (as an inbound frame from `name`), on
/// any thread; false if `s` is for another node. One that names no actor is dropped.
bool send_local(runtime::node_context& ctx, const std::string& name, outgoing& s);

/// Sends `out.sends` from `self` (published as `name`) and schedules `out.timers`.
/// Messages to an actor of this node skip the network.
void perform(runtime::node_context& ctx, caf::event_based_actor* self, const std::string& name,
             effects out);

/// The failure boundary of a serving actor's handlers: an exception that escapes one is
/// logged with the actor's name, counted in baton_actor_failures_total{actor=NAME}, and
/// ends the actor (exit reason unhandled_exception), which its supervisor restarts; the
/// node goes on.
void install_failure_boundary(runtime::node_context& ctx, caf::scheduled_actor* self,
                              const std::string& name);

/// A crash injected on purpose, for chaos tests (`baton node --fault-crash ROLE:AFTER`):
/// the actor's handler throws when it handles its `after`-th message, once per process
/// (the actor its supervisor restarts does not crash again). Copies share the count. A
/// default-constructed one never fires.
class crash_fault {
 public:
  crash_fault() = default;
  explicit crash_fault(std::uint64_t after);
  /// Counts one message of `actor`; throws std::runtime_error when the count is `after`.
  void tick(const std::string& actor) const;
  /// Counts one message; true when the count is `after` (the caller crashes the actor).
  [[nodiscard]] bool count() const;
  [[nodiscard]] bool armed() const { return count_ != nullptr; }

 private:
  std::uint64_t after_ = 0;
  std::shared_ptr<std::atomic<std::uint64_t>> count_;
};

/// Monitors the actor `name` of `node` from `self` (published as `as`), once per node
/// incarnation: `self` receives runtime::remote_down when it terminates (a crash its
/// supervisor restarts) or its node goes. `watched` remembers what is watched.
void watch_actor(runtime::node_context& ctx, caf::event_based_actor* self, const std::string& as,
                 const wire::member& node, const std::string& name,
                 std::map<std::string, std::uint64_t>& watched);

/// The engine a serving role computes with: the topology's `device`.
struct device_options {
  /// "cpu" (the reference engine on the model) or "emulated:PROFILE" (engine/device.hpp).
  std::string device = "cpu";
  /// block_tokens, kv_blocks and max_sequences size the pool of either device (kv_blocks
  /// 0: max_sequences full-length sequences); the rest is the CPU engine's.
  engine::engine_options engine;
  /// Emulated only: scale, time_scale, digest, max_context.
  engine::emulated_options emulated;
  /// Emulated only: a named shape of profiles.toml; empty: the checkpoint's own.
  std::string shape;
  std::string checkpoint;  ///< the model's path, named by a "custom" shape
};

/// A device whose KV pool lives in memory registered with the node's transport, so RMA
/// reads and writes it in place. The region is freed when the owning actor terminates
/// (a restarted actor gets a new region and key: late writes into the old one fail).
struct registered_device {
  runtime::kv_fabric::region region;
  std::unique_ptr<engine::device> device;
};

/// Allocates the pool's region and creates the device over it, for `self`. `model` is the
/// cluster's checkpoint (an emulated device takes its vocabulary and, by default, its
/// shape).
[[nodiscard]] expected<registered_device> make_registered_device(runtime::node_context& ctx,
                                                                 caf::event_based_actor* self,
                                                                 const engine::model& model,
                                                                 device_options options);

/// Mirrors running totals (fields of a state class's stats, which must outlive this) into
/// registry counters: publish() adds what each grew by since the last call. Cheap enough
/// for every message: no lookups, no allocation. Not thread-safe (one actor owns it).
class stat_counters {
 public:
  explicit stat_counters(runtime::metrics_registry& metrics) : metrics_(metrics) {}
  void mirror(const std::uint64_t& total, const std::string& name, const std::string& help,
              runtime::metric_labels labels = {});
  void publish();

 private:
  struct entry {
    const std::uint64_t* total;
    runtime::counter* counter;
    std::uint64_t published;
  };
  runtime::metrics_registry& metrics_;
  std::vector<entry> entries_;
};

}  // namespace baton::actors
