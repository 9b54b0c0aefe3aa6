#pragma once

// A request's sampling on the wire, turned into the engine's samplers: what the prefill and
// decode roles pick tokens with, and how a pick's log-probabilities go back on the wire.

#include <cstdint>
#include <span>

#include "engine/sampler.hpp"
#include "schemas/inference.hpp"

namespace baton::actors {

/// The engine's options for `params` (end_token: the tokenizer's BOS, llama2.c's end).
[[nodiscard]] engine::sampling_options sampling_options_of(const wire::sampling& params);

/// The sampler of choice `choice` of a request (engine::choice_seed of its seed) that has
/// generated `generated` after `prompt`: what any node resuming the choice draws next.
[[nodiscard]] engine::sampler make_sampler(const wire::sampling& params, std::uint32_t choice,
                                           std::span<const std::int32_t> prompt,
                                           std::span<const std::int32_t> generated);

/// The log-probabilities of `pick`'s last token for the wire: its own, or, from a device
/// that draws nothing (an emulated one), `token` with log-probability 0 and no
/// alternatives.
[[nodiscard]] wire::token_logprobs logprobs_of(const engine::sampler& pick, std::int32_t token);

}  // namespace baton::actors
