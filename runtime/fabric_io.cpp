#include "runtime/fabric_io.hpp"

#include <array>

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
constexpr auto connect_give_up = 10s;
constexpr auto send_timeout = 5s;
constexpr std::size_t max_backlog_frames = 8192;  // per peer, waiting to be sent

}  // namespace

fabric_io::fabric_io(std::unique_ptr<transport::endpoint> endpoint, metrics_registry& metrics)
    : endpoint_(std::move(endpoint)),
      local_address_(endpoint_->local_address()),
      frames_sent_(metrics.get_counter("baton_fabric_frames_sent_total", "Frames posted.")),
      frames_received_(
          metrics.get_counter("baton_fabric_frames_received_total", "Frames received.")),
      send_failures_(metrics.get_counter("baton_fabric_send_failures_total",
                                         "Frames that could not be sent (peer gone, timeout).")),
      thread_([this] { run(); }) {}

fabric_io::~fabric_io() {
  stop_.store(true);
  endpoint_->interrupt();
  thread_.join();
}

void fabric_io::set_hub(caf::actor hub) {
  std::lock_guard lock(mutex_);
  hub_ = std::move(hub);
}

void fabric_io::push(command c) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(std::move(c));
  }
  endpoint_->interrupt();
}

void fabric_io::attach(const std::string& node, const std::string& fabric_address,
                       caf::actor bridge) {
  push({command::kind::attach, node, fabric_address, std::move(bridge), {}, {}});
}

void fabric_io::post(const std::string& node, wire::encoded_frame frame) {
  push({command::kind::post, node, {}, {}, std::move(frame), {}});
}

void fabric_io::detach(const std::string& node) {
  push({command::kind::detach, node, {}, {}, {}, {}});
}

void fabric_io::bind(const std::string& node, transport::peer_id peer) {
  push({command::kind::bind, node, {}, {}, {}, peer});
}

void fabric_io::execute(command& c) {
  switch (c.what) {
    case command::kind::attach:
      connecting_[c.node] = {c.address, c.bridge, {}, transport::clock::now() + connect_give_up};
      connect(c.node, c.address, c.bridge);
      return;
    case command::kind::post: {
      auto& queue = backlog_[c.node];
      if (queue.size() >= max_backlog_frames) {
        send_failures_.add();
        return;
      }
      queue.push_back(std::move(c.frame));
      send_backlog(c.node);
      return;
    }
    case command::kind::detach:
      if (auto it = peers_.find(c.node); it != peers_.end()) routes_.erase(it->second);
      for (auto id : aliases_[c.node]) routes_.erase(id);
      peers_.erase(c.node);
      aliases_.erase(c.node);
      connecting_.erase(c.node);
      bridges_.erase(c.node);
      backlog_.erase(c.node);
      return;
    case command::kind::bind:
      aliases_[c.node].push_back(c.peer);
      if (auto it = bridges_.find(c.node); it != bridges_.end()) routes_[c.peer] = it->second;
      return;
  }
}

void fabric_io::connect(const std::string& node, const std::string& address, caf::actor bridge) {
  auto peer = endpoint_->add_peer({address}, transport::clock::now() + connect_attempt);
  if (!peer) {
    auto& pending = connecting_[node];
    if (peer.error().code != errc::timed_out || transport::clock::now() > pending.give_up_at) {
      spdlog::warn("cannot reach {} at {}: {}", node, address, peer.error().message);
      connecting_.erase(node);
      return;
    }
    pending.retry_at = transport::clock::now() + connect_retry;
    return;
  }
  connecting_.erase(node);
  peers_[node] = *peer;
  bridges_[node] = bridge;
  routes_[*peer] = bridge;
  for (auto id : aliases_[node]) routes_[id] = bridge;
  send_backlog(node);
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

void fabric_io::send_backlog(const std::string& node) {
  auto peer = peers_.find(node);
  if (peer == peers_.end()) return;  // not connected yet: the attach sends it
  auto& queue = backlog_[node];
  while (!queue.empty()) {
    auto sent = endpoint_->send(peer->second, queue.front().bytes(),
                                transport::clock::now() + send_timeout);
    if (!sent && sent.error().code == errc::overloaded) return;  // retried on completions
    if (sent) {
      frames_sent_.add();
    } else {
      send_failures_.add();
    }
    queue.pop_front();
  }
}

void fabric_io::deliver(transport::event& e) {
  using transport::event_kind;
  if (e.kind == event_kind::message) {
    frames_received_.add();
    auto bytes = std::make_shared<const std::vector<std::byte>>(std::move(e.payload));
    if (auto route = routes_.find(e.peer); route != routes_.end()) {
      caf::anon_send(route->second, raw_frame{std::move(bytes)});
      return;
    }
    std::lock_guard lock(mutex_);
    if (hub_) caf::anon_send(hub_, raw_frame{std::move(bytes)}, e.peer);
    return;
  }
  if (e.kind == event_kind::send_done && !e.status) send_failures_.add();
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
    for (std::size_t i = 0; i < n; ++i) deliver(events[i]);
    if (n > 0) {
      for (auto& [node, queue] : backlog_) {
        if (!queue.empty()) send_backlog(node);
      }
      continue;
    }
    bool idle = false;
    {
      std::lock_guard lock(mutex_);
      idle = commands_.empty();
    }
    retry_connects();
    if (idle) (void)endpoint_->wait(connecting_.empty() ? 500ms : connect_retry);
  }
}

}  // namespace baton::runtime
