@0xb3daf00d9b6741ed;
# The root of every node-to-node message (docs/wire-format.md).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";
using Membership = import "membership.capnp";
using Inference = import "inference.capnp";

struct Envelope {
  source @0 :Common.ActorAddress;
  target @1 :Common.ActorAddress;
  senderIncarnation @2 :UInt64;
  messageId @3 :UInt64;
  deadlineUnixUs @4 :UInt64;   # 0 = no deadline
  authTag @5 :Data;            # reserved for message authentication; empty for now

  body :union {
    join @6 :Membership.Join;
    joinReply @7 :Membership.JoinReply;
    heartbeat @8 :Membership.Heartbeat;
    leave @9 :Membership.Leave;
    admit @10 :Inference.Admit;
    reserve @11 :Inference.Reserve;
    prefill @12 :Inference.Prefill;
    prefillDone @13 :Inference.PrefillDone;
    tokens @14 :Inference.Tokens;
    finish @15 :Inference.Finish;
    cancel @16 :Inference.Cancel;
    abort @17 :Inference.Abort;
  }
}
