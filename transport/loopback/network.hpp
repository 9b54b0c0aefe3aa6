// transport/loopback/network.hpp
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "base/error.hpp"
#include "transport/endpoint.hpp"

namespace baton::transport::loopback {

/// Faults the network injects into messages (sends). RMA and grants are never dropped,
/// duplicated or reordered, only delayed; partitions and kills stop everything.
struct fault_plan {
  double drop_probability = 0.0;
  double duplicate_probability = 0.0;
  /// A reordered message may overtake earlier ones; otherwise delays keep FIFO order.
  double reorder_probability = 0.0;
  std::chrono::microseconds min_delay{0};
  std::chrono::microseconds max_delay{0};
};

struct network_state;

/// An in-process network of endpoints for tests and simulation. Every random choice
/// (node ids, region keys, faults) comes from one generator seeded at construction, so a
/// run is replayable from its seed given the same sequence of calls; print seed().
///
/// Threading: all methods, and the endpoints it makes, may be called from any thread;
/// one mutex serialises them. Delivery happens inside poll() and wait() of any endpoint
/// of the network (no threads of its own). Endpoints keep the network alive.
class network {
 public:
  explicit network(std::uint64_t seed);
  ~network();
  network(const network&) = delete;
  network& operator=(const network&) = delete;

  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }

  /// Replaces the steady clock with a simulated one that starts at `start` and moves only
  /// by advance_to(), so delays, deadlines and deliveries no longer depend on wall time
  /// or thread timing: with the seed, a run is then exactly replayable. With a manual
  /// clock, wait() never sleeps: it delivers what is due and returns.
  void use_manual_clock(clock::time_point start);
  /// Moves the manual clock forward to `now` (never back); deliveries happen at the next
  /// poll() or wait() of an endpoint.
  void advance_to(clock::time_point now);

  /// Applies from the next send on.
  void set_faults(const fault_plan& plan);

  /// Cuts both directions between two addresses until heal(); in-flight traffic between
  /// them is lost, operations time out at their deadlines.
  void partition(const address& a, const address& b);
  void heal(const address& a, const address& b);

  /// Kills the endpoint at `a`: traffic to and from it is lost, its own calls fail with
  /// errc::disconnected, its peers' operations time out.
  void kill(const address& a);

  /// Adds an endpoint with config.bind as its (unique) address.
  [[nodiscard]] expected<std::unique_ptr<endpoint>> make_endpoint(const endpoint_config& config);

 private:
  std::uint64_t seed_;
  std::shared_ptr<network_state> state_;
};

}  // namespace baton::transport::loopback
