#pragma once

// Where bridges hand encoded frames for the network: the fabric thread in a node
// process (runtime/fabric_io.hpp), a recording double in tests.

#include <chrono>
#include <string>

#include <caf/actor.hpp>

#include "schemas/codec.hpp"

namespace baton::runtime {

/// Thread-safe; calls never block on the network.
class frame_sink {
 public:
  virtual ~frame_sink() = default;

  /// Connects to `node` at `fabric_address` unless already connected, and delivers its
  /// frames to `bridge` (as raw_frame) from then on.
  virtual void attach(const std::string& node, const std::string& fabric_address,
                      caf::actor bridge) = 0;

  /// Queues one frame to `node`; frames to one node leave in the order posted. A frame
  /// to a node that is not attached is dropped and counted. One the transport has not
  /// taken by `until` (default, and at most: the sink's own send timeout) is dropped.
  virtual void post(const std::string& node, wire::encoded_frame frame,
                    std::chrono::steady_clock::time_point until = {}) = 0;

  /// Forgets `node` if `bridge` is still the one it delivers to: no more frames go to or
  /// come from it. A bridge that has been replaced (the node died and came back, and its
  /// old bridge's detach arrives after the new attach) detaches nothing.
  virtual void detach(const std::string& node, const caf::actor& bridge) = 0;
  /// Drops the transport's connection to `node` so the next frame opens a new one (a node
  /// declared dead may have been cut off, and an old connection recover late).
  virtual void reconnect(const std::string& /*node*/) {}
};

}  // namespace baton::runtime
