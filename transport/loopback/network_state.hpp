// transport/loopback/network_state.hpp: internal to transport/loopback/.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "transport/grant_table.hpp"
#include "transport/loopback/network.hpp"

namespace baton::transport::loopback {

using buffer = std::vector<std::byte>;

struct region_memory {
  buffer bytes;
  std::uint64_t key = 0;
};

/// An operation waiting for its completion (or its deadline).
struct pending_op {
  event_kind kind = event_kind::send_done;
  peer_id peer = unknown_peer;
  deadline until{};
};

enum class packet_kind : std::uint8_t { message, write, read };

/// Something in flight between two nodes, delivered at `at`.
struct packet {
  clock::time_point at{};
  std::uint64_t seq = 0;
  packet_kind kind = packet_kind::message;
  std::size_t from = 0;
  std::size_t to = 0;
  buffer payload;                        // message bytes
  std::shared_ptr<region_memory> local;  // write source / read target
  std::uint64_t local_offset = 0;
  std::uint64_t remote_key = 0;
  std::uint64_t remote_offset = 0;
  std::uint64_t length = 0;
  std::optional<std::uint64_t> notify;
  op_id op{};
};

/// One endpoint's state inside the network.
struct node_state {
  address where;
  node_id id{};
  bool alive = true;
  endpoint_limits limits;
  std::vector<std::size_t> peers;  // peer_id -> node index
  grant_table grants{0};
  std::map<region_id, std::shared_ptr<region_memory>> regions;
  std::uint32_t next_region = 1;
  std::map<op_id, pending_op> pending;
  std::deque<event> events;
  std::size_t inflight = 0;
  bool interrupted = false;
  endpoint_stats stats;
};

struct network_state {
  std::mutex mu;
  std::condition_variable cv;
  std::mt19937_64 rng;
  fault_plan faults;
  std::vector<node_state> nodes;
  std::set<std::pair<std::size_t, std::size_t>> cut;
  std::multimap<std::pair<clock::time_point, std::uint64_t>, packet> in_flight;
  std::map<std::pair<std::size_t, std::size_t>, clock::time_point> last_delivery;
  std::uint64_t next_seq = 0;
  std::uint64_t next_op = 1;
  std::optional<clock::time_point> manual_now;  ///< set: time only moves by network::advance_to

  [[nodiscard]] clock::time_point now() const { return manual_now ? *manual_now : clock::now(); }

  [[nodiscard]] bool connected(std::size_t a, std::size_t b) const;
  [[nodiscard]] std::optional<std::size_t> find(const address& where) const;
  /// Index of `to` in `from`'s peer list, adding it if new.
  peer_id peer_of(std::size_t from, std::size_t to);
  /// Delivers everything due at `now`; caller holds mu.
  void pump(clock::time_point now);
  void deliver(packet& p);
  void push(std::size_t node, event ev);
};

}  // namespace baton::transport::loopback
