@0xc7ef6ee848745ab9;
# The actor runtime's own messages between nodes: remote monitors, delivery failures and
# flow-control credit. They travel in the same Envelope as everything else.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";

# Asks the target node to report when the actor `target` (in the envelope) terminates.
struct Monitor {
  watcher @0 :Common.ActorAddress;
}

# The actor `actor` is gone; sent to each remote watcher once.
struct Down {
  actor @0 :Common.ActorAddress;
  code @1 :Common.ErrorCode;
  reason @2 :Text;
}

# A frame could not be delivered or answered (unknown target actor, overload, expired
# deadline); inReplyTo names the frame.
struct Failure {
  code @0 :Common.ErrorCode;
  message @1 :Text;
}

# The receiver has delivered `frames` more frames from this sender: that many may follow.
struct Credit {
  frames @0 :UInt32;
}
