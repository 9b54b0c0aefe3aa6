@0xd987a17a1e0472af;
# The native client protocol between a router client and a router (docs/wire-format.md,
# "Native client protocol"). On a byte stream each message is a 4-byte little-endian
# length followed by one ClientMessage in Cap'n Proto's flat serialization.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");
using Common = import "common.capnp";
using Inference = import "inference.capnp";

# Client -> router: generate text for a prompt.
struct GenerateRequest {
  clientTag @0 :UInt64;        # chosen by the client; names the request on this connection
  prompt @1 :Text;
  maxTokens @2 :UInt32;        # 0 = up to the position limit
  maxPositions @3 :UInt32;     # positions including the prompt (llama2.c -n); 0 = seq_len
  sampling @4 :Inference.Sampling;
  hasSeed @5 :Bool;            # false: the router picks a seed and reports it in Accepted
  timeoutMs @6 :UInt32;        # 0 = the server's default
  n @7 :UInt32;                # choices (OpenAI's n), each seeded from the seed; 0 reads as 1
  resume @8 :Resume;           # set: this continues a request whose router went away
  apiKey @9 :Text;             # the router's API keys ([router] api_keys): only over TLS or loopback
}

# What a client has of one choice of a request it resumes.
struct ResumeChoice {
  tokens @0 :List(UInt32);     # every token received, in position order
  done @1 :Bool;               # the choice ended (it said so with a chunk's finish)
  reason @2 :Inference.FinishReason;
}

# A request resumed on another router: the first router's request id (decode nodes keep
# its sequences a while for whoever claims them), and, per choice, what arrived. The
# request carries the seed the first router assigned (hasSeed) and the same parameters.
struct Resume {
  requestId @0 :UInt64;
  choices @1 :List(ResumeChoice);  # one per choice, n of them
}

# Client -> router: stop a request; the router answers with Finished(cancelled).
struct CancelRequest {
  clientTag @0 :UInt64;
}

# Router -> client: the request was admitted.
struct Accepted {
  clientTag @0 :UInt64;
  requestId @1 :UInt64;
  seed @2 :UInt64;             # the seed in use (assigned when the request had none)
  promptTokens @3 :UInt32;
  promptText @4 :Text;         # the prompt pieces, as llama2.c echoes them
  prefillNode @5 :Text;
  decodeNode @6 :Text;
  placement @7 :Text;          # "disaggregated", "prefill-on-decode", ...
}

# Router -> client: tokens of choice `choice` at firstPosition, firstPosition + 1, ... and
# their text. With `choiceFinished`, that choice ended after them for `reason` (then the
# chunk may hold no token); a request of one choice ends with Finished only.
struct TokenChunk {
  clientTag @0 :UInt64;
  firstPosition @1 :UInt32;
  tokens @2 :List(UInt32);
  text @3 :Text;
  choice @4 :UInt32;
  logprobs @5 :List(ClientLogprobs);  # empty, or one per token
  choiceFinished @6 :Bool;
  reason @7 :Inference.FinishReason;
}

# A token's log-probability, its text, and the most likely alternatives.
struct ClientLogprobs {
  token @0 :UInt32;
  logprob @1 :Float32;
  text @2 :Data;               # the token's bytes (a piece of a UTF-8 character, maybe)
  top @3 :List(ClientTopLogprob);
}

struct ClientTopLogprob {
  token @0 :UInt32;
  logprob @1 :Float32;
  text @2 :Data;
}

# Router -> client: the request ended normally (or was cancelled).
struct Finished {
  clientTag @0 :UInt64;
  reason @1 :Inference.FinishReason;
  promptTokens @2 :UInt32;
  completionTokens @3 :UInt32;
  routerMicros @4 :UInt32;     # time some message of the request was inside the router
                               # process (docs/serving.md, "Router overhead")
}

# Router -> client: the request failed or was refused; nothing more follows for it.
struct Rejected {
  clientTag @0 :UInt64;        # 0 when the failure concerns the connection, not a request
  code @1 :Common.ErrorCode;
  message @2 :Text;
}

struct ClientMessage {
  union {
    generate @0 :GenerateRequest;
    cancel @1 :CancelRequest;
    accepted @2 :Accepted;
    tokens @3 :TokenChunk;
    finished @4 :Finished;
    rejected @5 :Rejected;
  }
}
