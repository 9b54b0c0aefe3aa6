@0xe1b581179b6aee4b;
# Types shared by the membership and inference messages.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire::gen");

# An actor by location: the node's name from the topology and the actor's name there.
struct ActorAddress {
  node @0 :Text;
  actor @1 :Text;
}

# What the compute engine looks like to a peer: nodes whose KV layouts differ cannot
# exchange KV blocks.
struct KvLayout {
  blockTokens @0 :UInt32;   # tokens per KV block
  layers @1 :UInt32;
  kvHeads @2 :UInt32;
  headDim @3 :UInt32;
  elementBytes @4 :UInt32;  # 4 for fp32, 2 for bf16
}

# Where a request's KV blocks live and may be written or read by RMA. The blocks are
# those of one KV pool inside one registered region: block id b occupies
# [offset + b * blockBytes, offset + (b + 1) * blockBytes) of the region, so the ids need
# not be contiguous, and a writer computes each (layer, block) slice's address from them.
struct KvDescriptor {
  node @0 :Text;             # the node whose memory region this is
  regionKey @1 :UInt64;      # the registered region's 64-bit key
  offset @2 :UInt64;         # byte offset of block 0 of the pool within the region
  length @3 :UInt64;         # blockBytes * blockIds.length (the bytes the blocks hold)
  blockBytes @4 :UInt32;     # bytes of one block, all layers
  blockIds @5 :List(UInt32);
  checksums @6 :List(UInt64);  # xxh3-64 per block, or empty when not yet known
  fabricNode @7 :UInt64;     # the owning endpoint's transport node id: what RMA
                             # descriptors (transport::remote_slice::node) name
}

# What the caller should do about a failure; mirrors baton::errc.
enum ErrorCode {
  overloaded @0;
  timedOut @1;
  disconnected @2;
  invalidArgument @3;
  notFound @4;
  failed @5;
  unavailable @6;
}
