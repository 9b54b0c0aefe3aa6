@0xba8b5c32d756b9f5;
# Inference control between router, prefill and decode actors. Every message names the
# request and the attempt (a retry or a migration is a new attempt), so stale messages
# from an earlier attempt are recognised and dropped.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";

# How tokens are picked: engine::sampling_options (engine/sampler.hpp) defines each field;
# every default leaves llama2.c's arithmetic untouched. Fields 3.. came with wire version 3.
struct Sampling {
  temperature @0 :Float32;     # 0 = greedy
  topP @1 :Float32;            # in (0, 1]; 1 = plain sampling
  seed @2 :UInt64;
  topK @3 :UInt32;             # 0 = off
  minP @4 :Float32;            # 0 = off
  frequencyPenalty @5 :Float32;
  presencePenalty @6 :Float32;
  repetitionPenalty @7 :Float32 = 1.0;
  logitBias @8 :List(LogitBias);
  minTokens @9 :UInt32;
  ignoreEos @10 :Bool;
  logprobs @11 :Bool;
  topLogprobs @12 :UInt32;     # at most 20
}

struct LogitBias {
  token @0 :UInt32;
  bias @1 :Float32;            # in [-100, 100]
}

# A sampled token's log-probability and the most likely alternatives, most likely first.
struct TokenLogprobs {
  token @0 :UInt32;
  logprob @1 :Float32;
  top @2 :List(TopLogprob);
}

struct TopLogprob {
  token @0 :UInt32;
  logprob @1 :Float32;
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
  choice @7 :UInt32;           # the first of the request's choices this attempt serves
  choices @8 :UInt32;          # how many, sharing the prompt (0 reads as 1)
  writerIncarnation @9 :UInt64;  # the writer's incarnation the router placed on (0: any)
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
  choice @7 :UInt32;           # first tokens to pick: one per choice, as in the admit
  choices @8 :UInt32;
}

# Prefill -> decode, after every RMA write of the attempt has completed.
struct PrefillDone {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  firstToken @2 :UInt32;       # the first choice's
  position @3 :UInt32;         # the position of firstToken
  checksums @4 :List(UInt64);  # xxh3-64 per written block, in blockIds order
  moreFirstTokens @5 :List(UInt32);  # the next choices'
  logprobs @6 :List(TokenLogprobs);  # empty, or one per first token
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
  choice @6 :UInt32;
  logprobs @7 :List(TokenLogprobs);  # empty, or one per token
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
  choice @4 :UInt32;
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
  attempt @2 :UInt32;          # only this attempt; 0 = every attempt of the request
}

# One choice a router resuming a request still needs, and the position its client
# expects next (the prompt's tokens plus those it has received).
struct ClaimChoice {
  choice @0 :UInt32;
  position @1 :UInt32;
}

# Router -> every decode node, resuming a request whose router died (the client came back
# with the first router's request id): a decode node holding that request's sequences for
# a router that is gone hands them over (no recompute). It renumbers each attempt it holds
# `attemptBase` + i, sends the tokens from each choice's position on, and answers Claimed.
struct Claim {
  requestId @0 :UInt64;        # the first router's request id
  newRequestId @1 :UInt64;     # the claiming router's
  attemptBase @2 :UInt32;
  choices @3 :List(ClaimChoice);
}

# One attempt a decode node handed over: its new number, the choices it serves, and the
# KV blocks it commits.
struct ClaimedAttempt {
  attempt @0 :UInt32;
  choices @1 :List(UInt32);
  blocks @2 :UInt32;
}

# Decode -> the claiming router: what it took over (maybe nothing).
struct Claimed {
  requestId @0 :UInt64;        # the claiming router's id
  attempts @1 :List(ClaimedAttempt);
}

# Any actor -> peer: this attempt ended in failure. A prefill sends it only after every
# RMA write of the attempt has completed or been abandoned.
struct Abort {
  requestId @0 :UInt64;
  attempt @1 :UInt32;
  code @2 :Common.ErrorCode;
  message @3 :Text;
}
