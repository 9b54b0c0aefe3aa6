#include "schemas/samples.hpp"

namespace baton::wire {
namespace {

kv_descriptor sample_kv() {
  kv_descriptor kv;
  kv.node = "decode-0";
  kv.region_key = 0x9e3779b97f4a7c15;
  kv.offset = 64u << 10;
  kv.block_bytes = 16 * 5 * 2 * 32 * 4;  // 16 tokens x 5 layers x K,V x 32 floats
  kv.block_ids = {7, 8, 9};
  kv.length = std::uint64_t{kv.block_bytes} * kv.block_ids.size();
  kv.checksums = {0x1111, 0x2222, 0x3333};
  kv.fabric_node = 0x5bd1e9955bd1e995;
  return kv;
}

frame envelope(body b) {
  frame f;
  f.source = {"router-0", "router"};
  f.target = {"decode-0", "decode"};
  f.sender_incarnation = 3;
  f.message_id = 42;
  f.deadline_unix_us = 1'800'000'000'000'000;
  f.body = std::move(b);
  return f;
}

}  // namespace

std::vector<frame> sample_frames() {
  const std::vector<std::uint32_t> prompt = {1, 403, 407, 261, 378};
  const sampling params{0.8f, 0.95f, 7};
  const member prefill_node{"prefill-0",         1,
                            member_state::alive, node_kind::trainium,
                            "emulated:trn2",     {role::prefill, role::kv},
                            "127.0.0.1:7101",    "127.0.0.1:9101"};
  const member router_node{"router-0",
                           3,
                           member_state::suspect,
                           node_kind::cpu,
                           "cpu",
                           {role::router},
                           "127.0.0.1:7100",
                           "127.0.0.1:9100"};
  const std::vector<member> members = {router_node, prefill_node};
  const join j{
      prefill_node, wire_version, 0xb0a507e7ad0f6266, {16, 5, 4, 8, 4}, "baton-cpu/1 avx2"};

  std::vector<frame> frames;
  frames.push_back(envelope(j));
  frames.push_back(envelope(join_reply{true, "", members}));
  frames.push_back(envelope(heartbeat{17, false, 2, 480, members}));
  frames.push_back(envelope(leave{"drained for maintenance"}));
  frames.push_back(envelope(admit{request_id{1}, 0, prompt, 5, 95, params, "prefill-0"}));
  frames.push_back(envelope(prefill{request_id{1}, 0, prompt, 5, params, sample_kv(),
                                    actor_address{"decode-0", "decode"}}));
  frames.push_back(envelope(prefill_done{request_id{1}, 0, 365, 5, {0x1111, 0x2222, 0x3333}}));
  frames.push_back(
      envelope(token_batch{request_id{1}, 0, 6, {261, 3434, 278}, finish_reason::length}));
  frames.push_back(envelope(finish{request_id{1}, 0, finish_reason::length, 95}));
  frames.push_back(envelope(cancel{request_id{1}, "client disconnected"}));
  frames.push_back(envelope(
      abort_attempt{request_id{1}, 0, errc::timed_out, "RMA write to decode-0 timed out"}));
  frames.push_back(envelope(monitor{actor_address{"router-0", "router"}}));
  frames.push_back(envelope(down{actor_address{"decode-0", "decode"}, errc::disconnected,
                                 "node decode-0 declared dead"}));
  frames.push_back(envelope(failure{errc::not_found, "no actor 'decoder' on decode-0"}));
  frames.back().in_reply_to = 41;
  frames.push_back(envelope(credit{128}));
  frames.push_back(envelope(stream_window{request_id{1}, 0, 70}));

  return frames;
}

}  // namespace baton::wire
