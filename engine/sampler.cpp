#include "engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace baton::engine {

std::uint32_t xorshift_u32(std::uint64_t& state) {
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return static_cast<std::uint32_t>((state * 0x2545F4914F6CDD1DULL) >> 32);
}

float xorshift_f32(std::uint64_t& state) {
  return static_cast<float>(xorshift_u32(state) >> 8) / 16777216.0f;
}

std::uint64_t choice_seed(std::uint64_t seed, std::uint32_t index) {
  if (index == 0) return seed;
  std::uint64_t z = seed + index + 0x9E3779B97F4A7C15ULL;  // splitmix64 of seed + index
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z == 0 ? 1 : z;
}

namespace {

std::int32_t argmax(std::span<const float> p) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < p.size(); ++i) {
    if (p[i] > p[best]) best = i;
  }
  return static_cast<std::int32_t>(best);
}

void softmax(std::span<float> x) {
  float max_value = x[0];
  for (std::size_t i = 1; i < x.size(); ++i) max_value = std::max(max_value, x[i]);
  float sum = 0.0f;
  for (auto& v : x) {
    v = std::exp(v - max_value);
    sum += v;
  }
  for (auto& v : x) v /= sum;
}

std::int32_t sample_cdf(std::span<const float> p, float coin) {
  float cdf = 0.0f;
  for (std::size_t i = 0; i < p.size(); ++i) {
    cdf += p[i];
    if (coin < cdf) return static_cast<std::int32_t>(i);
  }
  return static_cast<std::int32_t>(p.size() - 1);
}

/// log-softmax of `logits` at `token`, with the `top` most likely alternatives.
token_logprobs logprobs_of(std::span<const float> logits, std::int32_t token, std::uint32_t top) {
  double max_value = -std::numeric_limits<double>::infinity();
  for (const float v : logits) max_value = std::max(max_value, static_cast<double>(v));
  double sum = 0.0;
  for (const float v : logits) sum += std::exp(static_cast<double>(v) - max_value);
  const double log_total = max_value + std::log(sum);
  const auto logprob = [&](std::size_t i) {
    return static_cast<float>(static_cast<double>(logits[i]) - log_total);
  };
  token_logprobs out;
  out.token = token;
  out.logprob = logprob(static_cast<std::size_t>(token));
  std::vector<std::int32_t> order(logits.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int32_t>(i);
  const auto n = std::min<std::size_t>(top, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](std::int32_t a, std::int32_t b) {
                      const auto la = logits[static_cast<std::size_t>(a)];
                      const auto lb = logits[static_cast<std::size_t>(b)];
                      return la > lb || (la == lb && a < b);
                    });
  for (std::size_t i = 0; i < n; ++i) {
    out.top.emplace_back(order[i], logprob(static_cast<std::size_t>(order[i])));
  }
  return out;
}

}  // namespace

sampler::sampler(sampling_options options, std::uint64_t seed, std::span<const std::int32_t> prompt,
                 std::span<const std::int32_t> generated)
    : options_(std::move(options)), state_(seed) {
  if (options_.repetition_penalty != 1.0f) seen_.insert(prompt.begin(), prompt.end());
  for (const std::int32_t t : generated) {
    if (options_.temperature != 0.0f) (void)xorshift_u32(state_);
    record(t);
    ++sampled_;
  }
}

sampler::sampler(float temperature, float top_p, std::uint64_t seed)
    : sampler(sampling_options{.temperature = temperature, .top_p = top_p}, seed) {}

sampler sampler::at(float temperature, float top_p, std::uint64_t seed, std::uint64_t sampled) {
  sampler s(temperature, top_p, seed);
  if (temperature != 0.0f) {
    for (std::uint64_t k = 0; k < sampled; ++k) (void)xorshift_u32(s.state_);
  }
  s.sampled_ = sampled;
  return s;
}

bool sampler::adjusts_logits() const {
  const auto& o = options_;
  return !o.logit_bias.empty() || o.min_tokens > 0 || o.repetition_penalty != 1.0f ||
         o.frequency_penalty != 0.0f || o.presence_penalty != 0.0f;
}

void sampler::adjust(std::span<float> logits) const {
  const auto& o = options_;
  const auto in_range = [&](std::int32_t t) {
    return t >= 0 && static_cast<std::size_t>(t) < logits.size();
  };
  for (const auto& [token, bias] : o.logit_bias) {
    if (in_range(token)) logits[static_cast<std::size_t>(token)] += bias;
  }
  if (sampled_ < o.min_tokens && in_range(o.end_token)) {
    logits[static_cast<std::size_t>(o.end_token)] = -std::numeric_limits<float>::infinity();
  }
  if (o.repetition_penalty != 1.0f) {
    for (const std::int32_t t : seen_) {
      if (!in_range(t)) continue;
      float& v = logits[static_cast<std::size_t>(t)];
      v = v > 0.0f ? v / o.repetition_penalty : v * o.repetition_penalty;
    }
  }
  if (o.frequency_penalty != 0.0f || o.presence_penalty != 0.0f) {
    for (const auto& [t, count] : generated_) {
      if (!in_range(t)) continue;
      logits[static_cast<std::size_t>(t)] -=
          static_cast<float>(count) * o.frequency_penalty + o.presence_penalty;
    }
  }
}

void sampler::record(std::int32_t token) {
  if (options_.frequency_penalty != 0.0f || options_.presence_penalty != 0.0f) {
    ++generated_[token];
  }
  if (options_.repetition_penalty != 1.0f) seen_.insert(token);
}

std::int32_t sampler::pick_filtered(std::span<const float> p, float coin) {
  const auto& o = options_;
  const float max_p = *std::max_element(p.begin(), p.end());
  const float floor = o.min_p > 0.0f ? o.min_p * max_p : 0.0f;
  candidates_.clear();
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] >= floor && p[i] > 0.0f) candidates_.push_back({p[i], static_cast<std::int32_t>(i)});
  }
  std::stable_sort(
      candidates_.begin(), candidates_.end(),
      [](const candidate& a, const candidate& b) { return a.probability > b.probability; });
  if (o.top_k > 0 && candidates_.size() > o.top_k) candidates_.resize(o.top_k);
  if (candidates_.empty()) return argmax(p);
  const bool nucleus = o.top_p > 0.0f && o.top_p < 1.0f;
  float cumulative = 0.0f;
  std::size_t last = candidates_.size() - 1;
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    cumulative += candidates_[i].probability;
    if (nucleus && cumulative > o.top_p) {
      last = i;
      break;
    }
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (std::size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].probability;
    if (r < cdf) return candidates_[i].index;
  }
  return candidates_[last].index;
}

std::int32_t sampler::sample(std::span<float> logits) {
  if (adjusts_logits()) adjust(logits);
  std::vector<float> adjusted;  // log-probabilities come from the logits before temperature
  if (options_.logprobs) adjusted.assign(logits.begin(), logits.end());
  const std::int32_t token = options_.temperature == 0.0f ? argmax(logits) : draw(logits);
  if (options_.logprobs) last_ = logprobs_of(adjusted, token, options_.top_logprobs);
  ++sampled_;
  record(token);
  return token;
}

std::int32_t sampler::draw(std::span<float> logits) {
  for (auto& v : logits) v /= options_.temperature;
  softmax(logits);
  const float coin = xorshift_f32(state_);
  if (options_.top_k > 0 || options_.min_p > 0.0f) return pick_filtered(logits, coin);
  if (options_.top_p <= 0.0f || options_.top_p >= 1.0f) return sample_cdf(logits, coin);
  // llama2.c's nucleus: candidates below (1 - p) / (n - 1) cannot be in it.
  const float cutoff = (1.0f - options_.top_p) / static_cast<float>(logits.size() - 1);
  candidates_.clear();
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] >= cutoff) candidates_.push_back({logits[i], static_cast<std::int32_t>(i)});
  }
  // glibc's qsort is a merge sort for arrays this size, hence stable.
  std::stable_sort(
      candidates_.begin(), candidates_.end(),
      [](const candidate& a, const candidate& b) { return a.probability > b.probability; });
  if (candidates_.empty()) return argmax(logits);  // only when p < 1/n; llama2.c reads garbage
  float cumulative = 0.0f;
  std::size_t last = candidates_.size() - 1;
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    cumulative += candidates_[i].probability;
    if (cumulative > options_.top_p) {
      last = i;
      break;
    }
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (std::size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].probability;
    if (r < cdf) return candidates_[i].index;
  }
  return candidates_[last].index;
}

}  // namespace baton::engine
