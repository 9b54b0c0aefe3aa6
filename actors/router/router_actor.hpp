#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <caf/actor.hpp>

#include "actors/router/router_state.hpp"
#include "actors/shell.hpp"
#include "engine/tokenizer.hpp"
#include "frontend/service.hpp"
#include "runtime/node_context.hpp"

namespace baton::actors {

class router_core;

/// The node's running router, where its client servers find it: set by the router actor
/// while it runs (a restarted router takes over).
struct router_entry {
  std::mutex mutex;
  std::shared_ptr<router_core> core;
  /// The node drains: new requests are refused (errc::disconnected, so that a router
  /// client tries the next router).
  std::atomic<bool> draining{false};
};

struct router_options {
  router_config config;
  std::int32_t seq_len = 0;                      ///< the model's context
  std::size_t block_tokens = 16;                 ///< KV block size of every node
  std::map<std::string, std::size_t> kv_blocks;  ///< decode nodes' pool sizes, by name
  /// The client port, announced as "router ready native=ADDRESS" once both roles have a
  /// worker (what `baton up` waits for).
  std::string native_address;
  /// The HTTP API's address ("http://HOST:PORT"), added to that line; empty: none.
  std::string http_address;
  /// Where the router registers for the client servers (router_gateway); may be null.
  std::shared_ptr<router_entry> entry;
  crash_fault crash;  ///< chaos tests only: the actor crashes at its n-th client request
};

/// Spawns the router actor of this node: a thin shell around router_state that learns its
/// workers from membership and talks to clients through response streams. The state runs
/// on the thread each event arrives on (a client's I/O thread, the transport's progress
/// thread, the actor), under a lock, so a request never waits for a CAF worker to wake.
/// `tok` must outlive the actor.
[[nodiscard]] caf::actor spawn_router(runtime::node_context& ctx, const engine::tokenizer& tok,
                                      router_options options);

/// The client servers' view of the router: hands requests and cancellations to it on the
/// server's I/O thread. The router is looked up in `entry` on every call, so a restarted
/// router takes over.
class router_gateway final : public frontend::generate_handler {
 public:
  explicit router_gateway(std::shared_ptr<router_entry> entry) : entry_(std::move(entry)) {}
  void start(const wire::generate_request& request,
             std::shared_ptr<frontend::response_stream> stream) override;
  void cancel(const frontend::response_stream& stream, frontend::cancel_reason reason) override;

 private:
  std::shared_ptr<router_entry> entry_;
};

}  // namespace baton::actors
