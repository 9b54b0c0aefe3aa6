#include "engine/generate.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "engine/sampler.hpp"

namespace baton::engine {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

/// Removes the sequence however generate() leaves.
class sequence_guard {
 public:
  sequence_guard(cpu_engine& engine, sequence_id id) : engine_(engine), id_(id) {}
  sequence_guard(const sequence_guard&) = delete;
  sequence_guard& operator=(const sequence_guard&) = delete;
  ~sequence_guard() { engine_.remove_sequence(id_); }

 private:
  cpu_engine& engine_;
  sequence_id id_;
};

}  // namespace

expected<generate_result> generate(cpu_engine& engine, const tokenizer& tok,
                                   std::string_view prompt, const generate_options& options,
                                   const std::function<void(std::string_view)>& emit) {
  const std::int32_t seq_len = engine.config().seq_len;
  const std::int32_t steps =
      options.steps <= 0 || options.steps > seq_len ? seq_len : options.steps;
  generate_result result;
  result.prompt_tokens = tok.encode(prompt, true, false);
  const auto& prompt_tokens = result.prompt_tokens;
  const auto n_prompt = static_cast<std::int32_t>(prompt_tokens.size());
  // Prompt positions llama2.c echoes without sampling.
  const std::int32_t echoed = std::min(steps, n_prompt - 1);
  for (std::int32_t pos = 0; pos < echoed; ++pos) {
    emit(printable(tok.decode(prompt_tokens[pos], prompt_tokens[pos + 1])));
  }
  if (steps < n_prompt) return result;
  auto id = engine.add_sequence();
  if (!id) return tl::unexpected(id.error());
  sequence_guard guard(engine, *id);
  auto sampling = options.sampling;
  sampling.temperature = options.temperature;
  sampling.top_p = options.top_p;
  sampler pick(std::move(sampling), choice_seed(options.seed, options.choice), prompt_tokens);
  std::vector<float> logits(static_cast<std::size_t>(engine.config().vocab_size));
  auto start = clock_type::now();
  auto out = engine.prefill(*id, prompt_tokens);
  if (!out) return tl::unexpected(out.error());
  result.prefill_seconds = seconds_since(start);
  start = clock_type::now();
  std::int32_t token = prompt_tokens.back();
  for (std::int32_t pos = n_prompt - 1; pos < steps;) {
    std::copy(out->begin(), out->end(), logits.begin());
    const std::int32_t next = pick.sample(logits);
    ++pos;
    if (next == tokenizer::bos && !options.ignore_eos) break;
    result.generated.push_back(next);
    emit(printable(tok.decode(token, next)));
    token = next;
    if (pos >= steps) break;
    const decode_input step{*id, token};
    out = engine.decode(std::span(&step, 1));
    if (!out) return tl::unexpected(out.error());
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

expected<std::string> generate_text(cpu_engine& engine, const tokenizer& tok,
                                    std::string_view prompt, const generate_options& options) {
  std::string text;
  auto result =
      generate(engine, tok, prompt, options, [&](std::string_view piece) { text += piece; });
  if (!result) return tl::unexpected(result.error());
  text += '\n';
  return text;
}

expected<std::string> prompt_echo(cpu_engine& engine, const tokenizer& tok,
                                  std::string_view prompt) {
  // Fewer positions than the prompt's tokens: llama2.c echoes them and samples nothing.
  const auto n = static_cast<std::int32_t>(tok.encode(prompt, true, false).size());
  std::string text;
  auto result = generate(engine, tok, prompt, generate_options{0.0f, 0.9f, 1, n - 1},
                         [&](std::string_view piece) { text += piece; });
  if (!result) return tl::unexpected(result.error());
  return text;
}

}  // namespace baton::engine
