#include "runtime/fabric_io.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/send.hpp>

#include "runtime/messages.hpp"

namespace baton::runtime {
namespace {

using namespace std::chrono_literals;
// Connecting (about 100 ms on tcp) must not stall this thread, which carries every
// probe: each attempt waits briefly, and an unfinished connection is retried.
constexpr auto connect_attempt = 10ms;
constexpr auto connect_retry = 50ms;
using steady = std::chrono::steady_clock;
constexpr steady::rep never = steady::time_point::max().time_since_epoch().count();
constexpr auto connect_give_up = 10s;          // then what waits for the connection fails...
constexpr auto connect_retry_unanswered = 1s;  // ...and it is tried this often

constexpr auto send_timeout = 5s;
constexpr auto reset_quiet = 1s;  // send failures this soon after a reconnect are its own
constexpr std::size_t max_backlog_frames = 8192;  // per peer, waiting to be sent
constexpr std::size_t max_waiting_writes = 4096;  // per peer, RMA writes not yet posted
constexpr auto blocking_call_limit = 30s;  // a kv_fabric call the fabric thread leaves unanswered

}  // namespace

fabric_io::fabric_io(std::unique_ptr<transport::endpoint> endpoint, metrics_registry& metrics)
    : endpoint_(std::move(endpoint)),
      local_address_(endpoint_->local_address()),
      local_node_(endpoint_->local_node()),
      frames_sent_(metrics.get_counter("baton_fabric_frames_sent_total", "Frames posted.")),
      frames_received_(
          metrics.get_counter("baton_fabric_frames_received_total", "Frames received.")),
      send_failures_(metrics.get_counter("baton_fabric_send_failures_total",
                                         "Frames that could not be sent (peer gone, timeout).")),
      handler_failures_(metrics.get_counter(
          "baton_handler_failures_total",
          "Frames or timers whose handler failed on the transport's thread (dropped, logged)",
          {{"thread", "progress"}})),
      rma_writes_(metrics.get_counter("baton_fabric_rma_writes_total", "RMA writes posted.")),
      rma_failures_(metrics.get_counter("baton_fabric_rma_write_failures_total",
                                        "RMA writes refused, expired or failed.")),
      malformed_frames_(
          metrics.get_counter("baton_fabric_malformed_frames_total",
                              "Frames dropped as truncated, oversized or malformed.")),
      bad_tags_(metrics.get_counter(
          "baton_fabric_bad_tags_total",
          "Frames dropped because their seal was missing, wrong or replayed (forged).")),
      connections_closed_(metrics.get_counter(
          "baton_fabric_connections_closed_total",
          "Connections closed because their peer sent too many badly sealed frames.")),
      descriptors_refused_(
          metrics.get_counter("baton_fabric_descriptors_refused_total",
                              "Remote memory descriptors refused (outside a grant or its pool).")) {
  // Frames and send completions bypass the fabric thread where the transport allows it.
  progress_thread_ =
      endpoint_->set_event_handler([this](transport::event& e) { return on_event(e); });
  // Started once progress_thread_ is known: run() reads it.
  thread_ = std::thread([this] { run(); });
}

fabric_io::~fabric_io() {
  // No more frames in or out; the handler is not running once this returns.
  (void)endpoint_->set_event_handler({});
  {
    std::lock_guard lock(send_mu_);
    sending_closed_ = true;
    connected_.clear();
  }
  stop_.store(true);
  endpoint_->interrupt();
  thread_.join();
  // The thread is gone: everything it owned is ours. Nothing waits forever and every
  // write gets its one rma_done.
  std::vector<command> left;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    left.swap(commands_);
  }
  for (auto& c : left) abandon(c);
  const auto gone = [] { return fail(errc::disconnected, "the fabric thread stopped"); };
  for (auto& [node, queue] : waiting_grants_) {
    for (auto& g : queue) g.result->set_value(gone());
  }
  for (auto& [node, queue] : waiting_writes_) {
    for (auto& w : queue) report(w, gone());
  }
  for (auto& [op, reply] : writes_in_flight_) {
    if (reply.reply_to) caf::anon_send(reply.reply_to, rma_done{reply.tag, gone()});
  }
}

void fabric_io::set_filter(frame_filter filter) {
  auto shared = std::make_shared<const frame_filter>(std::move(filter));
  std::lock_guard lock(routes_mu_);
  filter_ = std::move(shared);
}

void fabric_io::set_ticker(std::function<void()> tick) {
  auto shared = std::make_shared<const std::function<void()>>(std::move(tick));
  std::lock_guard lock(routes_mu_);
  ticker_ = std::move(shared);
}

void fabric_io::set_unreachable(std::function<void(const std::string& node)> hook) {
  auto shared = std::make_shared<const std::function<void(const std::string&)>>(std::move(hook));
  std::lock_guard lock(routes_mu_);
  unreachable_ = std::move(shared);
}

void fabric_io::set_refused(std::function<void(const std::string&, const std::string&)> hook) {
  refused_ = std::move(hook);
}

void fabric_io::send_failed(const transport::event& e) {
  send_failures_.add();
  if (e.status || e.status.error().code != errc::disconnected) return;
  std::string node;
  std::shared_ptr<const std::function<void(const std::string&)>> hook;
  {
    std::lock_guard lock(routes_mu_);
    if (auto it = names_.find(e.peer); it != names_.end()) node = it->second;
    hook = unreachable_;
    // Sends that a reconnect cut short say nothing about the peer.
    if (auto it = reset_at_.find(node);
        it != reset_at_.end() && std::chrono::steady_clock::now() - it->second < reset_quiet) {
      return;
    }
  }
  if (!node.empty() && hook && *hook) (*hook)(node);
}

void fabric_io::tick_at(std::chrono::steady_clock::time_point at) {
  if (progress_thread_ && endpoint_->set_timer(at)) return;
  const auto ticks = at.time_since_epoch().count();
  if (ticks < tick_at_.exchange(ticks)) endpoint_->interrupt();
}

void fabric_io::mirror_refusals() {
  const auto now = endpoint_->stats();
  malformed_frames_.add(now.bad_frames - mirrored_.bad_frames);
  bad_tags_.add(now.bad_tags - mirrored_.bad_tags);
  connections_closed_.add(now.connections_closed - mirrored_.connections_closed);
  descriptors_refused_.add(now.descriptors_refused - mirrored_.descriptors_refused);
  mirrored_ = now;
}

void fabric_io::tick() {
  mirror_refusals();
  std::shared_ptr<const std::function<void()>> ticker;
  {
    std::lock_guard lock(routes_mu_);
    ticker = ticker_;
  }
  if (ticker && *ticker) (*ticker)();
}

void fabric_io::set_hub(caf::actor hub) {
  std::lock_guard lock(mutex_);
  hub_ = std::move(hub);
}

void fabric_io::set_notify_sink(caf::actor sink) {
  std::lock_guard lock(mutex_);
  notify_sink_ = std::move(sink);
}

void fabric_io::push(command c) {
  bool queued = false;
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      commands_.push_back(std::move(c));
      queued = true;
    }
  }
  if (queued) {
    endpoint_->interrupt();
    return;
  }
  abandon(c);
}

void fabric_io::abandon(command& c) {
  auto gone = [] { return fail(errc::disconnected, "the fabric thread stopped"); };
  switch (c.what) {
    case command::kind::call: c.call(false); return;
    case command::kind::grant: c.grant.result->set_value(gone()); return;
    case command::kind::write: report(c.write, gone()); return;
    default: return;
  }
}

void fabric_io::attach(const std::string& node, const std::string& fabric_address,
                       caf::actor bridge) {
  command c{};
  c.what = command::kind::attach;
  c.node = node;
  c.address = fabric_address;
  c.bridge = std::move(bridge);
  push(std::move(c));
}

void fabric_io::post(const std::string& node, wire::encoded_frame frame,
                     std::chrono::steady_clock::time_point until) {
  const auto latest = transport::clock::now() + send_timeout;
  until = until == transport::deadline{} ? latest : std::min(until, latest);
  {
    std::lock_guard lock(send_mu_);
    if (sending_closed_) {
      send_failures_.add();
      return;
    }
    auto& queue = backlog_[node];
    if (queue.empty()) {
      // Connected and nothing waits before it: straight into the endpoint, on this thread.
      if (auto peer = connected_.find(node); peer != connected_.end()) {
        auto sent = endpoint_->send(peer->second, frame.bytes(), until);
        if (sent) {
          frames_sent_.add();
          return;
        }
        if (sent.error().code != errc::overloaded) {
          send_failures_.add();
          return;
        }
        endpoint_full_.store(true);
      }
    }
    if (queue.size() >= max_backlog_frames) {
      send_failures_.add();
      return;
    }
    queue.push_back({std::move(frame), until});
  }
  endpoint_->interrupt();  // the fabric thread sends it once connected or there is room
}

void fabric_io::detach(const std::string& node, const caf::actor& bridge) {
  command c{};
  c.what = command::kind::detach;
  c.node = node;
  c.bridge = bridge;
  push(std::move(c));
}

void fabric_io::reconnect(const std::string& node) {
  command c{};
  c.what = command::kind::reconnect;
  c.node = node;
  push(std::move(c));
}

void fabric_io::bind(const std::string& node, transport::peer_id peer) {
  command c{};
  c.what = command::kind::bind;
  c.node = node;
  c.peer = peer;
  push(std::move(c));
}

template <class T>
expected<T> fabric_io::call(std::function<expected<T>()> fn, transport::deadline until) {
  auto result = std::make_shared<std::promise<expected<T>>>();
  auto future = result->get_future();
  command c{};
  c.what = command::kind::call;
  c.call = [fn = std::move(fn), result](bool run) {
    result->set_value(run ? fn()
                          : expected<T>(fail(errc::disconnected, "the fabric thread stopped")));
  };
  push(std::move(c));
  // Set exactly once (run, or abandoned at shutdown); the bound only guards against a
  // fabric thread stuck in the provider.
  if (future.wait_until(until) != std::future_status::ready) {
    return fail(errc::timed_out, "the fabric thread did not answer in time");
  }
  return future.get();
}

expected<kv_fabric::region> fabric_io::allocate_region(std::size_t bytes) {
  return call<region>(
      [this, bytes]() -> expected<region> {
        auto id = endpoint_->allocate_region(bytes);
        if (!id) return tl::unexpected(id.error());
        return region{*id, endpoint_->region_bytes(*id)};
      },
      transport::clock::now() + blocking_call_limit);
}

expected<void> fabric_io::free_region(transport::region_id id) {
  return call<void>([this, id] { return endpoint_->free_region(id); },
                    transport::clock::now() + blocking_call_limit);
}

expected<transport::remote_slice> fabric_io::grant(const std::string& node,
                                                   const transport::local_slice& slice,
                                                   transport::deadline until) {
  auto result = std::make_shared<std::promise<expected<transport::remote_slice>>>();
  auto future = result->get_future();
  command c{};
  c.what = command::kind::grant;
  c.node = node;
  c.grant = {slice, until, std::move(result)};
  push(std::move(c));
  // Answered by `until` (within a loop turn) or at shutdown; the margin only guards
  // against a fabric thread stuck in the provider.
  if (future.wait_until(until + blocking_call_limit) != std::future_status::ready) {
    return fail(errc::timed_out,
                fmt::format("grant to {}: the fabric thread did not answer", node));
  }
  return future.get();
}

void fabric_io::write(const std::string& node, const transport::local_slice& source,
                      const transport::remote_slice& target, std::optional<std::uint64_t> notify,
                      transport::deadline until, caf::actor reply_to, std::uint64_t tag) {
  command c{};
  c.what = command::kind::write;
  c.node = node;
  c.write = {source, target, notify, until, std::move(reply_to), tag};
  push(std::move(c));
}

void fabric_io::report(const pending_write& w, expected<void> status) {
  if (!status) rma_failures_.add();
  if (w.reply_to) caf::anon_send(w.reply_to, rma_done{w.tag, std::move(status)});
}

void fabric_io::execute(command& c) {
  switch (c.what) {
    case command::kind::attach:
      if (auto known = known_.find(c.node); known != known_.end() && known->second != c.address) {
        // The node restarted elsewhere: its old connection is to a process that is gone.
        // What is granted, written or posted to it from now on waits for the new one.
        drop_connection(c.node);
      }
      known_[c.node] = c.address;
      connecting_[c.node] = {c.address, c.bridge, {}, transport::clock::now() + connect_give_up};
      connect(c.node, c.address, c.bridge);
      return;
    case command::kind::detach: {
      const auto attached = bridges_.find(c.node);
      const auto pending = connecting_.find(c.node);
      const bool is_attached = attached != bridges_.end() && attached->second == c.bridge;
      const bool is_pending = pending != connecting_.end() && pending->second.bridge == c.bridge;
      if (attached != bridges_.end() || pending != connecting_.end()) {
        if (!is_attached && !is_pending) return;  // attached anew since
        if (is_attached && pending != connecting_.end() && !is_pending) {
          // The bridge is replaced by one whose connection is still being made (the node
          // restarted): only the old connection goes; what is posted meanwhile waits in
          // the backlog for the new one, and what waits for the node stays waiting.
          drop_connection(c.node);
          return;
        }
      }
      drop_connection(c.node);
      {
        std::lock_guard send_lock(send_mu_);
        backlog_.erase(c.node);
      }
      aliases_.erase(c.node);
      connecting_.erase(c.node);
      fail_waiting(c.node, error{errc::disconnected, fmt::format("{} was detached", c.node)});
      return;
    }
    case command::kind::reconnect:
      if (auto it = known_.find(c.node); it != known_.end()) {
        {
          std::lock_guard routes_lock(routes_mu_);
          reset_at_[c.node] = std::chrono::steady_clock::now();
        }
        endpoint_->reset_peer({it->second});
      }
      if (auto it = connecting_.find(c.node); it != connecting_.end()) {  // at once, as new
        it->second.retry_at = {};
        it->second.give_up_at = transport::clock::now() + connect_give_up;
        it->second.unanswered = false;
      }
      return;
    case command::kind::bind:
      aliases_[c.node].push_back(c.peer);
      if (auto it = bridges_.find(c.node); it != bridges_.end()) {
        std::lock_guard routes_lock(routes_mu_);
        routes_[c.peer] = it->second;
      }
      return;
    case command::kind::call: c.call(true); return;
    case command::kind::grant:
      waiting_grants_[c.node].push_back(std::move(c.grant));
      serve_grants(c.node);
      return;
    case command::kind::write: {
      auto& queue = waiting_writes_[c.node];
      if (queue.size() >= max_waiting_writes) {
        report(c.write,
               fail(errc::overloaded, fmt::format("rma write: {} writes to {} are waiting already",
                                                  max_waiting_writes, c.node)));
        return;
      }
      queue.push_back(std::move(c.write));
      send_writes(c.node);
      return;
    }
  }
}

void fabric_io::drop_connection(const std::string& node) {
  {
    std::lock_guard routes_lock(routes_mu_);
    if (auto it = peers_.find(node); it != peers_.end()) {
      routes_.erase(it->second);
      names_.erase(it->second);
    }
    for (auto id : aliases_[node]) routes_.erase(id);
  }
  {
    std::lock_guard send_lock(send_mu_);
    connected_.erase(node);
  }
  peers_.erase(node);
  bridges_.erase(node);
}

void fabric_io::connect(const std::string& node, const std::string& address, caf::actor bridge) {
  auto peer = endpoint_->add_peer({address}, transport::clock::now() + connect_attempt);
  if (!peer) {
    const auto code = peer.error().code;
    const auto now = transport::clock::now();
    if (code == errc::invalid_argument || code == errc::overloaded ||
        code == errc::failed) {  // never will
      spdlog::warn("cannot reach {} at {}: {}", node, address, peer.error().message);
      connecting_.erase(node);
      fail_waiting(node,
                   error{code, fmt::format("cannot reach {}: {}", node, peer.error().message)});
      if (code == errc::failed && refused_) refused_(node, peer.error().message);
      return;
    }
    // Unanswered or refused: tried until detached, since its bridge stays attached and a
    // node cut off or restarting comes back at this address; after connect_give_up, less
    // often, and what waits for the connection fails.
    auto& pending = connecting_[node];
    if (!pending.unanswered && now > pending.give_up_at) {
      pending.unanswered = true;
      spdlog::warn("cannot reach {} at {}: {}; trying again every {} s", node, address,
                   peer.error().message, connect_retry_unanswered.count());
      fail_waiting(node, error{errc::disconnected,
                               fmt::format("cannot reach {}: {}", node, peer.error().message)});
    }
    pending.retry_at =
        now + (pending.unanswered ? std::chrono::milliseconds(connect_retry_unanswered)
                                  : std::chrono::milliseconds(connect_retry));
    return;
  }
  connecting_.erase(node);
  peers_[node] = *peer;
  bridges_[node] = bridge;
  {
    std::lock_guard routes_lock(routes_mu_);
    routes_[*peer] = bridge;
    names_[*peer] = node;
    for (auto id : aliases_[node]) routes_[id] = bridge;
  }
  {
    std::lock_guard send_lock(send_mu_);
    if (!sending_closed_) connected_[node] = *peer;
    (void)send_backlog_locked(node);
  }
  serve_grants(node);
  send_writes(node);
}

void fabric_io::retry_connects() {
  const auto now = transport::clock::now();
  std::vector<std::string> due;
  for (const auto& [node, pending] : connecting_) {
    if (pending.retry_at <= now) due.push_back(node);
  }
  for (const auto& node : due) {
    auto pending = connecting_[node];
    connect(node, pending.address, pending.bridge);
  }
}

bool fabric_io::send_backlog_locked(const std::string& node) {
  auto peer = connected_.find(node);
  if (peer == connected_.end()) return true;  // not connected yet: the connection sends it
  auto queue = backlog_.find(node);
  if (queue == backlog_.end()) return true;
  while (!queue->second.empty()) {
    const auto& next = queue->second.front();
    if (next.until <= transport::clock::now()) {  // waited past its deadline
      send_failures_.add();
      queue->second.pop_front();
      continue;
    }
    auto sent = endpoint_->send(peer->second, next.frame.bytes(), next.until);
    if (!sent && sent.error().code == errc::overloaded) {
      endpoint_full_.store(true);  // a completion wakes us to retry
      return false;
    }
    if (sent) {
      frames_sent_.add();
    } else {
      send_failures_.add();
    }
    queue->second.pop_front();
  }
  return true;
}

void fabric_io::send_backlogs() {
  std::lock_guard lock(send_mu_);
  bool room = true;
  for (auto& [node, queue] : backlog_) {
    if (!queue.empty()) room = send_backlog_locked(node) && room;
  }
  if (room) endpoint_full_.store(false);
}

void fabric_io::route(transport::event& e) {
  frames_received_.add();
  // The moment the frame leaves the transport (the router's latency figures start here).
  const auto received = std::chrono::steady_clock::now();
  caf::actor bridge;
  std::shared_ptr<const frame_filter> filter;
  {
    std::lock_guard lock(routes_mu_);
    if (auto it = routes_.find(e.peer); it != routes_.end()) bridge = it->second;
    filter = filter_;
  }
  if (bridge && filter && (*filter)(e.payload, received)) return;  // under on_event's boundary
  raw_frame frame{std::make_shared<const std::vector<std::byte>>(std::move(e.payload)), received};
  if (bridge) {
    caf::anon_send(bridge, std::move(frame));
    return;
  }
  std::lock_guard lock(mutex_);
  if (hub_) caf::anon_send(hub_, std::move(frame), e.peer);
}

bool fabric_io::on_event(transport::event& e) {
  // The progress thread's failure boundary: a handler that throws (membership, an actor's
  // fast path) loses its frame or tick, counted and logged; the thread goes on.
  try {
    return handle_event(e);
  } catch (const std::exception& ex) {
    handler_failed(ex.what());
  } catch (...) {
    handler_failed("an exception that is not a std::exception");
  }
  return true;
}

void fabric_io::handler_failed(const char* what) {
  handler_failures_.add();
  spdlog::error("transport thread: a handler failed: {}; its frame or tick is dropped", what);
}

bool fabric_io::handle_event(transport::event& e) {
  using transport::event_kind;
  if (e.kind == event_kind::message) {
    route(e);
    return true;
  }
  if (e.kind == event_kind::send_done) {
    if (!e.status) send_failed(e);
    if (endpoint_full_.load()) endpoint_->interrupt();  // room for what waits
    return true;
  }
  if (e.kind == event_kind::timer) {
    tick();
    return true;
  }
  if (e.kind == event_kind::refused) {
    if (!e.status) spdlog::warn("{} (baton_fabric_bad_tags_total)", e.status.error().message);
    return true;
  }
  return false;  // RMA completions and notifies: the fabric thread's poll loop
}

void fabric_io::deliver(transport::event& e) {
  using transport::event_kind;
  if (e.kind == event_kind::message) {
    route(e);
    return;
  }
  if (e.kind == event_kind::write_done) {
    auto it = writes_in_flight_.find(e.op);
    if (it == writes_in_flight_.end()) return;
    if (!e.status) rma_failures_.add();
    if (it->second.reply_to) {
      caf::anon_send(it->second.reply_to, rma_done{it->second.tag, std::move(e.status)});
    }
    writes_in_flight_.erase(it);
    return;
  }
  if (e.kind == event_kind::notify) {
    rma_notify note{e.data, name_of(e.peer)};
    std::lock_guard lock(mutex_);
    if (notify_sink_) caf::anon_send(notify_sink_, std::move(note));
    return;
  }
  if (e.kind == event_kind::send_done && !e.status) send_failed(e);
  if (e.kind == event_kind::refused && !e.status)
    spdlog::warn("{} (baton_fabric_bad_tags_total)", e.status.error().message);
}

std::string fabric_io::name_of(transport::peer_id peer) const {
  for (const auto& [node, id] : peers_) {
    if (id == peer) return node;
  }
  for (const auto& [node, ids] : aliases_) {
    if (std::find(ids.begin(), ids.end(), peer) != ids.end()) return node;
  }
  return {};
}

bool fabric_io::being_connected(const std::string& node) const {
  auto it = connecting_.find(node);
  return it != connecting_.end() && !it->second.unanswered;
}

void fabric_io::fail_waiting(const std::string& node, const error& why) {
  if (auto it = waiting_grants_.find(node); it != waiting_grants_.end()) {
    for (auto& g : it->second) g.result->set_value(tl::unexpected(why));
    waiting_grants_.erase(it);
  }
  if (auto it = waiting_writes_.find(node); it != waiting_writes_.end()) {
    for (auto& w : it->second) report(w, tl::unexpected(why));
    waiting_writes_.erase(it);
  }
}

void fabric_io::serve_grants(const std::string& node) {
  auto it = waiting_grants_.find(node);
  if (it == waiting_grants_.end()) return;
  const auto peer = peers_.find(node);
  const bool connecting = being_connected(node);
  const auto now = transport::clock::now();
  std::deque<pending_grant> still;
  for (auto& g : it->second) {
    if (peer != peers_.end()) {
      g.result->set_value(endpoint_->grant(peer->second, g.slice));
    } else if (!connecting) {
      g.result->set_value(
          fail(errc::not_found, fmt::format("grant: {} is not attached or not reachable", node)));
    } else if (now >= g.until) {
      g.result->set_value(fail(
          errc::timed_out, fmt::format("grant: no connection to {} before the deadline", node)));
    } else {
      still.push_back(std::move(g));
    }
  }
  it->second.swap(still);
  if (it->second.empty()) waiting_grants_.erase(it);
}

void fabric_io::send_writes(const std::string& node) {
  auto it = waiting_writes_.find(node);
  if (it == waiting_writes_.end()) return;
  auto& queue = it->second;
  const auto peer = peers_.find(node);
  if (peer == peers_.end() && !being_connected(node)) {
    fail_waiting(node, error{errc::not_found,
                             fmt::format("rma write: {} is not attached or not reachable", node)});
    return;
  }
  const auto now = transport::clock::now();
  // Connected: post in order until the endpoint is full (completions retry the rest).
  while (peer != peers_.end() && !queue.empty()) {
    auto& w = queue.front();
    if (w.until <= now) {
      report(w, fail(errc::timed_out, fmt::format("rma write to {}: deadline passed", node)));
      queue.pop_front();
      continue;
    }
    auto op = endpoint_->write(w.source, w.target, w.until, w.notify);
    if (!op && op.error().code == errc::overloaded) break;
    if (op) {
      rma_writes_.add();
      writes_in_flight_[*op] = {w.reply_to, w.tag};
    } else {
      report(w, tl::unexpected(op.error()));
    }
    queue.pop_front();
  }
  // Whatever still waits (for the connection or for room) expires at its deadline.
  std::deque<pending_write> still;
  for (auto& w : queue) {
    if (w.until <= now) {
      report(w,
             fail(errc::timed_out,
                  fmt::format("rma write to {}: deadline passed while waiting for {}", node,
                              peer == peers_.end() ? "the connection" : "room in the endpoint")));
    } else {
      still.push_back(std::move(w));
    }
  }
  queue.swap(still);
  if (queue.empty()) waiting_writes_.erase(it);
}

void fabric_io::serve_waiting() {
  std::vector<std::string> nodes;
  for (const auto& [node, queue] : waiting_grants_) nodes.push_back(node);
  for (const auto& [node, queue] : waiting_writes_) nodes.push_back(node);
  for (const auto& node : nodes) {
    serve_grants(node);
    send_writes(node);
  }
}

void fabric_io::run() {
  std::array<transport::event, 64> events;
  std::vector<command> batch;
  while (!stop_.load()) {
    {
      std::lock_guard lock(mutex_);
      batch.swap(commands_);
    }
    for (auto& c : batch) execute(c);
    batch.clear();
    const auto n = endpoint_->poll(events);
    for (std::size_t i = 0; i < n; ++i) {
      try {  // the same boundary as on_event's, for transports without a progress thread
        deliver(events[i]);
      } catch (const std::exception& ex) {
        handler_failed(ex.what());
      }
    }
    if (!waiting_grants_.empty() || !waiting_writes_.empty()) serve_waiting();
    send_backlogs();
    if (n > 0) continue;
    bool idle = false;
    {
      std::lock_guard lock(mutex_);
      idle = commands_.empty();
    }
    retry_connects();
    std::chrono::milliseconds timeout =
        waiting_grants_.empty() && waiting_writes_.empty() ? 500ms : connect_retry;
    for (const auto& [node, pending] : connecting_) {
      timeout =
          std::clamp(std::chrono::ceil<std::chrono::milliseconds>(pending.retry_at - steady::now()),
                     std::chrono::milliseconds(1), timeout);
    }
    if (!progress_thread_) {  // the ticker's time is kept here
      const auto now = steady::now().time_since_epoch().count();
      auto at = tick_at_.load();
      if (at <= now && tick_at_.compare_exchange_strong(at, never)) {
        try {
          tick();
        } catch (const std::exception& ex) {
          handler_failed(ex.what());
        }
        continue;
      }
      if (at != never) {
        timeout = std::min(
            timeout, std::chrono::ceil<std::chrono::milliseconds>(steady::duration(at - now)));
      }
    }
    if (idle) (void)endpoint_->wait(timeout);
  }
}

}  // namespace baton::runtime
