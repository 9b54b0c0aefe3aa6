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
  f.target_incarnation = 5;
  f.message_id = 42;
  f.deadline_unix_us = 1'800'000'000'000'000;
  f.body = std::move(b);
  return f;
}

}  // namespace

std::vector<frame> sample_frames() {
  const std::vector<std::uint32_t> prompt = {1, 403, 407, 261, 378};
  sampling params{0.8f, 0.95f, 7};
  params.top_k = 40;
  params.min_p = 0.05f;
  params.frequency_penalty = 0.5f;
  params.presence_penalty = -0.25f;
  params.repetition_penalty = 1.1f;
  params.logit_bias = {{13, 5.0f}, {2, -100.0f}};
  params.min_tokens = 3;
  params.logprobs = true;
  params.top_logprobs = 2;
  const std::vector<token_logprobs> logprobs = {{261, -0.25f, {{261, -0.25f}, {278, -1.75f}}},
                                                {3434, -2.5f, {{99, -0.5f}, {3434, -2.5f}}},
                                                {278, -0.125f, {{278, -0.125f}, {1, -3.0f}}}};
  const member prefill_node{"prefill-0",
                            1,
                            member_state::alive,
                            node_kind::trainium,
                            "emulated:trn2",
                            {role::prefill, role::kv},
                            "127.0.0.1:7101",
                            "127.0.0.1:9101",
                            true,
                            4096,
                            "",
                            2};
  const member router_node{"router-0",
                           3,
                           member_state::suspect,
                           node_kind::cpu,
                           "cpu",
                           {role::router},
                           "127.0.0.1:7100",
                           "127.0.0.1:9100",
                           false,
                           0,
                           "decode-1",
                           0};
  const std::vector<member> members = {router_node, prefill_node};
  const join j{prefill_node,       wire_version,
               0xb0a507e7ad0f6266, {16, 5, 4, 8, 4},
               "baton-cpu/1 avx2", {{0x1111, 0x2222}, {0x5555, 0x6666}, {0xa1, 0xa2, 0xa3, 0xa4}}};

  std::vector<frame> frames;
  frames.push_back(envelope(j));
  // Every field set (a challenge is never accepted too; the codec does not care).
  frames.push_back(envelope(
      join_reply{true, "", members, true, {{0x3333, 0x4444}, {0x1111, 0x2222}, {1, 2, 3, 4}}}));
  frames.push_back(envelope(heartbeat{17, false, 2, 480, members}));
  frames.push_back(envelope(leave{"drained for maintenance"}));
  frames.push_back(envelope(
      admit{request_id{1}, 0, prompt, 5, 95, params, "prefill-0", 0, 3, 1796665805471868}));
  frames.push_back(envelope(prefill{request_id{1}, 0, prompt, 5, params, sample_kv(),
                                    actor_address{"decode-0", "decode"}, 0, 3}));
  frames.push_back(envelope(prefill_done{request_id{1},
                                         0,
                                         {365, 12, 365},
                                         5,
                                         {0x1111, 0x2222, 0x3333},
                                         {logprobs[0], logprobs[1], logprobs[2]}}));
  frames.push_back(envelope(
      token_batch{request_id{1}, 0, 6, {261, 3434, 278}, finish_reason::length, 2, logprobs}));
  frames.push_back(envelope(finish{request_id{1}, 0, finish_reason::length, 95, 1}));
  frames.push_back(envelope(cancel{request_id{1}, "client disconnected", 4}));
  frames.push_back(envelope(
      abort_attempt{request_id{1}, 0, errc::timed_out, "RMA write to decode-0 timed out"}));
  frames.push_back(envelope(monitor{actor_address{"router-0", "router"}}));
  frames.push_back(envelope(down{actor_address{"decode-0", "decode"}, errc::disconnected,
                                 "node decode-0 declared dead"}));
  frames.push_back(envelope(failure{errc::not_found, "no actor 'decoder' on decode-0"}));
  frames.back().in_reply_to = 41;
  frames.push_back(envelope(credit{128}));
  frames.push_back(envelope(stream_window{request_id{1}, 0, 70}));
  frames.push_back(envelope(claim{request_id{9}, request_id{77}, 33, {{0, 40}, {2, 38}}}));
  frames.push_back(envelope(claimed{request_id{77}, {{33, {0}, 4}, {34, {1, 2}, 6}}}));

  return frames;
}

std::vector<client_message> sample_client_messages() {
  sampling params{0.8f, 0.9f, 42};
  params.frequency_penalty = 0.5f;
  params.logit_bias = {{13, -5.0f}};
  params.logprobs = true;
  params.top_logprobs = 1;
  generate_request generate{7, "Once upon a time", 32, 256, params, true, 5000, 3};
  generate.api_key = "bk-sample-0123456789abcdef";
  generate.resume = resume_state{request_id{99},
                                 {{{278, 1701}, false, finish_reason::length},
                                  {{}, false, finish_reason::length},
                                  {{278}, true, finish_reason::end_of_text}}};
  token_chunk chunk{7, 5, {278, 1701, 29892}, " there was"};
  chunk.choice = 2;
  chunk.logprobs = {{278, -0.5f, " the", {{278, -0.5f, " the"}}},
                    {1701, -1.25f, "re", {{1701, -1.25f, "re"}}},
                    {29892, -0.0625f, " was", {{29892, -0.0625f, " was"}}}};
  chunk.finish = finish_reason::length;
  return {
      generate,
      cancel_request{7},
      accepted{7, request_id{99}, 42, 5, "Once upon a time", "prefill-0", "decode-1",
               "disaggregated"},
      chunk,
      finished{7, finish_reason::end_of_text, 5, 27, 118},
      rejected{7, errc::unavailable, "no decode worker came back within 10000 ms"},
  };
}

}  // namespace baton::wire
