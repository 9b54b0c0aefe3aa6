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
  inReplyTo @18 :UInt64;       # the messageId this frame answers; 0 = not a reply

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
    monitor @19 :Runtime.Monitor;
    down @20 :Runtime.Down;
    failure @21 :Runtime.Failure;
    credit @22 :Runtime.Credit;
    window @23 :Inference.Window;
  }
}
