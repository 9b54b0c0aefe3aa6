#pragma once

// Hosts for tests and `baton chaos --netns` that need more than 127.0.0.1: Linux network
// namespaces joined by one
// bridge (in a namespace of its own), with IPv4 addresses in 10.77.0.0/24 that exist only
// inside them; nothing is added to the machine's own network. Needs root and iproute2
// (`ip netns`). On destruction every process still inside a namespace is killed and every
// namespace deleted; namespaces left behind by a test process that died (SIGKILL) are
// removed by the next lab. Not thread-safe: one thread drives a lab.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace baton::launcher {

class netns_lab {
 public:
  /// A lab whose namespaces are named "bwt<pid>-..." with its bridge up and no host yet.
  /// Fails (the caller skips) when `ip netns` is missing or not permitted.
  [[nodiscard]] static expected<std::unique_ptr<netns_lab>> create();
  ~netns_lab();
  netns_lab(const netns_lab&) = delete;
  netns_lab& operator=(const netns_lab&) = delete;

  /// Adds host `name` (a namespace with loopback up and one interface on the bridge) with
  /// `addresses`, each /24; every address must lie in 10.77.0.0/24.
  [[nodiscard]] expected<void> add_host(const std::string& name,
                                        const std::vector<std::string>& addresses);

  /// Takes host `name`'s port on the bridge down (a partition: nothing reaches it or leaves
  /// it, and its own interface stays up) or back up.
  [[nodiscard]] expected<void> set_link(const std::string& name, bool up);

  /// The argv that runs `/bin/sh -c script` inside host `name`'s namespace (the process
  /// that ends up running is the script's, so signals reach it).
  [[nodiscard]] std::vector<std::string> shell(const std::string& name,
                                               const std::string& script) const;

  /// Moves the calling thread into host `name`'s network namespace (threads it starts
  /// from then on are born there): the lab's hosts become reachable from it, and
  /// 127.0.0.1 is the host's own.
  [[nodiscard]] expected<void> enter(const std::string& name) const;

 private:
  netns_lab(std::string ip, std::string prefix);
  [[nodiscard]] std::string ns(const std::string& name) const { return prefix_ + name; }

  std::string ip_;                            ///< the ip binary
  std::string prefix_;                        ///< "bwt<pid>-"
  std::vector<std::string> namespaces_;       ///< created, the bridge's first
  std::map<std::string, std::string> ports_;  ///< each host's port on the bridge
};

}  // namespace baton::launcher
