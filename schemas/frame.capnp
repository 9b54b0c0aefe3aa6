@0xb3daf00d9b6741ed;
# The root of every node-to-node message (docs/wire-format.md).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";
using Membership = import "membership.capnp";
using Inference = import "inference.capnp";
using Runtime = import "runtime.capnp";

struct Envelope {
  source @0 :Common.ActorAddress;
  target @1 :Common.ActorAddress;
  senderIncarnation @2 :UInt64;
  messageId @3 :UInt64;
  deadlineUnixUs @4 :UInt64;   # 0 = no deadline
  authTag @5 :Data;            # reserved for message authentication; empty for now
  inReplyTo @17 :UInt64;       # the messageId this frame answers; 0 = not a reply
  targetIncarnation @25 :UInt64;  # the target node's incarnation the sender knew; 0 = any

  body :union {
    join @6 :Membership.Join;
    joinReply @7 :Membership.JoinReply;
    heartbeat @8 :Membership.Heartbeat;
    leave @9 :Membership.Leave;
    admit @10 :Inference.Admit;
    prefill @11 :Inference.Prefill;
    prefillDone @12 :Inference.PrefillDone;
    tokens @13 :Inference.Tokens;
    finish @14 :Inference.Finish;
    cancel @15 :Inference.Cancel;
    abort @16 :Inference.Abort;
    monitor @18 :Runtime.Monitor;
    down @19 :Runtime.Down;
    failure @20 :Runtime.Failure;
    credit @21 :Runtime.Credit;
    window @22 :Inference.Window;
    claim @23 :Inference.Claim;
    claimed @24 :Inference.Claimed;
  }
}
