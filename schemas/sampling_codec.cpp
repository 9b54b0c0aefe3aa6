#include "schemas/sampling_codec.hpp"

#include <cmath>

#include <fmt/format.h>

namespace baton::wire::detail {
namespace {

bool finite_in(float v, float low, float high) {
  return std::isfinite(v) && v >= low && v <= high;
}

/// A log-probability: finite (or -inf for an impossible token) and at most 0.
bool logprob(float v) {
  return !std::isnan(v) && v <= 0.0f;
}

}  // namespace

sampling sampling_from(gen::Sampling::Reader r) {
  sampling s;
  s.temperature = r.getTemperature();
  s.top_p = r.getTopP();
  s.seed = r.getSeed();
  s.top_k = r.getTopK();
  s.min_p = r.getMinP();
  s.frequency_penalty = r.getFrequencyPenalty();
  s.presence_penalty = r.getPresencePenalty();
  s.repetition_penalty = r.getRepetitionPenalty();
  for (auto b : r.getLogitBias()) s.logit_bias.push_back({b.getToken(), b.getBias()});
  s.min_tokens = r.getMinTokens();
  s.ignore_eos = r.getIgnoreEos();
  s.logprobs = r.getLogprobs();
  s.top_logprobs = r.getTopLogprobs();
  return s;
}

void fill(const sampling& s, gen::Sampling::Builder b) {
  b.setTemperature(s.temperature);
  b.setTopP(s.top_p);
  b.setSeed(s.seed);
  b.setTopK(s.top_k);
  b.setMinP(s.min_p);
  b.setFrequencyPenalty(s.frequency_penalty);
  b.setPresencePenalty(s.presence_penalty);
  b.setRepetitionPenalty(s.repetition_penalty);
  auto bias = b.initLogitBias(static_cast<unsigned>(s.logit_bias.size()));
  for (unsigned i = 0; i < s.logit_bias.size(); ++i) {
    bias[i].setToken(s.logit_bias[i].token);
    bias[i].setBias(s.logit_bias[i].bias);
  }
  b.setMinTokens(s.min_tokens);
  b.setIgnoreEos(s.ignore_eos);
  b.setLogprobs(s.logprobs);
  b.setTopLogprobs(s.top_logprobs);
}

std::optional<std::string> sampling_problem(const sampling& s) {
  if (!std::isfinite(s.temperature) || s.temperature < 0.0f) {
    return fmt::format("temperature {} is not finite and >= 0", s.temperature);
  }
  if (!std::isfinite(s.top_p) || s.top_p <= 0.0f || s.top_p > 1.0f) {
    return fmt::format("topP {} is not in (0, 1]", s.top_p);
  }
  if (!finite_in(s.min_p, 0.0f, 1.0f)) return fmt::format("minP {} is not in [0, 1]", s.min_p);
  if (!finite_in(s.frequency_penalty, -2.0f, 2.0f)) {
    return fmt::format("frequencyPenalty {} is not in [-2, 2]", s.frequency_penalty);
  }
  if (!finite_in(s.presence_penalty, -2.0f, 2.0f)) {
    return fmt::format("presencePenalty {} is not in [-2, 2]", s.presence_penalty);
  }
  if (!finite_in(s.repetition_penalty, 0.0f, 10.0f) || s.repetition_penalty == 0.0f) {
    return fmt::format("repetitionPenalty {} is not in (0, 10]", s.repetition_penalty);
  }
  if (s.logit_bias.size() > max_logit_bias) {
    return fmt::format("logitBias has {} entries, limit {}", s.logit_bias.size(), max_logit_bias);
  }
  for (const auto& b : s.logit_bias) {
    if (!finite_in(b.bias, -100.0f, 100.0f)) {
      return fmt::format("logitBias of token {} is {}, not in [-100, 100]", b.token, b.bias);
    }
  }
  if (s.top_logprobs > max_top_logprobs) {
    return fmt::format("topLogprobs {} is over {}", s.top_logprobs, max_top_logprobs);
  }
  return std::nullopt;
}

std::vector<token_logprobs> logprobs_from(capnp::List<gen::TokenLogprobs>::Reader list) {
  std::vector<token_logprobs> out;
  out.reserve(list.size());
  for (auto l : list) {
    token_logprobs t{l.getToken(), l.getLogprob(), {}};
    for (auto top : l.getTop()) t.top.push_back({top.getToken(), top.getLogprob()});
    out.push_back(std::move(t));
  }
  return out;
}

void fill(const std::vector<token_logprobs>& from, capnp::List<gen::TokenLogprobs>::Builder to) {
  for (unsigned i = 0; i < from.size(); ++i) {
    to[i].setToken(from[i].token);
    to[i].setLogprob(from[i].logprob);
    auto top = to[i].initTop(static_cast<unsigned>(from[i].top.size()));
    for (unsigned j = 0; j < from[i].top.size(); ++j) {
      top[j].setToken(from[i].top[j].token);
      top[j].setLogprob(from[i].top[j].logprob);
    }
  }
}

std::optional<std::string> logprobs_problem(const std::vector<token_logprobs>& l,
                                            std::size_t tokens) {
  if (!l.empty() && l.size() != tokens) {
    return fmt::format("{} logprobs for {} tokens", l.size(), tokens);
  }
  for (const auto& t : l) {
    if (t.top.size() > max_top_logprobs) {
      return fmt::format("{} alternatives, limit {}", t.top.size(), max_top_logprobs);
    }
    if (!logprob(t.logprob)) return fmt::format("{} is not a log-probability", t.logprob);
    for (const auto& alt : t.top) {
      if (!logprob(alt.logprob)) return fmt::format("{} is not a log-probability", alt.logprob);
    }
  }
  return std::nullopt;
}

}  // namespace baton::wire::detail
