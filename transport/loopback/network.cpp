#include "transport/loopback/network.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "transport/loopback/loopback_endpoint.hpp"
#include "transport/loopback/network_state.hpp"

namespace baton::transport::loopback {

bool network_state::connected(std::size_t a, std::size_t b) const {
  if (!nodes[a].alive || !nodes[b].alive) return false;
  return !cut.contains({std::min(a, b), std::max(a, b)});
}

std::optional<std::size_t> network_state::find(const address& where) const {
  for (std::size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].where == where) return i;
  return std::nullopt;
}

peer_id network_state::peer_of(std::size_t from, std::size_t to) {
  auto& peers = nodes[from].peers;
  auto it = std::find(peers.begin(), peers.end(), to);
  if (it != peers.end()) return static_cast<peer_id>(it - peers.begin());
  peers.push_back(to);
  return static_cast<peer_id>(peers.size() - 1);
}

void network_state::push(std::size_t node, event ev) {
  auto& n = nodes[node];
  if ((ev.kind == event_kind::message || ev.kind == event_kind::notify) &&
      n.events.size() >= n.limits.max_pending_events) {
    ++n.stats.dropped_events;
    return;
  }
  n.events.push_back(std::move(ev));
}

void network_state::pump(clock::time_point now) {
  bool delivered = false;
  while (!in_flight.empty() && in_flight.begin()->first.first <= now) {
    auto p = std::move(in_flight.begin()->second);
    in_flight.erase(in_flight.begin());
    if (!connected(p.from, p.to)) continue;  // lost; the initiator's deadline reports it
    deliver(p);
    delivered = true;
  }
  if (delivered) cv.notify_all();  // wake endpoints waiting on other threads
}

void network_state::deliver(packet& p) {
  auto& target = nodes[p.to];
  if (p.kind == packet_kind::message) {
    if (p.payload.size() > target.limits.max_message_bytes) {
      ++target.stats.bad_frames;  // as a fabric receiver truncates and drops it
      return;
    }
    ++target.stats.messages_received;
    event ev;
    ev.kind = event_kind::message;
    ev.peer = peer_of(p.to, p.from);
    ev.payload = std::move(p.payload);
    push(p.to, std::move(ev));
    return;
  }
  // RMA: find the target region by key; the initiator checked the grant when posting, but
  // the owner may have freed the region since.
  std::shared_ptr<region_memory> remote;
  for (auto& [id, mem] : target.regions)
    if (mem->key == p.remote_key) remote = mem;
  auto& initiator = nodes[p.from];
  auto it = initiator.pending.find(p.op);
  expected<void> status{};
  if (!remote || p.remote_offset + p.length > remote->bytes.size()) {
    status = fail(errc::failed, "rma: the target region is gone");
  } else if (p.kind == packet_kind::write) {
    std::memcpy(remote->bytes.data() + p.remote_offset, p.local->bytes.data() + p.local_offset,
                p.length);
    if (p.notify) {
      event ev;
      ev.kind = event_kind::notify;
      ev.peer = peer_of(p.to, p.from);
      ev.data = *p.notify;
      push(p.to, std::move(ev));
    }
  } else {
    std::memcpy(p.local->bytes.data() + p.local_offset, remote->bytes.data() + p.remote_offset,
                p.length);
  }
  if (it == initiator.pending.end()) return;  // already reported as expired
  event done;
  done.kind = it->second.kind;
  done.op = p.op;
  done.peer = it->second.peer;
  done.status = std::move(status);
  initiator.pending.erase(it);
  push(p.from, std::move(done));
}

network::network(std::uint64_t seed) : seed_(seed), state_(std::make_shared<network_state>()) {
  state_->rng.seed(seed);
}

network::~network() = default;

void network::use_manual_clock(clock::time_point start) {
  std::lock_guard lock(state_->mu);
  state_->manual_now = start;
}

void network::advance_to(clock::time_point now) {
  std::lock_guard lock(state_->mu);
  if (state_->manual_now && now > *state_->manual_now) state_->manual_now = now;
}

void network::set_faults(const fault_plan& plan) {
  std::lock_guard lock(state_->mu);
  state_->faults = plan;
}

void network::partition(const address& a, const address& b) {
  std::lock_guard lock(state_->mu);
  auto ia = state_->find(a);
  auto ib = state_->find(b);
  if (ia && ib) state_->cut.insert({std::min(*ia, *ib), std::max(*ia, *ib)});
}

void network::heal(const address& a, const address& b) {
  std::lock_guard lock(state_->mu);
  auto ia = state_->find(a);
  auto ib = state_->find(b);
  if (ia && ib) state_->cut.erase({std::min(*ia, *ib), std::max(*ia, *ib)});
}

void network::kill(const address& a) {
  std::lock_guard lock(state_->mu);
  if (auto i = state_->find(a)) {
    state_->nodes[*i].alive = false;
    state_->nodes[*i].events.clear();
  }
  state_->cv.notify_all();
}

expected<std::unique_ptr<endpoint>> network::make_endpoint(const endpoint_config& config) {
  std::lock_guard lock(state_->mu);
  if (config.bind.text.empty())
    return fail(errc::invalid_argument, "loopback: an endpoint needs a name");
  if (auto existing = state_->find(config.bind); existing && state_->nodes[*existing].alive)
    return fail(errc::invalid_argument,
                fmt::format("loopback: address '{}' is in use", config.bind.text));
  node_state n;
  n.where = config.bind;
  n.id = static_cast<node_id>(state_->rng() | 1);
  n.limits = config.limits;
  n.grants = grant_table(config.limits.max_grants_per_peer);
  state_->nodes.push_back(std::move(n));
  return std::unique_ptr<endpoint>(
      std::make_unique<loopback_endpoint>(state_, state_->nodes.size() - 1));
}

}  // namespace baton::transport::loopback
