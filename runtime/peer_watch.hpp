#pragma once

// Fast, honest evidence that a member's process is gone: one idle TCP connection to each
// member's admin port. When it closes (the peer's process exited, or its admin port
// closed an idle connection), it is opened again at once; if that is refused, nothing
// listens there any more: the process is gone, and `gone` is told (membership then
// declares the member dead within unreachable_confirm unless it refutes). A crashed or
// cut-off host refuses nothing; probes find those. The transport cannot give this
// evidence itself: libfabric's tcp provider holds sends to a dead peer while it reconnects.
//
// Dead members (not departed ones) are watched too, for the network's return: every 500 ms
// a connect with a 500 ms timeout; when one succeeds after one timed out or found no
// route (even once gossip has revived the member), `back` is told: a partition ended,
// and the fabric connection to it, whose connect or retransmissions started while the
// network was down, is replaced instead of waiting out TCP's backoff.
//
// Only members whose admin host is their fabric host are watched, so an admin port bound to
// loopback on another machine is never mistaken for a dead process; a member that refutes
// a report (a new incarnation of the same process) is not reported again.

#include <functional>
#include <memory>
#include <string>

#include "schemas/membership.hpp"

namespace baton::runtime {

class peer_watch {
 public:
  /// `self` is never watched. `gone` and `back` run on the watch's own thread.
  peer_watch(std::string self, std::function<void(const std::string& node)> gone,
             std::function<void(const std::string& node)> back);
  /// Closes every connection and joins the thread.
  ~peer_watch();
  peer_watch(const peer_watch&) = delete;
  peer_watch& operator=(const peer_watch&) = delete;

  /// What membership knows of `m` now; from any thread, never blocks. Alive and suspect
  /// members are watched for their process's end, dead ones for the network's return;
  /// departed ones are forgotten.
  void update(const wire::member& m);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace baton::runtime
