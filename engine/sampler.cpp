#include "engine/sampler.hpp"

#include <algorithm>
#include <cmath>

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

}  // namespace

sampler::sampler(float temperature, float top_p, std::uint64_t seed)
    : temperature_(temperature), top_p_(top_p), state_(seed) {}

sampler sampler::at(float temperature, float top_p, std::uint64_t seed, std::uint64_t sampled) {
  sampler s(temperature, top_p, seed);
  if (temperature != 0.0f) {
    for (std::uint64_t k = 0; k < sampled; ++k) (void)xorshift_u32(s.state_);
  }
  s.sampled_ = sampled;
  return s;
}

std::int32_t sampler::sample(std::span<float> logits) {
  ++sampled_;
  if (temperature_ == 0.0f) return argmax(logits);
  for (auto& v : logits) v /= temperature_;
  softmax(logits);
  const float coin = xorshift_f32(state_);
  if (top_p_ <= 0.0f || top_p_ >= 1.0f) return sample_cdf(logits, coin);
  const float cutoff = (1.0f - top_p_) / static_cast<float>(logits.size() - 1);
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
    if (cumulative > top_p_) {
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
