#include "transport/loopback/loopback_endpoint.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "transport/loopback/network_state.hpp"

namespace baton::transport::loopback {

namespace {

error dead() {
  return error{errc::disconnected, "loopback: this endpoint was killed"};
}

bool is_done(event_kind kind) {
  return kind == event_kind::send_done || kind == event_kind::write_done ||
         kind == event_kind::read_done;
}

}  // namespace

loopback_endpoint::loopback_endpoint(std::shared_ptr<network_state> state, std::size_t index)
    : state_(std::move(state)), index_(index), limits_(state_->nodes[index].limits) {}

loopback_endpoint::~loopback_endpoint() {
  std::lock_guard lock(state_->mu);
  auto& n = self();
  n.alive = false;  // packets in flight keep their regions alive through shared_ptr
  n.regions.clear();
  n.events.clear();
  n.where.text += "#closed";  // frees the name for a restarted endpoint
}

node_state& loopback_endpoint::self() {
  return state_->nodes[index_];
}

address loopback_endpoint::local_address() const {
  std::lock_guard lock(state_->mu);
  return state_->nodes[index_].where;
}

node_id loopback_endpoint::local_node() const {
  std::lock_guard lock(state_->mu);
  return state_->nodes[index_].id;
}

expected<peer_id> loopback_endpoint::add_peer(const address& peer, deadline /*until*/) {
  std::lock_guard lock(state_->mu);
  if (!self().alive) return tl::unexpected(dead());
  auto target = state_->find(peer);
  if (!target)
    return fail(errc::not_found, fmt::format("loopback: no endpoint at '{}'", peer.text));
  if (!state_->connected(index_, *target))
    return fail(errc::disconnected, fmt::format("loopback: '{}' is unreachable", peer.text));
  if (self().peers.size() >= limits_.max_peers &&
      std::find(self().peers.begin(), self().peers.end(), *target) == self().peers.end())
    return fail(errc::overloaded, "add_peer: max_peers reached");
  state_->peer_of(*target, index_);  // the peer learns about us, as with a fabric hello
  return state_->peer_of(index_, *target);
}

expected<region_id> loopback_endpoint::allocate_region(std::size_t bytes) {
  if (bytes == 0) return fail(errc::invalid_argument, "allocate_region: zero bytes");
  std::lock_guard lock(state_->mu);
  auto& n = self();
  if (!n.alive) return tl::unexpected(dead());
  if (n.regions.size() >= limits_.max_regions)
    return fail(errc::overloaded, "allocate_region: max_regions reached");
  auto mem = std::make_shared<region_memory>();
  mem->bytes.resize(bytes);
  mem->key = state_->rng();
  auto id = static_cast<region_id>(n.next_region++);
  n.regions[id] = std::move(mem);
  return id;
}

std::span<std::byte> loopback_endpoint::region_bytes(region_id region) {
  std::lock_guard lock(state_->mu);
  auto it = self().regions.find(region);
  if (it == self().regions.end()) return {};
  return it->second->bytes;
}

expected<void> loopback_endpoint::free_region(region_id region) {
  std::lock_guard lock(state_->mu);
  auto& n = self();
  auto it = n.regions.find(region);
  if (it == n.regions.end()) return fail(errc::not_found, "free_region: unknown region");
  const auto key = it->second->key;
  for (auto& other : state_->nodes) other.grants.revoke(n.id, key, 0, ~std::uint64_t{0} / 2);
  n.regions.erase(it);
  return {};
}

expected<remote_slice> loopback_endpoint::grant(peer_id peer, const local_slice& slice) {
  std::lock_guard lock(state_->mu);
  auto& n = self();
  if (!n.alive) return tl::unexpected(dead());
  const auto index = static_cast<std::size_t>(peer);
  if (index >= n.peers.size()) return fail(errc::not_found, "grant: unknown peer");
  auto it = n.regions.find(slice.region);
  if (it == n.regions.end()) return fail(errc::not_found, "grant: unknown region");
  const auto size = it->second->bytes.size();
  if (slice.length == 0 || slice.offset > size || slice.length > size - slice.offset)
    return fail(errc::invalid_argument, "grant: slice outside the region");
  const auto target = n.peers[index];
  // Grants travel reliably and ahead of later messages: apply at once if reachable.
  if (state_->connected(index_, target)) {
    auto added = state_->nodes[target].grants.add(
        n.id, received_grant{it->second->key, 0, slice.offset, slice.length});
    if (!added) return tl::unexpected(added.error());
  }
  return remote_slice{n.id, it->second->key, slice.offset, slice.length};
}

expected<op_id> loopback_endpoint::send(peer_id to, std::span<const std::byte> bytes,
                                        deadline until) {
  if (bytes.size() > limits_.max_message_bytes)
    return fail(errc::invalid_argument, "send: message exceeds max_message_bytes");
  std::lock_guard lock(state_->mu);
  auto& n = self();
  if (!n.alive) return tl::unexpected(dead());
  const auto index = static_cast<std::size_t>(to);
  if (index >= n.peers.size()) return fail(errc::not_found, "send: unknown peer");
  if (n.inflight >= limits_.max_inflight_ops)
    return fail(errc::overloaded, "transport: too many operations in flight");
  auto& s = *state_;
  const auto target = n.peers[index];
  if (bytes.size() > s.nodes[target].limits.max_message_bytes)  // as fabric learns from hello
    return fail(errc::invalid_argument, "send: message exceeds the peer's max_message_bytes");
  const auto now = s.now();
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  auto delay = [&] {
    auto span = std::max<std::int64_t>(0, (s.faults.max_delay - s.faults.min_delay).count());
    std::uniform_int_distribution<std::int64_t> d(0, span);
    return s.faults.min_delay + std::chrono::microseconds(d(s.rng));
  };
  int copies = coin(s.rng) < s.faults.drop_probability ? 0 : 1;
  if (copies == 1 && coin(s.rng) < s.faults.duplicate_probability) copies = 2;
  for (int c = 0; c < copies; ++c) {
    packet p;
    p.kind = packet_kind::message;
    p.from = index_;
    p.to = target;
    p.payload.assign(bytes.begin(), bytes.end());
    p.seq = s.next_seq++;
    p.at = now + delay();
    auto& last = s.last_delivery[{index_, target}];
    if (coin(s.rng) >= s.faults.reorder_probability) p.at = std::max(p.at, last);
    last = std::max(last, p.at);
    s.in_flight.emplace(std::make_pair(p.at, p.seq), std::move(p));
  }
  // The transport took the bytes: like a fabric send, completion is not receipt.
  const auto id = static_cast<op_id>(s.next_op++);
  ++n.inflight;
  event done;
  done.kind = event_kind::send_done;
  done.op = id;
  done.peer = to;
  n.events.push_back(std::move(done));
  (void)until;
  s.cv.notify_all();
  return id;
}

expected<op_id> loopback_endpoint::rma(event_kind kind, const local_slice& local,
                                       const remote_slice& remote, deadline until,
                                       std::optional<std::uint64_t> notify) {
  std::lock_guard lock(state_->mu);
  auto& n = self();
  if (!n.alive) return tl::unexpected(dead());
  auto granted = n.grants.check(remote);
  if (!granted) {
    ++n.stats.descriptors_refused;
    return tl::unexpected(granted.error());
  }
  auto& s = *state_;
  std::optional<std::size_t> target;
  for (std::size_t i = 0; i < s.nodes.size(); ++i)
    if (s.nodes[i].id == remote.node) target = i;
  if (!target) {
    ++n.stats.descriptors_refused;
    return fail(errc::invalid_argument, "descriptor: node is not a peer");
  }
  auto it = n.regions.find(local.region);
  if (it == n.regions.end()) return fail(errc::not_found, "rma: unknown local region");
  if (local.length != remote.length)
    return fail(errc::invalid_argument, "rma: local and remote lengths differ");
  const auto size = it->second->bytes.size();
  if (local.offset > size || local.length > size - local.offset)
    return fail(errc::invalid_argument, "rma: local slice outside its region");
  if (n.inflight >= limits_.max_inflight_ops)
    return fail(errc::overloaded, "transport: too many operations in flight");
  packet p;
  p.kind = kind == event_kind::write_done ? packet_kind::write : packet_kind::read;
  p.from = index_;
  p.to = *target;
  p.local = it->second;
  p.local_offset = local.offset;
  p.remote_key = remote.key;
  p.remote_offset = remote.offset;
  p.length = local.length;
  p.notify = notify;
  p.op = static_cast<op_id>(s.next_op++);
  p.seq = s.next_seq++;
  std::uniform_int_distribution<std::int64_t> d(
      0, std::max<std::int64_t>(0, (s.faults.max_delay - s.faults.min_delay).count()));
  p.at = s.now() + s.faults.min_delay + std::chrono::microseconds(d(s.rng));
  const auto id = p.op;
  n.pending[id] = pending_op{kind, s.peer_of(index_, *target), until};
  ++n.inflight;
  s.in_flight.emplace(std::make_pair(p.at, p.seq), std::move(p));
  s.cv.notify_all();
  return id;
}

expected<op_id> loopback_endpoint::write(const local_slice& source, const remote_slice& target,
                                         deadline until, std::optional<std::uint64_t> notify) {
  return rma(event_kind::write_done, source, target, until, notify);
}

expected<op_id> loopback_endpoint::read(const local_slice& target, const remote_slice& source,
                                        deadline until) {
  return rma(event_kind::read_done, target, source, until, std::nullopt);
}

void loopback_endpoint::expire(clock::time_point now) {
  auto& n = self();
  for (auto it = n.pending.begin(); it != n.pending.end();) {
    if (it->second.until > now) {
      ++it;
      continue;
    }
    ++n.stats.ops_expired;
    event ev;
    ev.kind = it->second.kind;
    ev.op = it->first;
    ev.peer = it->second.peer;
    ev.status = fail(errc::timed_out, "deadline passed");
    n.events.push_back(std::move(ev));
    it = n.pending.erase(it);
  }
}

std::size_t loopback_endpoint::poll(std::span<event> out) {
  std::lock_guard lock(state_->mu);
  const auto now = state_->now();
  state_->pump(now);
  auto& n = self();
  if (!n.alive) return 0;
  expire(now);
  std::size_t count = 0;
  while (count < out.size() && !n.events.empty()) {
    out[count] = std::move(n.events.front());
    n.events.pop_front();
    if (is_done(out[count].kind)) --n.inflight;
    ++count;
  }
  return count;
}

bool loopback_endpoint::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  const auto until = state_->now() + timeout;
  while (true) {
    const auto now = state_->now();
    state_->pump(now);
    auto& n = self();
    if (!n.alive) return false;
    expire(now);
    if (!n.events.empty()) {
      n.interrupted = false;
      return true;
    }
    if (now >= until || n.interrupted || state_->manual_now) {
      n.interrupted = false;
      return false;  // a manual clock does not move while we wait
    }
    auto wake = until;
    if (!state_->in_flight.empty()) wake = std::min(wake, state_->in_flight.begin()->first.first);
    for (const auto& [id, op] : n.pending) wake = std::min(wake, op.until);
    state_->cv.wait_until(lock, wake);
  }
}

void loopback_endpoint::interrupt() {
  std::lock_guard lock(state_->mu);
  self().interrupted = true;
  state_->cv.notify_all();
}

endpoint_stats loopback_endpoint::stats() const {
  std::lock_guard lock(state_->mu);
  return state_->nodes[index_].stats;
}

}  // namespace baton::transport::loopback
