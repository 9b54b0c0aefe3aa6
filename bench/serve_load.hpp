// tools/serve_load.hpp
#pragma once

/// The testable parts of `baton bench serve`, free of networking: length distributions,
/// the seeded Poisson arrival schedule, synthetic prompts, an incremental SSE parser, the
/// OpenAI completion chunk reader, the results of a run and their SVG plot. Everything here
/// is a pure function or a value type; nothing is thread-safe beyond that.
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "report/plot.hpp"
#include "report/stats.hpp"

namespace baton::bench::serve {

using report::summary;

/// A length distribution from the command line: `N` (fixed), `uniform:A:B` (inclusive),
/// `normal:MEAN:SD` (rounded, clamped to >= 1).
struct length_dist {
  enum class kind : std::uint8_t { fixed, uniform, normal };
  kind shape = kind::fixed;
  double a = 1;      ///< fixed value, uniform low, or normal mean
  double b = 0;      ///< uniform high, or normal standard deviation
  std::string text;  ///< as given, for the report
};

/// The largest length a distribution may ask for: a named limit on prompt and output sizes.
inline constexpr double max_length_tokens = 1'000'000;

/// Parses DIST; errc::invalid_argument says what was wrong (`uniform:9:3`: low > high).
[[nodiscard]] expected<length_dist> parse_length_dist(std::string_view text);

/// One draw from `d`, always >= 1.
[[nodiscard]] std::size_t sample_length(const length_dist& d, std::mt19937_64& rng);

/// Open-loop send offsets in seconds from the start, non-decreasing: the first request at 0,
/// then gaps drawn from an exponential distribution of rate `rate_per_s` with a generator
/// seeded by `seed`. An infinite rate sends everything at 0.
[[nodiscard]] std::vector<double> poisson_schedule_s(double rate_per_s, std::size_t n,
                                                     std::uint64_t seed);

/// Synthetic prompt text of about `n_tokens` tokens: common English words (about one token
/// each in GPT- and Llama-style vocabularies) drawn from `rng`, so prompts differ.
[[nodiscard]] std::string synthetic_prompt(std::size_t n_tokens, std::mt19937_64& rng);

/// The same with a tokenizer: `count_tokens(text)` gives the tokens of `text` (without
/// BOS). Returns text of exactly `n_tokens` tokens when the vocabulary allows it, else the
/// closest found below; about log2(n_tokens) + 5 full counts per prompt.
[[nodiscard]] std::string exact_prompt(
    std::size_t n_tokens, std::mt19937_64& rng,
    const std::function<std::size_t(std::string_view)>& count_tokens);

/// Splits a text/event-stream into the payloads of its `data:` fields, across arbitrary
/// chunk boundaries. Handles LF and CRLF line ends, joins multi-line data with '\n', and
/// ignores comments, `event:`, `id:` and `retry:` fields. Buffers at most
/// max_event_bytes of one event.
class sse_parser {
 public:
  static constexpr std::size_t max_event_bytes = 4 << 20;

  /// Appends `bytes` and returns the payloads of the events they complete.
  [[nodiscard]] std::vector<std::string> feed(std::string_view bytes);
  /// True if an event grew past max_event_bytes (the stream should be abandoned).
  [[nodiscard]] bool overflowed() const { return overflowed_; }

 private:
  void line(std::string_view l, std::vector<std::string>& out);

  std::string pending_;  ///< an incomplete line
  std::string data_;     ///< the data of the event being built
  bool has_data_ = false;
  bool overflowed_ = false;
};

/// What one `data:` payload of an OpenAI completions stream says.
struct completion_chunk {
  bool done = false;  ///< the `[DONE]` sentinel
  std::string text;   ///< choices[0].text (or delta.content), maybe empty
  std::optional<std::uint64_t> completion_tokens;  ///< usage.completion_tokens
  std::optional<std::uint64_t> prompt_tokens;      ///< usage.prompt_tokens
  std::optional<std::string> error;                ///< an `error` object's message
};

/// Reads one payload; invalid JSON gives errc::invalid_argument.
[[nodiscard]] expected<completion_chunk> parse_completion_chunk(std::string_view payload);

/// The sum of every sample of metric `name` in Prometheus text exposition format (each
/// line `name value` or `name{labels} value`; comments skipped), or nullopt when there is
/// none: e.g. a counter summed over the nodes a router's /metrics merges.
[[nodiscard]] std::optional<double> sum_samples(std::string_view prometheus_text,
                                                std::string_view name);

/// What happened to one request; times are seconds from the start of the run.
struct request_record {
  double send_s = 0;
  std::vector<double> token_s;  ///< arrival of each chunk with non-empty text
  double end_s = 0;
  std::size_t output_tokens = 0;  ///< usage.completion_tokens, else the chunks
  std::size_t prompt_tokens = 0;  ///< usage.prompt_tokens, else the length asked for
  bool ok = false;
  std::string error_kind;  ///< when !ok: http_503, connect, timeout, read, stream_error, ...
};

/// Service-level objectives; absent ones are not checked. A request is good when it
/// succeeded and meets every objective given.
struct slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
};

/// Every figure of one run, from its records.
struct results {
  std::size_t requests = 0;
  std::size_t completed = 0;
  std::map<std::string, std::size_t> errors;             ///< by kind
  double duration_s = 0;                                 ///< first send to last completion
  std::vector<double> ttft_ms, tpot_ms, itl_ms, e2e_ms;  ///< samples, completed requests
  summary ttft, tpot, itl, e2e;
  double request_throughput_req_s = 0;
  double output_throughput_tok_s = 0;
  double total_throughput_tok_s = 0;  ///< prompt and output tokens
  double prompt_tokens_mean = 0;
  double output_tokens_mean = 0;
  std::optional<double> goodput_req_s;     ///< with at least one SLO
  std::optional<double> goodput_fraction;  ///< good requests / requests sent
};

/// TTFT is the first text chunk (the end, if none came); TPOT is (e2e - ttft) /
/// (output_tokens - 1) for requests of two tokens or more; ITL pools the gaps between
/// successive text chunks of every request.
[[nodiscard]] results compute_results(const std::vector<request_record>& records, const slo& s);

/// One panel: the empirical CDF of `samples_ms` with its p50 and p99 (and the SLO) marked.
[[nodiscard]] report::panel cdf_panel(const std::string& id, const std::string& title,
                                      const std::vector<double>& samples_ms, const summary& s,
                                      std::optional<double> slo_ms);

/// An SVG document (text): the empirical CDFs of TTFT, TPOT, ITL and E2E in four panels
/// with axes, ticks, labels and the p50/p99 marked, and the SLOs of `s` on the TTFT and TPOT
/// panels when they fall inside them. `title` goes at the top.
[[nodiscard]] std::string render_svg(const results& r, const std::string& title, const slo& s = {});

}  // namespace baton::bench::serve
