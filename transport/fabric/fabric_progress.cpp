// The progress-thread half of the fabric endpoint: posting, completions, deadlines.
// Every fi_* call after set-up happens here.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_tagged.h>

#include "transport/fabric/fabric_endpoint.hpp"

namespace baton::transport::fabric {

namespace {

constexpr int idle_wakeup_ms = 1000;
constexpr std::size_t completion_batch = 32;
/// Sends to one peer that wait back to back leave as one batch frame of at most this
/// many bytes: inside the provider's eager protocol (rxm's default eager limit is
/// 16 KiB), so a batch never needs the receiver's progress for a rendezvous.
constexpr std::size_t max_batch_bytes = 8192;

errc classify(int err) {
  switch (std::abs(err)) {
    case FI_ECANCELED:
    case FI_ENOTCONN:
    case FI_ECONNREFUSED:
    case FI_ECONNRESET:
    case FI_ECONNABORTED:
    case EPIPE:
    case FI_EHOSTUNREACH:
    case FI_ENETUNREACH:
    case FI_EIO: return errc::disconnected;
    case FI_ETIMEDOUT: return errc::timed_out;
    default: return errc::failed;
  }
}

event_kind done_kind(op_kind kind) {
  switch (kind) {
    case op_kind::write: return event_kind::write_done;
    case op_kind::read: return event_kind::read_done;
    default: return event_kind::send_done;
  }
}

}  // namespace

void fabric_endpoint::progress_loop() {
  while (!stop_.load()) {
    take_submissions();
    const bool posted = post_pending();
    if (blocking_wait_) {
      progress_blocking(posted);
    } else {
      poll_with_backoff(posted);
    }
    const auto now = clock::now();
    expire(now);
    fire_timer(now);
  }
}

void fabric_endpoint::fire_timer(clock::time_point now) {
  auto at = timer_at_.load();
  if (now.time_since_epoch().count() < at) return;
  // A set_timer() racing with us wins: its time stays armed.
  if (!timer_at_.compare_exchange_strong(at, clock::time_point::max().time_since_epoch().count()))
    return;
  event ev;
  ev.kind = event_kind::timer;
  push_event(std::move(ev));
}

void fabric_endpoint::progress_blocking(bool posted) {
  // Poll briefly after traffic (a reply often follows within microseconds), then sleep
  // in fi_cq_sread until a completion or fi_cq_signal wakes us. A stalled queue (the
  // provider keeps answering -FI_EAGAIN, e.g. to a dead peer) is retried every 1 ms.
  const auto now = clock::now();
  if (posted) last_activity_ = now;
  const bool recent = now - last_activity_ < std::chrono::microseconds(50);
  const bool stalled = !pending_.empty() && !posted;
  int block_ms = -1;
  if (!recent && (pending_.empty() || stalled))
    block_ms = stalled ? std::min(1, next_timeout_ms()) : next_timeout_ms();
  if (read_completions(block_ms)) last_activity_ = clock::now();
  if (recent) std::this_thread::yield();
}

void fabric_endpoint::poll_with_backoff(bool posted) {
  // Spin while traffic flows, then sleep in growing steps (at most max_backoff, which
  // bounds the latency of waking for incoming work and the idle CPU cost).
  constexpr auto spin_window = std::chrono::microseconds(500);
  constexpr auto min_backoff = std::chrono::microseconds(20);
  constexpr auto max_backoff = std::chrono::microseconds(2000);
  const auto now = clock::now();
  if (read_completions(-1) || posted) {
    last_activity_ = now;
    backoff_ = std::chrono::microseconds(0);
    return;
  }
  if (now - last_activity_ < spin_window) {
    std::this_thread::yield();  // two vCPUs: let the owner threads run while we spin
    return;
  }
  backoff_ = std::clamp(backoff_ * 2, min_backoff, max_backoff);
  std::unique_lock lock(submit_mu_);
  wake_cv_.wait_for(lock, backoff_,
                    [&] { return stop_.load() || !submitted_.empty() || !commands_.empty(); });
  counters_.progress_wakeups.fetch_add(1);
}

void fabric_endpoint::take_submissions() {
  std::deque<std::unique_ptr<op>> taken;
  std::deque<std::function<void()>> commands;
  {
    std::lock_guard lock(submit_mu_);
    taken.swap(submitted_);
    commands.swap(commands_);
  }
  for (auto& operation : taken) {
    operation->ctx.as_op = operation.get();
    pending_.push_back(operation.get());
    live_.emplace(operation.get(), std::move(operation));
  }
  if (commands.empty()) return;
  for (auto& command : commands) command();
  {
    std::lock_guard lock(submit_mu_);
    commands_done_ += commands.size();
  }
  command_cv_.notify_all();
}

bool fabric_endpoint::post_pending() {
  // FIFO per peer: a later operation to a peer never overtakes one that got -FI_EAGAIN,
  // which keeps messages to a peer in order, while a peer that cannot take more (say a
  // dead one, to which rxm answers -FI_EAGAIN for ever) does not hold up the others.
  // Sends that wait back to back for one peer leave as one batch frame: one provider
  // message, one syscall and one completion on each side instead of one each.
  bool progressed = false;
  std::vector<peer_id> blocked;
  for (auto it = pending_.begin(); it != pending_.end();) {
    op* operation = *it;
    if (std::find(blocked.begin(), blocked.end(), operation->peer) != blocked.end()) {
      ++it;
      continue;
    }
    const auto count = static_cast<std::ptrdiff_t>(batchable(it));
    auto batch = count > 1 ? make_batch(it, static_cast<std::size_t>(count)) : nullptr;
    int rc = post(batch ? *batch : *operation);
    if (rc == -FI_EAGAIN) {
      blocked.push_back(operation->peer);
      it += count;
      continue;
    }
    progressed = true;
    const std::vector<op*> sent(it, it + count);
    it = pending_.erase(it, it + count);
    if (rc == 0) {
      for (op* s : sent) s->posted = true;
      if (batch) {
        counters_.batches_sent.fetch_add(1);
        batch->posted = true;
        op* raw = batch.get();
        live_.emplace(raw, std::move(batch));
      }
    } else {
      for (op* s : sent) finish(s, fail(classify(rc), fmt::format("post: {}", fi_strerror(-rc))));
    }
  }
  return progressed;
}

std::size_t fabric_endpoint::batchable(std::deque<op*>::iterator first) {
  const op* head = *first;
  if (head->kind != op_kind::send) return 1;
  std::size_t limit = max_batch_bytes;
  if (mr_local_) limit = std::min(limit, tx_memory_.slot_bytes());
  {
    std::lock_guard lock(state_mu_);
    limit = std::min<std::size_t>(
        limit,
        frame::header_bytes + peers_[static_cast<std::uint32_t>(head->peer)].max_message_bytes);
  }
  std::size_t bytes = frame::header_bytes + head->frame.size();
  if (bytes > limit) return 1;
  std::size_t count = 1;
  for (auto next = std::next(first); next != pending_.end(); ++next) {
    const op* o = *next;
    if (o->kind != op_kind::send || o->peer != head->peer || bytes + o->frame.size() > limit) break;
    bytes += o->frame.size();
    ++count;
  }
  return count;
}

std::unique_ptr<op> fabric_endpoint::make_batch(std::deque<op*>::iterator first,
                                                std::size_t count) {
  auto batch = std::make_unique<op>();
  batch->ctx.as_op = batch.get();
  batch->kind = op_kind::send;
  batch->peer = (*first)->peer;
  batch->addr = (*first)->addr;
  batch->until = (*first)->until;
  std::vector<std::byte> payload;
  for (auto it = first; it != std::next(first, static_cast<std::ptrdiff_t>(count)); ++it) {
    payload.insert(payload.end(), (*it)->frame.begin(), (*it)->frame.end());
    batch->until = std::min(batch->until, (*it)->until);
    batch->members.push_back(*it);
  }
  batch->frame = frame::encode(frame::kind::batch, node_, payload);
  return batch;
}

int fabric_endpoint::post(op& o) {
  switch (o.kind) {
    case op_kind::send:
    case op_kind::internal: return post_send(o);
    case op_kind::write: {
      iovec iov{o.local, o.length};
      void* desc = local_desc(o.mem->desc);
      fi_rma_iov rma{o.remote_addr, o.length, o.remote_key};
      fi_msg_rma msg{&iov, &desc, 1, o.addr, &rma, 1, &o.ctx.raw, o.notify.value_or(0)};
      // Delivery complete, so the completion means the data landed. shm in VIRT_ADDR mode
      // copies a plain write itself (CMA) before completing it, so there the flag is
      // only needed with notify; it would otherwise wait for the target's progress.
      std::uint64_t flags = FI_COMPLETION;
      if (!shm_direct_write_ || o.notify) flags |= FI_DELIVERY_COMPLETE;
      if (o.notify) flags |= FI_REMOTE_CQ_DATA;
      return static_cast<int>(fi_writemsg(ep_.get(), &msg, flags));
    }
    case op_kind::read: {
      iovec iov{o.local, o.length};
      void* desc = local_desc(o.mem->desc);
      fi_rma_iov rma{o.remote_addr, o.length, o.remote_key};
      fi_msg_rma msg{&iov, &desc, 1, o.addr, &rma, 1, &o.ctx.raw, 0};
      return static_cast<int>(fi_readmsg(ep_.get(), &msg, FI_COMPLETION));
    }
  }
  return -FI_EINVAL;
}

std::span<const std::byte> fabric_endpoint::seal(op& o) {
  if (!own_mac_ || o.plain) return o.frame;
  o.sealed.resize(o.frame.size() + frame::seal_bytes);
  std::copy(o.frame.begin(), o.frame.end(), o.sealed.begin());
  own_mac_->seal(o.sealed, next_sequence_++);
  return o.sealed;
}

int fabric_endpoint::post_send(op& o) {
  const auto bytes = seal(o);
  if (!mr_local_)
    return static_cast<int>(
        fi_tsend(ep_.get(), bytes.data(), bytes.size(), nullptr, o.addr, 0, &o.ctx.raw));
  // The frame is copied into a registered send buffer, which stays with the operation
  // until the provider completes it. None free: wait like a full queue (only posted
  // sends hold one, so a peer that refuses everything cannot starve the others).
  if (bytes.size() > tx_memory_.slot_bytes()) return -FI_EMSGSIZE;
  auto index = tx_memory_.acquire();
  if (!index) return -FI_EAGAIN;
  auto buffer = tx_memory_.slot(*index);
  std::memcpy(buffer.data(), bytes.data(), bytes.size());
  auto rc = static_cast<int>(fi_tsend(ep_.get(), buffer.data(), bytes.size(),
                                      local_desc(tx_memory_.desc()), o.addr, 0, &o.ctx.raw));
  if (rc == 0) {
    o.send_slot = *index;
  } else {
    tx_memory_.release(*index);
  }
  return rc;
}

int fabric_endpoint::next_timeout_ms() const {
  auto nearest = clock::now() + std::chrono::milliseconds(idle_wakeup_ms);
  nearest = std::min(nearest, clock::time_point(clock::duration(timer_at_.load())));
  for (const auto& [ptr, operation] : live_)
    if (!operation->expired && operation->until < nearest) nearest = operation->until;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(nearest - clock::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(ms, 0, idle_wakeup_ms));
}

bool fabric_endpoint::read_completions(int block_ms) {
  fi_cq_tagged_entry entries[completion_batch];
  fi_addr_t sources[completion_batch];
  ssize_t n = 0;
  if (block_ms >= 0) {
    // Announce the sleep before the last look at the submission queue: a submitter that
    // queued after that look sees sleeping_ and signals; one that queued before is seen.
    sleeping_.store(true);
    bool work = false;
    {
      std::lock_guard lock(submit_mu_);
      work = stop_.load() || !submitted_.empty() || !commands_.empty();
    }
    if (work) {
      sleeping_.store(false);
      n = fi_cq_readfrom(cq_.get(), entries, completion_batch, sources);
    } else {
      n = fi_cq_sreadfrom(cq_.get(), entries, completion_batch, sources, nullptr, block_ms);
      sleeping_.store(false);
      counters_.progress_wakeups.fetch_add(1);
    }
  } else {
    n = fi_cq_readfrom(cq_.get(), entries, completion_batch, sources);
  }
  const bool any = n > 0 || n == -FI_EAVAIL;
  while (n > 0 || n == -FI_EAVAIL) {
    if (n == -FI_EAVAIL) {
      on_error();
    } else {
      for (ssize_t i = 0; i < n; ++i) on_completion(entries[i], sources[i]);
    }
    n = fi_cq_readfrom(cq_.get(), entries, completion_batch, sources);
  }
  return any;
}

void fabric_endpoint::on_completion(const fi_cq_tagged_entry& entry, fi_addr_t source) {
  auto* ctx = reinterpret_cast<context*>(entry.op_context);
  const bool remote_data =
      (entry.flags & FI_REMOTE_CQ_DATA) != 0 && (entry.flags & (FI_MSG | FI_TAGGED)) == 0;
  if (remote_data) {
    event ev;
    ev.kind = event_kind::notify;
    ev.data = entry.data;
    {
      std::lock_guard lock(state_mu_);
      if (auto it = peer_by_addr_.find(source); it != peer_by_addr_.end()) ev.peer = it->second;
    }
    push_event(std::move(ev));
    if (ctx != nullptr && ctx->as_rx != nullptr) repost(*ctx->as_rx);
    return;
  }
  if (ctx == nullptr) return;
  if (ctx->as_rx != nullptr) {
    on_receive(*ctx->as_rx, entry.len, source);
    return;
  }
  finish(ctx->as_op, {});
}

void fabric_endpoint::on_error() {
  fi_cq_err_entry err{};
  if (fi_cq_readerr(cq_.get(), &err, 0) <= 0) return;
  auto* ctx = reinterpret_cast<context*>(err.op_context);
  if (ctx == nullptr) {
    counters_.bad_frames.fetch_add(1);  // e.g. shm reports a bad remote access this way
    return;
  }
  if (ctx->as_rx != nullptr) {
    if (std::abs(err.err) != FI_ECANCELED) counters_.bad_frames.fetch_add(1);  // FI_ETRUNC
    if (!stop_.load()) repost(*ctx->as_rx);
    return;
  }
  const char* text = fi_cq_strerror(cq_.get(), err.prov_errno, err.err_data, nullptr, 0);
  finish(ctx->as_op,
         fail(classify(err.err), fmt::format("completion: {} ({})", fi_strerror(std::abs(err.err)),
                                             text != nullptr ? text : "")));
}

void fabric_endpoint::repost(rx_slot& slot) {
  // The receive queue holds receive_depth slots and each is reposted once, so this
  // cannot see -FI_EAGAIN for long; retry a bounded number of times with progress.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    ssize_t rc = fi_trecv(ep_.get(), slot.buffer.data(), slot.buffer.size(),
                          local_desc(rx_memory_.desc()), FI_ADDR_UNSPEC, 0, 0, &slot.ctx.raw);
    if (rc != -FI_EAGAIN) return;
    fi_cq_tagged_entry scratch;
    (void)fi_cq_read(cq_.get(), &scratch, 0);
  }
}

void fabric_endpoint::on_receive(rx_slot& slot, std::size_t bytes, fi_addr_t source) {
  auto decoded = frame::decode({slot.buffer.data(), std::min(bytes, slot.buffer.size())},
                               config_.limits.max_message_bytes);
  if (!decoded) {
    counters_.bad_frames.fetch_add(1);
  } else {
    on_frame(*decoded, source);
  }
  repost(slot);
}

bool fabric_endpoint::room_for_a_session() {
  if (sessions_.size() < 2 * config_.limits.max_peers) return true;
  // Full: sessions of senders no peer maps to any more (endpoints replaced since) go.
  std::erase_if(sessions_, [&](const auto& s) { return !peer_by_node_.contains(s.first); });
  return sessions_.size() < 2 * config_.limits.max_peers;
}

bool fabric_endpoint::authentic(const frame::view& f, fi_addr_t source) {
  bool ok = false;
  if (f.seal && f.type == frame::kind::hello) {
    // A hello announces its sender's session: its seal must verify under the key that
    // session's nonce gives. A hello of the session we know is checked for replay too.
    const auto hello = frame::decode_hello(f.payload);
    std::lock_guard lock(state_mu_);
    auto known = sessions_.find(f.sender);
    if (known != sessions_.end() && known->second.nonce == hello.nonce) {
      ok = known->second.mac.check(*f.seal) && known->second.window.accept(f.seal->sequence);
    } else if (known != sessions_.end() || room_for_a_session()) {
      frame_mac mac(session_key(*config_.frame_key, f.sender, hello.nonce));
      if (mac.check(*f.seal)) {
        session fresh{hello.nonce, std::move(mac), {}};
        ok = fresh.window.accept(f.seal->sequence);
        sessions_.insert_or_assign(f.sender, std::move(fresh));
      }
    }
  } else if (f.seal) {
    std::lock_guard lock(state_mu_);
    auto known = sessions_.find(f.sender);
    ok = known != sessions_.end() && known->second.mac.check(*f.seal) &&
         known->second.window.accept(f.seal->sequence);
  }
  if (ok) return true;
  counters_.bad_tags.fetch_add(1);
  if (f.type == frame::kind::hello)
    refuse_hello(f, f.seal ? frame::refusal::bad_seal : frame::refusal::unsealed);
  std::lock_guard lock(state_mu_);
  auto peer = peer_by_addr_.find(source);
  if (source == FI_ADDR_NOTAVAIL || peer == peer_by_addr_.end()) return false;  // none to close
  if (++bad_tags_by_source_[source] >= config_.limits.max_bad_tags) {
    bad_tags_by_source_.erase(source);
    counters_.connections_closed.fetch_add(1);
    reset_connection(peer->second);
  }
  return false;
}

peer_id fabric_endpoint::peer_of_raw(const std::vector<std::byte>& raw) {
  if (auto it = peer_by_raw_.find(raw_key(raw)); it != peer_by_raw_.end()) return it->second;
  // The provider reads an address of its own format (a sockaddr of our own length, or a
  // NUL-terminated name): anything else is refused before it reaches the address vector.
  const bool plausible =
      info_->addr_format == FI_SOCKADDR_IN
          ? raw.size() == raw_local_.size() && raw[0] == raw_local_[0] && raw[1] == raw_local_[1]
          : !raw.empty() && raw.back() == std::byte{0};
  if (!plausible || peers_.size() >= config_.limits.max_peers) return unknown_peer;
  fi_addr_t addr = FI_ADDR_UNSPEC;
  if (fi_av_insert(av_.get(), raw.data(), 1, &addr, 0, nullptr) != 1) return unknown_peer;
  const auto id = static_cast<peer_id>(peers_.size());
  peers_.push_back(
      peer_entry{.addr = addr, .raw = raw, .node = std::nullopt, .failure = std::nullopt});
  peer_by_raw_[raw_key(raw)] = id;
  peer_by_addr_[addr] = id;
  return id;
}

void fabric_endpoint::refuse_hello(const frame::view& f, frame::refusal reason) {
  const auto hello = frame::decode_hello(f.payload);
  std::lock_guard lock(state_mu_);
  const auto key = raw_key(hello.raw_address);
  if (auto it = peer_by_raw_.find(key); it != peer_by_raw_.end()) {
    auto& e = peers_[static_cast<std::uint32_t>(it->second)];
    if (!e.node && e.hello_sent) {  // our own add_peer waits for this peer: it fails
      e.refused =
          error{errc::failed,
                reason == frame::refusal::unsealed
                    ? "its frames are not sealed: it holds no cluster secret, this node does"
                    : "its frames' seals do not verify: it holds another cluster secret"};
      state_cv_.notify_all();
    }
  }
  const auto now = clock::now();
  if (auto last = refused_at_.find(key);
      last != refused_at_.end() && now - last->second < std::chrono::seconds(1)) {
    return;
  }
  if (refused_at_.size() >= config_.limits.max_peers) refused_at_.clear();
  refused_at_[key] = now;
  event ev;  // at most once a second per address, as the refusal itself
  ev.kind = event_kind::refused;
  ev.status = fail(errc::failed,
                   fmt::format("refused a hello from {}: {}", text_of(hello.raw_address),
                               reason == frame::refusal::unsealed
                                   ? "its frames are not sealed (it holds no cluster secret)"
                                   : "its seal does not verify (it holds another cluster secret)"));
  push_event(std::move(ev));
  const peer_id to = peer_of_raw(hello.raw_address);
  if (to == unknown_peer) return;
  auto operation = std::make_unique<op>();
  operation->kind = op_kind::internal;
  operation->plain = true;
  operation->peer = to;
  operation->addr = peers_[static_cast<std::uint32_t>(to)].addr;
  operation->until = now + std::chrono::seconds(5);
  operation->frame = frame::encode(frame::kind::refuse, node_,
                                   frame::encode_refuse({reason, hello.nonce, raw_local_}));
  submit(std::move(operation));
}

void fabric_endpoint::on_refuse(const frame::view& f) {
  const auto refuse = frame::decode_refuse(f.payload);
  // Only a refusal of our own hello counts (it echoes our nonce, which a stranger that has
  // not seen our hello does not know).
  if (!refuse || refuse->nonce != nonce_) {
    counters_.bad_frames.fetch_add(1);
    return;
  }
  std::lock_guard lock(state_mu_);
  auto it = peer_by_raw_.find(raw_key(refuse->raw_address));
  if (it == peer_by_raw_.end()) return;
  auto& e = peers_[static_cast<std::uint32_t>(it->second)];
  if (e.node) return;  // a session is up with it: a refusal cannot end it
  e.refused = error{errc::failed, refuse->reason == frame::refusal::unsealed
                                      ? "it refused our hello: it requires sealed frames and "
                                        "this node holds no cluster secret"
                                      : "it refused our hello: our seal does not verify there, "
                                        "so this node does not hold the cluster's secret"};
  state_cv_.notify_all();
}

void fabric_endpoint::on_frame(const frame::view& f, fi_addr_t source) {
  if (f.type == frame::kind::refuse) {  // never sealed: the refuser cannot seal for us
    on_refuse(f);
    return;
  }
  if (config_.frame_key && !authentic(f, source)) return;
  if (f.type == frame::kind::hello) {
    on_hello(f, source);
    return;
  }
  std::unique_lock lock(state_mu_);
  auto sender = peer_by_node_.find(f.sender);
  if (sender == peer_by_node_.end()) {
    counters_.bad_frames.fetch_add(1);  // no hello from this node: cannot attribute it
    // Its sender may take us for the process that was here before (we restarted): our
    // hello tells it otherwise, and it answers with its own (once a second at most).
    if (auto known = peer_by_addr_.find(source); known != peer_by_addr_.end()) {
      auto& entry = peers_[static_cast<std::uint32_t>(known->second)];
      const auto now = clock::now();
      if (now - entry.nudged_at >= std::chrono::seconds(1)) {
        entry.nudged_at = now;
        post_hello(known->second, false);
      }
    }
    return;
  }
  switch (f.type) {
    case frame::kind::message: {
      counters_.messages_received.fetch_add(1);
      event ev;
      ev.kind = event_kind::message;
      ev.peer = sender->second;
      lock.unlock();  // the handler may run here: not under our lock
      ev.payload.assign(f.payload.begin(), f.payload.end());
      push_event(std::move(ev));
      return;
    }
    case frame::kind::batch: {
      auto messages = frame::split_batch(f.payload, f.sender, config_.limits.max_message_bytes);
      if (!messages) {
        counters_.bad_frames.fetch_add(1);
        return;
      }
      const peer_id from = sender->second;
      lock.unlock();
      for (const auto& m : *messages) {
        counters_.messages_received.fetch_add(1);
        event ev;
        ev.kind = event_kind::message;
        ev.peer = from;
        ev.payload.assign(m.payload.begin(), m.payload.end());
        push_event(std::move(ev));
      }
      return;
    }
    case frame::kind::grant:
      if (!grants_.add(f.sender, frame::decode_grant(f.payload))) counters_.bad_frames.fetch_add(1);
      return;
    case frame::kind::revoke: {
      auto r = frame::decode_revoke(f.payload);
      grants_.revoke(f.sender, r.key, r.offset, r.length);
      return;
    }
    case frame::kind::hello:
    case frame::kind::refuse: return;
  }
  (void)source;
}

void fabric_endpoint::on_hello(const frame::view& f, fi_addr_t /*source*/) {
  auto hello = frame::decode_hello(f.payload);
  const std::vector<std::byte>& raw = hello.raw_address;
  std::lock_guard lock(state_mu_);
  // The raw address is authoritative: shm's FI_SOURCE may name another peer.
  const peer_id id = peer_of_raw(raw);
  if (id == unknown_peer) {
    counters_.bad_frames.fetch_add(1);
    return;
  }
  auto& entry = peers_[static_cast<std::uint32_t>(id)];
  const bool new_incarnation = entry.node.has_value() && *entry.node != f.sender;
  if (new_incarnation) {
    grants_.forget(*entry.node);
    peer_by_node_.erase(*entry.node);
    sessions_.erase(*entry.node);
  }
  entry.node = f.sender;
  entry.refused.reset();
  entry.max_message_bytes = hello.max_message_bytes;
  peer_by_node_[f.sender] = id;
  if (!hello.answer) post_hello(id, true);
  state_cv_.notify_all();
}

void fabric_endpoint::note_failure(peer_id peer) {
  std::lock_guard lock(state_mu_);
  const auto index = static_cast<std::uint32_t>(peer);
  if (index < peers_.size()) peers_[index].rehello = true;
}

void fabric_endpoint::finish(op* operation, expected<void> status) {
  auto it = live_.find(operation);
  if (it == live_.end()) return;
  std::unique_ptr<op> owned = std::move(it->second);
  live_.erase(it);
  if (owned->send_slot) tx_memory_.release(*owned->send_slot);  // the provider let go
  if (!owned->members.empty()) {
    for (op* member : owned->members) finish(member, status);
    return;
  }
  if (owned->expired) {
    counters_.expired_ops_held.fetch_sub(1);  // the provider let go: buffers may go now
    return;
  }
  if (!status) note_failure(owned->peer);
  if (owned->kind == op_kind::internal) {
    if (!status) {
      std::lock_guard lock(state_mu_);
      auto& entry = peers_[static_cast<std::uint32_t>(owned->peer)];
      // Whatever the provider says, a hello that did not go out may go out later (the
      // peer restarts, the link comes back): `failed` is kept for refusals (add_peer).
      if (!entry.node)
        entry.failure =
            error{status.error().code == errc::timed_out ? errc::timed_out : errc::disconnected,
                  "hello: " + status.error().message};
      state_cv_.notify_all();
    }
    return;
  }
  event ev;
  ev.kind = done_kind(owned->kind);
  ev.op = owned->id;
  ev.peer = owned->peer;
  ev.status = std::move(status);
  push_event(std::move(ev));
}

void fabric_endpoint::expire(clock::time_point now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    op* operation = *it;
    if (operation->until > now) {
      ++it;
      continue;
    }
    it = pending_.erase(it);  // never posted: nothing for the provider to release
    counters_.ops_expired.fetch_add(1);
    finish(operation, fail(errc::timed_out, "deadline passed before the operation was posted"));
  }
  for (auto& [ptr, operation] : live_) {
    if (operation->expired || !operation->posted || operation->until > now) continue;
    if (!operation->members.empty()) {
      operation->expired = true;  // its sends expire (and are reported) on their own
      continue;
    }
    operation->expired = true;
    counters_.ops_expired.fetch_add(1);
    counters_.expired_ops_held.fetch_add(1);
    note_failure(operation->peer);
    if (operation->kind == op_kind::internal) {
      std::lock_guard lock(state_mu_);
      auto& entry = peers_[static_cast<std::uint32_t>(operation->peer)];
      if (!entry.node) entry.failure = error{errc::timed_out, "hello: no completion"};
      state_cv_.notify_all();
      continue;
    }
    event ev;
    ev.kind = done_kind(operation->kind);
    ev.op = operation->id;
    ev.peer = operation->peer;
    ev.status = fail(errc::timed_out,
                     "deadline passed; the transport keeps the buffer until "
                     "the provider releases it");
    push_event(std::move(ev));
  }
}

void fabric_endpoint::push_event(event ev) {
  if (handler_ && handler_(ev)) {
    if (ev.kind == event_kind::send_done || ev.kind == event_kind::write_done ||
        ev.kind == event_kind::read_done)
      inflight_.fetch_sub(1);
    return;
  }
  {
    std::lock_guard lock(events_mu_);
    if (ev.kind == event_kind::message || ev.kind == event_kind::notify) {
      if (events_.size() >= config_.limits.max_pending_events) {
        counters_.dropped_events.fetch_add(1);
        return;
      }
    }
    events_.push_back(std::move(ev));
  }
  events_cv_.notify_all();
}

}  // namespace baton::transport::fabric
