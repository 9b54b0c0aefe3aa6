@0xc575aaee594353ca;
# Membership: join handshake, SWIM-style probes with piggybacked updates, leave.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";

enum NodeKind {
  trainium @0;
  waferScale @1;
  cpu @2;
}

enum Role {
  router @0;
  prefill @1;
  decode @2;
  kv @3;
}

enum MemberState {
  alive @0;
  suspect @1;
  dead @2;
  left @3;
}

# One entry of the membership table, as disseminated by gossip.
struct MemberUpdate {
  node @0 :Text;
  incarnation @1 :UInt64;
  state @2 :MemberState;
}

# Sent to a seed by a node that wants to join. A node whose wire version, model hash,
# KV layout or numerics fingerprint does not match the cluster's is refused.
struct Join {
  node @0 :Text;
  kind @1 :NodeKind;
  device @2 :Text;             # "cpu" or "emulated:PROFILE"
  roles @3 :List(Role);
  fabricAddress @4 :Text;
  adminAddress @5 :Text;
  wireVersion @6 :UInt16;
  modelHash @7 :UInt64;
  kvLayout @8 :Common.KvLayout;
  numericsFingerprint @9 :Text;
}

struct JoinReply {
  accepted @0 :Bool;
  reason @1 :Text;             # why a join was refused; empty when accepted
  members @2 :List(MemberUpdate);
}

# A probe (or its acknowledgement) carrying the sender's load and recent updates.
struct Heartbeat {
  sequence @0 :UInt64;
  isAck @1 :Bool;
  queueDepth @2 :UInt32;
  freeKvBlocks @3 :UInt32;
  updates @4 :List(MemberUpdate);
}

struct Leave {
  reason @0 :Text;
}
