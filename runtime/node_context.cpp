#include "runtime/node_context.hpp"

#include <fmt/format.h>
#include <caf/send.hpp>

#include "runtime/bridge.hpp"
#include "runtime/membership.hpp"
#include "runtime/messages.hpp"
#include "runtime/peer_link.hpp"

namespace baton::runtime {

node_context::node_context(std::string name, std::uint64_t incarnation, caf::actor_system& system,
                           frame_sink& sink, metrics_registry& metrics, bridge_config config)
    : name_(std::move(name)),
      incarnation_(incarnation),
      first_incarnation_(incarnation),
      system_(system),
      sink_(sink),
      metrics_(metrics),
      config_(config),
      take_decoder_(config.limits) {}

void node_context::publish(const std::string& name, caf::actor actor) {
  std::lock_guard lock(mutex_);
  actors_[name] = std::move(actor);
}

void node_context::unpublish(const std::string& name) {
  std::lock_guard lock(mutex_);
  actors_.erase(name);
}

caf::actor node_context::lookup(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = actors_.find(name);
  return it == actors_.end() ? caf::actor{} : it->second;
}

void node_context::update_member(const wire::member& m) {
  std::vector<caf::actor_addr> watchers;
  caf::actor moved;
  {
    std::lock_guard lock(mutex_);
    directory_[m.node] = m;
    watchers = member_watchers_;
    if (!m.fabric_address.empty()) moved = take_moved_bridge(m.node, m.fabric_address);
  }
  if (moved) retire(moved, m.node, m.fabric_address);
  for (const auto& w : watchers) {
    if (auto actor = caf::actor_cast<caf::actor>(w)) caf::anon_send(actor, member_update{m});
  }
}

void node_context::buried() {
  std::vector<caf::actor_addr> watchers;
  {
    std::lock_guard lock(mutex_);
    watchers = member_watchers_;
  }
  wire::member self;
  self.node = name_;
  for (const auto& w : watchers) {
    if (auto actor = caf::actor_cast<caf::actor>(w))
      caf::anon_send(actor, member_update{self, true});
  }
}

std::uint64_t node_context::incarnation_of(const std::string& node) const {
  std::lock_guard lock(mutex_);
  auto it = directory_.find(node);
  return it == directory_.end() ? 0 : it->second.incarnation;
}

std::vector<wire::member> node_context::watch_members(const caf::actor& watcher) {
  std::lock_guard lock(mutex_);
  std::erase_if(member_watchers_, [](const caf::actor_addr& w) { return !w; });
  member_watchers_.push_back(watcher.address());
  std::vector<wire::member> known;
  for (const auto& [name, m] : directory_) known.push_back(m);
  return known;
}

std::optional<wire::member> node_context::member(const std::string& node) const {
  std::lock_guard lock(mutex_);
  auto it = directory_.find(node);
  return it == directory_.end() ? std::nullopt : std::optional(it->second);
}

void node_context::set_membership(std::function<void(const wire::frame&)> handler) {
  auto shared = std::make_shared<const std::function<void(const wire::frame&)>>(std::move(handler));
  std::lock_guard lock(mutex_);
  membership_ = std::move(shared);
}

void node_context::to_membership(const wire::frame& f) const {
  std::shared_ptr<const std::function<void(const wire::frame&)>> handler;
  {
    std::lock_guard lock(mutex_);
    handler = membership_;
  }
  if (handler && *handler) (*handler)(f);
}

bool node_context::accepts(const std::string& node, std::uint64_t incarnation) const {
  std::lock_guard lock(mutex_);
  auto it = directory_.find(node);
  return accepts_incarnation(it == directory_.end() ? nullptr : &it->second, incarnation);
}

caf::actor node_context::bridge(const std::string& node, const std::string& fabric_address) {
  return entry(node, fabric_address).actor;
}

std::shared_ptr<peer_link> node_context::link(const std::string& node,
                                              const std::string& fabric_address) {
  return entry(node, fabric_address).link;
}

caf::actor node_context::take_moved_bridge(const std::string& node, const std::string& address) {
  auto it = bridges_.find(node);
  if (it == bridges_.end() || it->second.address == address) return {};
  auto moved = std::move(it->second.actor);
  bridges_.erase(it);
  return moved;
}

void node_context::retire(const caf::actor& bridge, const std::string& node,
                          const std::string& address) {
  caf::anon_send(
      bridge,
      node_gone{node, error{errc::disconnected,
                            fmt::format("node {} moved to {} (it restarted)", node, address)}});
}

node_context::bridge_entry node_context::entry(const std::string& node,
                                               const std::string& fabric_address) {
  std::string address = fabric_address;
  caf::actor moved;
  {
    std::lock_guard lock(mutex_);
    if (!address.empty()) moved = take_moved_bridge(node, address);
    if (auto it = bridges_.find(node); it != bridges_.end()) return it->second;
    if (address.empty()) {
      auto known = directory_.find(node);
      if (known == directory_.end()) return {};
      address = known->second.fabric_address;
    }
  }
  if (moved) retire(moved, node, address);
  // Spawn outside the lock; if two threads race, the first one to insert wins.
  auto fresh_link = std::make_shared<peer_link>(*this, node);
  auto fresh = spawn_bridge(*this, node, fresh_link);
  std::lock_guard lock(mutex_);
  auto [it, inserted] = bridges_.emplace(node, bridge_entry{fresh, fresh_link, address});
  if (inserted) {
    sink_.attach(node, address, fresh);
  } else {
    caf::anon_send_exit(fresh, caf::exit_reason::user_shutdown);
  }
  return it->second;
}

void node_context::set_taker(const std::string& actor, frame_taker taker) {
  std::lock_guard lock(mutex_);
  if (taker) {
    takers_[actor] = std::make_shared<const frame_taker>(std::move(taker));
  } else {
    takers_.erase(actor);
  }
  any_taker_.store(!takers_.empty());
}

bool node_context::take(std::span<const std::byte> bytes,
                        std::chrono::steady_clock::time_point received) {
  if (!any_taker_.load()) return false;
  std::optional<wire::frame> f;
  {
    std::lock_guard lock(take_mutex_);
    auto decoded = take_decoder_.decode(bytes);
    if (!decoded) return false;
    f.emplace(std::move(*decoded));
  }
  if (f->in_reply_to != 0 || !flow_controlled(f->body) || !for_this_process(f->target_incarnation))
    return false;
  std::shared_ptr<const frame_taker> taker;
  std::shared_ptr<peer_link> from;
  {
    std::lock_guard lock(mutex_);
    auto t = takers_.find(f->target.actor);
    if (t == takers_.end()) return false;
    auto b = bridges_.find(f->source.node);
    if (b == bridges_.end()) return false;
    auto known = directory_.find(f->source.node);
    if (!accepts_incarnation(known == directory_.end() ? nullptr : &known->second,
                             f->sender_incarnation))
      return false;
    taker = t->second;
    from = b->second.link;
  }
  if (!(*taker)(*f, received)) return false;
  from->heard_from(f->sender_incarnation);
  from->delivered();
  return true;
}

std::vector<caf::actor> node_context::shutdown() {
  std::map<std::string, caf::actor> actors, bridges;
  {
    std::lock_guard lock(mutex_);
    actors.swap(actors_);
    for (auto& [name, entry] : bridges_) bridges.emplace(name, entry.actor);
    bridges_.clear();
    takers_.clear();
    any_taker_.store(false);
  }
  std::vector<caf::actor> stopped;
  for (auto* table : {&actors, &bridges}) {
    for (auto& [name, a] : *table) {
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
      stopped.push_back(std::move(a));
    }
  }
  return stopped;
}

void node_context::set_work(const std::string& actor, std::size_t n) {
  std::lock_guard lock(mutex_);
  work_[actor] = n;
}

std::size_t node_context::work() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& [actor, n] : work_) total += n;
  return total;
}

void node_context::drop_bridge(const std::string& node) {
  std::lock_guard lock(mutex_);
  bridges_.erase(node);
}

}  // namespace baton::runtime
