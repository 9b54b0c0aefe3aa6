// The owner-thread half of the fabric endpoint: checks, bookkeeping, queueing.
#include "transport/fabric/fabric_endpoint.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_errno.h>

#include "base/check.hpp"

namespace baton::transport::fabric {

namespace {

std::uint64_t seed_of(const endpoint_config& config) {
  if (config.seed != 0) return config.seed;
  std::random_device device;
  return (std::uint64_t{device()} << 32) ^ device();
}

}  // namespace

fabric_endpoint::fabric_endpoint(const endpoint_config& config)
    : config_(config), grants_(config.limits.max_grants_per_peer), rng_(seed_of(config)) {
  node_ = static_cast<node_id>(rng_() | 1);
  nonce_ = fresh_nonce();  // also without a key: a refusal echoes it
  if (config_.frame_key) own_mac_.emplace(session_key(*config_.frame_key, node_, nonce_));
}

fabric_endpoint::~fabric_endpoint() {
  stop();
  ep_.reset();  // cancels whatever the provider still holds; then buffers may go
}

void fabric_endpoint::stop() {
  if (!progress_.joinable()) return;
  {
    std::lock_guard lock(submit_mu_);
    stop_.store(true);
  }
  wake();
  progress_.join();
  // The thread is gone: commands it did not take run here, and their callers (another
  // thread may be waiting in run_on_progress) are let go.
  std::deque<std::function<void()>> left;
  {
    std::lock_guard lock(submit_mu_);
    stopped_ = true;
    left.swap(commands_);
  }
  for (auto& command : left) command();
  {
    std::lock_guard lock(submit_mu_);
    commands_done_ = commands_queued_;
  }
  command_cv_.notify_all();
}

void fabric_endpoint::run_on_progress(std::function<void()> command) {
  std::unique_lock lock(submit_mu_);
  if (stopped_) {  // no progress thread is left to race with
    lock.unlock();
    command();
    return;
  }
  commands_.push_back(std::move(command));
  const auto ticket = ++commands_queued_;
  lock.unlock();
  wake();
  lock.lock();
  command_cv_.wait(lock, [&] { return commands_done_ >= ticket; });
}

void fabric_endpoint::submit(std::unique_ptr<op> operation) {
  {
    std::lock_guard lock(submit_mu_);
    submitted_.push_back(std::move(operation));
  }
  wake();
}

void fabric_endpoint::wake() {
  if (blocking_wait_) {
    // Only a sleeping progress thread needs the signal (a syscall); an awake one takes
    // the submission on its next turn.
    if (sleeping_.load()) fi_cq_signal(cq_.get());
  } else {
    wake_cv_.notify_one();
  }
}

expected<void> fabric_endpoint::admit() {
  if (counters_.expired_ops_held.load() >= config_.limits.max_expired_ops)
    return fail(errc::overloaded, "transport: too many expired operations held by the provider");
  if (inflight_.fetch_add(1) >= config_.limits.max_inflight_ops) {
    inflight_.fetch_sub(1);
    return fail(errc::overloaded,
                fmt::format("transport: {} operations in flight", config_.limits.max_inflight_ops));
  }
  return {};
}

void fabric_endpoint::post_hello(peer_id peer, bool answer) {
  // Caller holds state_mu_. Our hello carries our raw address so the peer can answer.
  auto& entry = peers_[static_cast<std::uint32_t>(peer)];
  entry.hello_sent = true;
  entry.failure.reset();
  auto operation = std::make_unique<op>();
  operation->kind = op_kind::internal;
  operation->peer = peer;
  operation->addr = entry.addr;
  operation->until = clock::now() + std::chrono::seconds(30);
  operation->frame = frame::encode(
      frame::kind::hello, node_,
      frame::encode_hello({config_.limits.max_message_bytes, answer, nonce_, raw_local_}));
  submit(std::move(operation));
}

void fabric_endpoint::hello_again_if_needed(peer_id peer) {
  auto& entry = peers_[static_cast<std::uint32_t>(peer)];
  if (!entry.rehello || !entry.node) return;
  entry.rehello = false;
  post_hello(peer, false);  // submitted before the caller's frame: the peer reads it first
}

expected<peer_id> fabric_endpoint::add_peer(const address& peer, deadline until) {
  auto raw = raw_address_of(peer);
  if (!raw) return tl::unexpected(raw.error());
  expected<peer_id> id = fail(errc::disconnected, "add_peer: the endpoint is closing");
  run_on_progress([&] {
    std::lock_guard lock(state_mu_);
    if (auto it = peer_by_raw_.find(raw_key(*raw)); it != peer_by_raw_.end()) {
      id = it->second;
      return;
    }
    if (peers_.size() >= config_.limits.max_peers) {
      id = fail(errc::overloaded, "add_peer: max_peers reached");
      return;
    }
    fi_addr_t addr = FI_ADDR_UNSPEC;
    if (fi_av_insert(av_.get(), raw->data(), 1, &addr, 0, nullptr) != 1) {
      id = fail(errc::invalid_argument, fmt::format("add_peer: cannot resolve '{}'", peer.text));
      return;
    }
    id = static_cast<peer_id>(peers_.size());
    peers_.push_back(
        peer_entry{.addr = addr, .raw = *raw, .node = std::nullopt, .failure = std::nullopt});
    peer_by_raw_[raw_key(*raw)] = *id;
    peer_by_addr_[addr] = *id;
  });
  if (!id) return id;
  // Warm the connection: exchange hellos now so no request pays for the set-up.
  std::unique_lock lock(state_mu_);
  auto& entry = peers_[static_cast<std::uint32_t>(*id)];
  // One hello at a time (add_peer is called again and again while a peer does not answer).
  if (!entry.node && entry.refused)
    return fail(*entry.refused, fmt::format("add_peer {}: ", peer.text));
  if (!entry.node && (!entry.hello_sent || entry.failure)) post_hello(*id, false);
  bool ready = state_cv_.wait_until(lock, until, [&] {
    auto& e = peers_[static_cast<std::uint32_t>(*id)];
    return e.node.has_value() || e.failure.has_value() || e.refused.has_value();
  });
  auto& e = peers_[static_cast<std::uint32_t>(*id)];
  if (e.node) return id;
  if (e.refused) return fail(*e.refused, fmt::format("add_peer {}: ", peer.text));
  if (e.failure) return fail(*e.failure, fmt::format("add_peer {}: ", peer.text));
  (void)ready;
  return fail(errc::timed_out,
              fmt::format("add_peer {}: no answer before the deadline", peer.text));
}

void fabric_endpoint::reset_peer(const address& peer) {
  auto raw = raw_address_of(peer);
  if (!raw) return;
  // The address leaves the AV (rxm closes its connection: FI_AV_REMOVE_CLEANUP, set by
  // the set-up) and comes back under a new fi_addr; the peer keeps its id and node.
  run_on_progress([&] {
    std::lock_guard lock(state_mu_);
    auto found = peer_by_raw_.find(raw_key(*raw));
    if (found == peer_by_raw_.end()) return;
    reset_connection(found->second);
  });
}

void fabric_endpoint::reset_connection(peer_id id) {
  auto& e = peers_[static_cast<std::uint32_t>(id)];
  fi_addr_t old = e.addr;
  if (fi_av_remove(av_.get(), &old, 1, 0) != 0) return;
  peer_by_addr_.erase(old);
  fi_addr_t fresh = FI_ADDR_UNSPEC;
  if (fi_av_insert(av_.get(), e.raw.data(), 1, &fresh, 0, nullptr) != 1) {
    e.failure = error{errc::disconnected, "reset_peer: the address could not be inserted again"};
    return;
  }
  e.addr = fresh;
  peer_by_addr_[fresh] = id;
  if (!e.node) e.hello_sent = false;  // one may have gone down with the old connection
  // Operations not yet handed to the provider go to the new connection (the old address
  // may name nothing now, or another peer later).
  for (op* o : pending_) {
    if (o->peer == id) o->addr = fresh;
  }
  std::lock_guard submit_lock(submit_mu_);
  for (auto& o : submitted_) {
    if (o->peer == id) o->addr = fresh;
  }
}

expected<region_id> fabric_endpoint::allocate_region(std::size_t bytes) {
  if (bytes == 0) return fail(errc::invalid_argument, "allocate_region: zero bytes");
  {
    std::lock_guard lock(state_mu_);
    if (regions_.size() >= config_.limits.max_regions)
      return fail(errc::overloaded, "allocate_region: max_regions reached");
  }
  auto mem = std::make_shared<region>();
  // Regions of 2 MiB and more get huge pages where the kernel offers them (fewer pages to
  // pin and translate for every RMA); smaller ones are page-aligned.
  constexpr std::size_t huge_page = 2u << 20;
  const std::size_t align = bytes >= huge_page ? huge_page : 4096;
  const std::size_t rounded = (bytes + align - 1) / align * align;
  mem->memory.reset(static_cast<std::byte*>(std::aligned_alloc(align, rounded)));
  if (!mem->memory) return fail(errc::overloaded, "allocate_region: out of memory");
  if (align == huge_page) (void)::madvise(mem->memory.get(), rounded, MADV_HUGEPAGE);
  mem->bytes = bytes;
  expected<region_id> id = fail(errc::failed, "allocate_region: not run");
  run_on_progress([&] {
    auto mr =
        register_memory(*domain_, mr_endpoint_ ? ep_.get() : nullptr, mem->memory.get(), bytes,
                        FI_SEND | FI_RECV | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE,
                        [this] { return next_key(); });
    if (!mr) {
      id = tl::unexpected(mr.error());
      return;
    }
    mem->mr = std::move(*mr);
    mem->desc = fi_mr_desc(mem->mr.get());
    mem->key = fi_mr_key(mem->mr.get());
    std::lock_guard lock(state_mu_);
    id = static_cast<region_id>(next_region_++);
    regions_[*id] = mem;
  });
  if (!id) {
    // The registration must be closed on the progress thread (FI_THREAD_DOMAIN).
    run_on_progress([&] { mem.reset(); });
  }
  return id;
}

std::span<std::byte> fabric_endpoint::region_bytes(region_id region) {
  std::lock_guard lock(state_mu_);
  auto it = regions_.find(region);
  if (it == regions_.end()) return {};
  return {it->second->memory.get(), it->second->bytes};
}

expected<void> fabric_endpoint::free_region(region_id region) {
  std::shared_ptr<struct region> mem;
  {
    std::lock_guard lock(state_mu_);
    auto it = regions_.find(region);
    if (it == regions_.end()) return fail(errc::not_found, "free_region: unknown region");
    mem = std::move(it->second);
    regions_.erase(it);
    for (const auto& [peer, slice] : mem->granted) {
      auto payload = frame::encode_revoke({mem->key, slice.offset, slice.length});
      auto operation = std::make_unique<op>();
      operation->kind = op_kind::internal;
      operation->peer = peer;
      operation->addr = peers_[static_cast<std::uint32_t>(peer)].addr;
      operation->until = clock::now() + std::chrono::seconds(30);
      operation->frame = frame::encode(frame::kind::revoke, node_, payload);
      submit(std::move(operation));
    }
  }
  // Drop our reference on the progress thread: if it is the last, fi_close(mr) runs there.
  run_on_progress([&] { mem.reset(); });
  return {};
}

expected<remote_slice> fabric_endpoint::grant(peer_id peer, const local_slice& slice) {
  std::lock_guard lock(state_mu_);
  const auto index = static_cast<std::uint32_t>(peer);
  if (index >= peers_.size()) return fail(errc::not_found, "grant: unknown peer");
  auto it = regions_.find(slice.region);
  if (it == regions_.end()) return fail(errc::not_found, "grant: unknown region");
  auto& mem = *it->second;
  if (slice.length == 0 || slice.offset > mem.bytes || slice.length > mem.bytes - slice.offset)
    return fail(errc::invalid_argument, "grant: slice outside the region");
  mem.granted.emplace_back(peer, slice);
  hello_again_if_needed(peer);
  received_grant g{mem.key, virt_addr_ ? reinterpret_cast<std::uint64_t>(mem.memory.get()) : 0,
                   slice.offset, slice.length};
  auto operation = std::make_unique<op>();
  operation->kind = op_kind::internal;
  operation->peer = peer;
  operation->addr = peers_[index].addr;
  operation->until = clock::now() + std::chrono::seconds(30);
  operation->frame = frame::encode(frame::kind::grant, node_, frame::encode_grant(g));
  submit(std::move(operation));
  return remote_slice{node_, mem.key, slice.offset, slice.length};
}

expected<op_id> fabric_endpoint::send(peer_id to, std::span<const std::byte> bytes,
                                      deadline until) {
  if (bytes.size() > config_.limits.max_message_bytes)
    return fail(errc::invalid_argument,
                fmt::format("send: {} bytes exceeds max_message_bytes {}", bytes.size(),
                            config_.limits.max_message_bytes));
  fi_addr_t addr = FI_ADDR_UNSPEC;
  {
    std::lock_guard lock(state_mu_);
    const auto index = static_cast<std::uint32_t>(to);
    if (index >= peers_.size()) return fail(errc::not_found, "send: unknown peer");
    addr = peers_[index].addr;
    if (!peers_[index].node)
      return fail(errc::disconnected, "send: the peer has not answered our hello yet");
    hello_again_if_needed(to);
    // The peer's receive buffers are this big; shm stalls on a larger message.
    if (bytes.size() > peers_[index].max_message_bytes)
      return fail(errc::invalid_argument,
                  fmt::format("send: {} bytes exceeds the peer's max_message_bytes {}",
                              bytes.size(), peers_[index].max_message_bytes));
  }
  if (auto ok = admit(); !ok) return tl::unexpected(ok.error());
  auto operation = std::make_unique<op>();
  operation->id = static_cast<op_id>(next_op_.fetch_add(1));
  operation->kind = op_kind::send;
  operation->peer = to;
  operation->addr = addr;
  operation->until = until;
  operation->frame = frame::encode(frame::kind::message, node_, bytes);
  const auto id = operation->id;
  submit(std::move(operation));
  return id;
}

expected<std::unique_ptr<op>> fabric_endpoint::make_rma(op_kind kind, const local_slice& local,
                                                        const remote_slice& remote,
                                                        deadline until) {
  std::lock_guard lock(state_mu_);
  auto refuse = [&](error e) -> expected<std::unique_ptr<op>> {
    counters_.descriptors_refused.fetch_add(1);
    return tl::unexpected(std::move(e));
  };
  auto granted = grants_.check(remote);
  if (!granted) return refuse(granted.error());
  auto peer = peer_by_node_.find(remote.node);
  if (peer == peer_by_node_.end())
    return refuse(error{errc::invalid_argument, "descriptor: node is not a peer"});
  auto it = regions_.find(local.region);
  if (it == regions_.end()) return fail(errc::not_found, "rma: unknown local region");
  auto& mem = it->second;
  if (local.length != remote.length)
    return fail(errc::invalid_argument, "rma: local and remote lengths differ");
  if (local.length > config_.limits.max_rma_bytes)
    return fail(errc::invalid_argument, "rma: longer than max_rma_bytes");
  if (local.offset > mem->bytes || local.length > mem->bytes - local.offset)
    return fail(errc::invalid_argument, "rma: local slice outside its region");
  auto operation = std::make_unique<op>();
  operation->kind = kind;
  operation->peer = peer->second;
  operation->addr = peers_[static_cast<std::uint32_t>(peer->second)].addr;
  operation->until = until;
  operation->mem = mem;
  operation->local = mem->memory.get() + local.offset;
  operation->length = local.length;
  operation->remote_addr = granted->base + remote.offset;
  operation->remote_key = remote.key;
  return operation;
}

expected<op_id> fabric_endpoint::write(const local_slice& source, const remote_slice& target,
                                       deadline until, std::optional<std::uint64_t> notify) {
  auto operation = make_rma(op_kind::write, source, target, until);
  if (!operation) return tl::unexpected(operation.error());
  if (auto ok = admit(); !ok) return tl::unexpected(ok.error());
  (*operation)->notify = notify;
  (*operation)->id = static_cast<op_id>(next_op_.fetch_add(1));
  const auto id = (*operation)->id;
  submit(std::move(*operation));
  return id;
}

expected<op_id> fabric_endpoint::read(const local_slice& target, const remote_slice& source,
                                      deadline until) {
  auto operation = make_rma(op_kind::read, target, source, until);
  if (!operation) return tl::unexpected(operation.error());
  if (auto ok = admit(); !ok) return tl::unexpected(ok.error());
  (*operation)->id = static_cast<op_id>(next_op_.fetch_add(1));
  const auto id = (*operation)->id;
  submit(std::move(*operation));
  return id;
}

std::size_t fabric_endpoint::poll(std::span<event> out) {
  std::lock_guard lock(events_mu_);
  std::size_t n = 0;
  while (n < out.size() && !events_.empty()) {
    out[n] = std::move(events_.front());
    events_.pop_front();
    const auto kind = out[n].kind;
    if (kind == event_kind::send_done || kind == event_kind::write_done ||
        kind == event_kind::read_done)
      inflight_.fetch_sub(1);
    ++n;
  }
  return n;
}

bool fabric_endpoint::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(events_mu_);
  events_cv_.wait_for(lock, timeout, [&] { return !events_.empty() || interrupted_; });
  interrupted_ = false;
  return !events_.empty();
}

void fabric_endpoint::interrupt() {
  {
    std::lock_guard lock(events_mu_);
    interrupted_ = true;
  }
  events_cv_.notify_all();
}

bool fabric_endpoint::set_event_handler(std::function<bool(event&)> handler) {
  // Swapped on the progress thread, between two events, so the old one never runs again.
  run_on_progress([this, &handler] { handler_ = std::move(handler); });
  return true;
}

bool fabric_endpoint::set_timer(deadline at) {
  const auto ticks = at.time_since_epoch().count();
  // Only an earlier time needs the progress thread to look again before it sleeps on.
  if (ticks < timer_at_.exchange(ticks)) wake();
  return true;
}

endpoint_stats fabric_endpoint::stats() const {
  endpoint_stats s;
  s.messages_received = counters_.messages_received.load();
  s.bad_frames = counters_.bad_frames.load();
  s.dropped_events = counters_.dropped_events.load();
  s.descriptors_refused = counters_.descriptors_refused.load();
  s.ops_expired = counters_.ops_expired.load();
  s.expired_ops_held = counters_.expired_ops_held.load();
  s.progress_wakeups = counters_.progress_wakeups.load();
  s.batches_sent = counters_.batches_sent.load();
  s.bad_tags = counters_.bad_tags.load();
  s.connections_closed = counters_.connections_closed.load();
  return s;
}

}  // namespace baton::transport::fabric
