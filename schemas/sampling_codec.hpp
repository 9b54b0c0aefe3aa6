#pragma once

// Internal to schemas/: Sampling and TokenLogprobs, which both codecs (the frame codec and
// the native client codec) carry, converted and checked once. Includes generated headers.

#include <optional>
#include <string>
#include <vector>

#include "schemas/inference.capnp.h"
#include "schemas/inference.hpp"

namespace baton::wire::detail {

[[nodiscard]] sampling sampling_from(gen::Sampling::Reader r);
void fill(const sampling& s, gen::Sampling::Builder b);
/// What is out of range in `s` ("topP 1.5 is not in (0, 1]"), or nullopt.
[[nodiscard]] std::optional<std::string> sampling_problem(const sampling& s);

[[nodiscard]] std::vector<token_logprobs> logprobs_from(
    capnp::List<gen::TokenLogprobs>::Reader list);
void fill(const std::vector<token_logprobs>& from, capnp::List<gen::TokenLogprobs>::Builder to);
/// What is wrong with logprobs for `tokens` tokens (a count other than 0 or `tokens`, too
/// many alternatives, a value that is not a log-probability), or nullopt.
[[nodiscard]] std::optional<std::string> logprobs_problem(const std::vector<token_logprobs>& l,
                                                          std::size_t tokens);

}  // namespace baton::wire::detail
