#pragma once

// The membership driver: runs a node's membership_state without CAF and without a
// thread of its own. Frames reach it on the thread that receives them (the endpoint's
// progress thread through fabric_io's filter, or a bridge for a peer not attached yet);
// its ticks come from the same progress thread through fabric_io's ticker, and its frames
// go straight to the frame sink. A probe is then sent and answered without waking a CAF
// worker, CAF's clock thread or a timer thread, and a probe answered in time costs its
// retry deadline no wake-up: the deadline simply moves before the progress thread
// sleeps again. Those wake-ups were most of what an idle node cost. It keeps the node's directory
// current and tells the bridge of a dead or departed node, which then delivers a down message to
// every local actor watching an actor there.

#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/membership.hpp"
#include "runtime/node_context.hpp"

namespace baton::runtime {

struct membership_hooks {
  /// This node's join was refused; the node should stop and report `reason`.
  std::function<void(const std::string& reason)> refused;
  /// The departure announced by leave() has spread; the driver stops ticking after this.
  std::function<void()> left;
  /// Asks for tick() once `at` has passed, replacing the time asked for before.
  std::function<void(time_point at)> tick_at;
  /// What is known of a member changed (its state, incarnation or draining).
  std::function<void(const wire::member& m)> changed;
};

class membership_driver {
 public:
  /// Hooks run with the driver's lock held, on the thread that called in: they must not
  /// call back into it. `ctx` must outlive the driver.
  membership_driver(node_context& ctx, wire::join self, std::vector<seed_node> seeds,
                    membership_config config, std::uint64_t random_seed, membership_hooks hooks,
                    std::shared_ptr<const cluster_secret> secret = nullptr);
  /// Joins through the seeds, or bootstraps as the first seed; once, after whatever calls
  /// tick() is in place.
  void start();
  /// From now on ticks and frames are ignored and nothing is sent. Call it before the
  /// sink goes.
  void stop();
  membership_driver(const membership_driver&) = delete;
  membership_driver& operator=(const membership_driver&) = delete;

  /// Does what is due (probes, retries, expiries), from any thread; then asks for the next tick.
  void tick();
  /// A decoded membership frame, from any thread.
  void on_frame(const wire::frame& f);
  /// An encoded frame, from any thread: takes it (true) if it is a membership frame that
  /// decodes and comes from a current incarnation; otherwise leaves it to the bridge,
  /// which counts what it rejects.
  [[nodiscard]] bool take(std::span<const std::byte> bytes);
  /// Announces that this node leaves; `left` runs once the news has spread.
  void leave();
  /// Announces that this node takes no new work (it stays a member until leave()).
  void drain();
  /// The transport could not reach `node` (membership_state::on_unreachable); any thread.
  void on_unreachable(const std::string& node, membership_state::unreachable_evidence why);
  /// The network reaches `node` again (membership_state::on_reachable); any thread.
  void on_reachable(const std::string& node);
  /// Joined the cluster (or formed it as the first seed).
  [[nodiscard]] bool joined() const;
  /// Every known node, this one included, sorted by name.
  [[nodiscard]] std::vector<wire::member> members() const;

 private:
  using clock = std::chrono::steady_clock;
  // Lock held for both.
  void apply(membership_output out, time_point not_before);
  /// Asks for a tick at the next deadline; never before `not_before`.
  void arm(time_point not_before);

  node_context& ctx_;
  membership_hooks hooks_;
  gauge& local_health_;
  counter& false_suspicions_;
  counter& deaths_;  ///< members this node saw become dead
  counter& joins_refused_;
  counter& auth_failures_;
  std::uint64_t auth_failures_seen_ = 0;
  std::uint64_t false_suspicions_seen_ = 0;
  mutable std::mutex mutex_;
  membership_state state_;
  wire::decoder decoder_;
  time_point armed_ = time_point::max();  // the tick asked for
  std::optional<time_point> left_at_;     // leaving: stop then
  bool stopped_ = false;
};

}  // namespace baton::runtime
