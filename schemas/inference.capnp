@0xba8b5c32d756b9f5;
# Inference control between router, prefill and decode actors. Every message names the
# request and the attempt (a retry or a migration is a new attempt), so stale messages
# from an earlier attempt are recognised and dropped.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";

struct Sampling {
  temperature @0 :Float32;     # 0 = greedy
  topP @1 :Float32;            # in (0, 1]; 1 = plain sampling
  seed @2 :UInt64;
}

# Router -> decode: reserve KV for a request. With a `writer`, the decode node sends the
# prefill job (below) to the prefill actor on that node, granting it RMA writes into the
# reserved blocks; without one, it computes the prompt itself. `tokens` holds the prompt
# followed by any tokens already delivered to the client.
struct Admit {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  tokens @2 :List(UInt32);
  promptLength @3 :UInt32;
  maxTokens @4 :UInt32;
  sampling @5 :Sampling;
  writer @6 :Text;             # node granted RMA writes into the reserved blocks
}

# Decode -> prefill: compute `tokens` and write their KV into `target`.
struct Prefill {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  tokens @2 :List(UInt32);
  promptLength @3 :UInt32;
  sampling @4 :Sampling;
  target @5 :Common.KvDescriptor;
  decode @6 :Common.ActorAddress;   # where prefill-done goes
}

# Prefill -> decode, after every RMA write of the attempt has completed.
struct PrefillDone {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  firstToken @2 :UInt32;
  position @3 :UInt32;         # the position of firstToken
  checksums @4 :List(UInt64);  # xxh3-64 per written block, in blockIds order
}

# Decode -> router: tokens at positions firstPosition, firstPosition + 1, ... When
# `finished`, the attempt ends after them for `reason` (no Finish follows).
struct Tokens {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  firstPosition @2 :UInt32;
  tokens @3 :List(UInt32);
  finished @4 :Bool;
  reason @5 :FinishReason;
}

enum FinishReason {
  length @0;                   # max tokens or the sequence length reached
  endOfText @1;                # the model produced BOS/EOS
  stop @2;                     # a stop sequence matched
  cancelled @3;
}

struct Finish {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  reason @2 :FinishReason;
  generatedTokens @3 :UInt32;
}

# Router -> decode: the client has room for tokens at positions below `limit`; a decode
# node never generates past the latest limit of an attempt (back-pressure from a slow
# client). An attempt starts with a window of its admit's tokens plus 64 positions
# (wire::initial_stream_window).
struct Window {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  limit @2 :UInt32;
}

# Router -> prefill or decode: the client is gone or gave up.
struct Cancel {
  requestId @0 :UInt64;
  reason @1 :Text;
}

# Any actor -> peer: this attempt ended in failure. A prefill sends it only after every
# RMA write of the attempt has completed or been abandoned.
struct Abort {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  code @2 :Common.ErrorCode;
  message @3 :Text;
}
