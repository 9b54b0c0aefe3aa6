// transport/loopback/loopback_endpoint.hpp: internal to transport/loopback/.
#pragma once

#include <memory>

#include "transport/endpoint.hpp"

namespace baton::transport::loopback {

struct network_state;
struct node_state;

/// One endpoint of a loopback network: node `index` of `state`. Same contract as
/// endpoint; see network for threading and faults.
class loopback_endpoint final : public endpoint {
 public:
  loopback_endpoint(std::shared_ptr<network_state> state, std::size_t index);
  ~loopback_endpoint() override;
  loopback_endpoint(const loopback_endpoint&) = delete;
  loopback_endpoint& operator=(const loopback_endpoint&) = delete;

  address local_address() const override;
  node_id local_node() const override;
  const endpoint_limits& limits() const override { return limits_; }
  expected<peer_id> add_peer(const address& peer, deadline until) override;
  expected<region_id> allocate_region(std::size_t bytes) override;
  std::span<std::byte> region_bytes(region_id region) override;
  expected<void> free_region(region_id region) override;
  expected<remote_slice> grant(peer_id peer, const local_slice& slice) override;
  expected<op_id> send(peer_id to, std::span<const std::byte> bytes, deadline until) override;
  expected<op_id> write(const local_slice& source, const remote_slice& target, deadline until,
                        std::optional<std::uint64_t> notify) override;
  expected<op_id> read(const local_slice& target, const remote_slice& source,
                       deadline until) override;
  std::size_t poll(std::span<event> out) override;
  bool wait(std::chrono::milliseconds timeout) override;
  void interrupt() override;
  endpoint_stats stats() const override;

 private:
  [[nodiscard]] expected<op_id> rma(event_kind kind, const local_slice& local,
                                    const remote_slice& remote, deadline until,
                                    std::optional<std::uint64_t> notify);
  [[nodiscard]] node_state& self();
  void expire(clock::time_point now);

  std::shared_ptr<network_state> state_;
  std::size_t index_;
  endpoint_limits limits_;
};

}  // namespace baton::transport::loopback
