#include "actors/sampling.hpp"

#include "engine/tokenizer.hpp"

namespace baton::actors {

engine::sampling_options sampling_options_of(const wire::sampling& p) {
  engine::sampling_options o;
  o.temperature = p.temperature;
  o.top_p = p.top_p;
  o.top_k = p.top_k;
  o.min_p = p.min_p;
  o.frequency_penalty = p.frequency_penalty;
  o.presence_penalty = p.presence_penalty;
  o.repetition_penalty = p.repetition_penalty;
  for (const auto& b : p.logit_bias) {
    o.logit_bias.emplace_back(static_cast<std::int32_t>(b.token), b.bias);
  }
  o.min_tokens = p.min_tokens;
  o.end_token = engine::tokenizer::bos;
  o.logprobs = p.logprobs;
  o.top_logprobs = p.top_logprobs;
  return o;
}

engine::sampler make_sampler(const wire::sampling& params, std::uint32_t choice,
                             std::span<const std::int32_t> prompt,
                             std::span<const std::int32_t> generated) {
  return engine::sampler(sampling_options_of(params), engine::choice_seed(params.seed, choice),
                         prompt, generated);
}

wire::token_logprobs logprobs_of(const engine::sampler& pick, std::int32_t token) {
  const auto& last = pick.last_logprobs();
  if (!last || last->token != token) return {static_cast<std::uint32_t>(token), 0.0f, {}};
  wire::token_logprobs out{static_cast<std::uint32_t>(token), last->logprob, {}};
  for (const auto& [t, v] : last->top) out.top.push_back({static_cast<std::uint32_t>(t), v});
  return out;
}

}  // namespace baton::actors
