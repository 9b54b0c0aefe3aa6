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

# A node as the membership table knows it: who it is, where to reach it, and its state
# at an incarnation. Disseminated by gossip; a higher incarnation overrides a lower one.
struct Member {
  node @0 :Text;
  incarnation @1 :UInt64;
  state @2 :MemberState;
  kind @3 :NodeKind;
  device @4 :Text;             # "cpu" or "emulated:PROFILE"
  roles @5 :List(Role);
  fabricAddress @6 :Text;
  adminAddress @7 :Text;
  draining @8 :Bool;           # takes no new work: finishing what it has, then leaving
  kvBlocks @9 :UInt32;         # KV pool size in blocks (decode nodes), for placement
  suspecter @10 :Text;         # a suspect update: the node that suspects it
  restarts @11 :UInt32;        # times its supervisor (baton up, systemd) restarted it
  started @12 :UInt64;         # the incarnation its process started with (0: not said)
}

# The join handshake's proof of the cluster secret (runtime/membership.hpp): a fresh
# nonce of its sender, the other side's nonce it answers, and an HMAC-SHA256 under the
# secret; all zero in a cluster without a secret, and the proof zero in a join that asks
# for a challenge.
struct JoinAuth {
  nonce0 @0 :UInt64;
  nonce1 @1 :UInt64;
  peer0 @2 :UInt64;
  peer1 @3 :UInt64;
  proof0 @4 :UInt64;
  proof1 @5 :UInt64;
  proof2 @6 :UInt64;
  proof3 @7 :UInt64;
}

# Sent to a seed by a node that wants to join. A node whose wire version, model hash,
# KV layout or numerics fingerprint does not match the cluster's is refused.
struct Join {
  member @0 :Member;
  wireVersion @1 :UInt16;
  modelHash @2 :UInt64;
  kvLayout @3 :Common.KvLayout;
  numericsFingerprint @4 :Text;
  auth @5 :JoinAuth;
}

struct JoinReply {
  accepted @0 :Bool;
  reason @1 :Text;             # why a join was refused; empty when accepted
  members @2 :List(Member);
  challenge @3 :Bool;          # neither accepted nor refused: answer `auth`'s nonce
  auth @4 :JoinAuth;           # the seed's nonce and its proof of the secret
}

# A probe (or its acknowledgement) carrying the sender's load and recent updates.
struct Heartbeat {
  sequence @0 :UInt64;
  isAck @1 :Bool;
  queueDepth @2 :UInt32;
  freeKvBlocks @3 :UInt32;
  updates @4 :List(Member);
}

struct Leave {
  reason @0 :Text;
}
