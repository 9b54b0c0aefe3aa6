#pragma once

#include <map>
#include <memory>
#include <string>

#include <caf/actor.hpp>

#include "actors/router_state.hpp"
#include "client/native_server.hpp"
#include "engine/tokenizer.hpp"
#include "runtime/node_context.hpp"

namespace baton::actors {

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
};

/// Spawns the router actor of this node: a thin shell around router_state that learns its
/// workers from membership and talks to clients through response streams. `tok` must
/// outlive the actor.
[[nodiscard]] caf::actor spawn_router(runtime::node_context& ctx, const engine::tokenizer& tok,
                                      router_options options);

/// The native server's view of a router actor: hands requests and cancellations to it.
/// The router is looked up by name on every call, so a restarted router takes over.
class router_gateway final : public client::generate_handler {
 public:
  explicit router_gateway(runtime::node_context& ctx) : ctx_(ctx) {}
  void start(const wire::generate_request& request,
             std::shared_ptr<client::response_stream> stream) override;
  void cancel(const client::response_stream& stream, client::cancel_reason reason) override;

 private:
  runtime::node_context& ctx_;
};

}  // namespace baton::actors
