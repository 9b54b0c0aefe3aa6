#include "bench/serve_load.hpp"

#include "report/plot.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace baton::bench::serve {
namespace {

std::optional<double> to_number(std::string_view s) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  for (std::size_t at = 0;;) {
    const auto next = s.find(sep, at);
    parts.push_back(
        s.substr(at, next == std::string_view::npos ? std::string_view::npos : next - at));
    if (next == std::string_view::npos) return parts;
    at = next + 1;
  }
}

// Common words that are one token each in GPT-2/cl100k/Llama-style vocabularies, and short
// pieces in small ones.
constexpr std::array<std::string_view, 48> words = {
    "the",   "of",   "and",    "to",   "in",   "is",   "was",  "for",  "on",   "that",
    "with",  "as",   "it",     "he",   "she",  "they", "at",   "by",   "this", "from",
    "but",   "not",  "or",     "have", "one",  "had",  "all",  "time", "day",  "little",
    "big",   "dog",  "cat",    "sun",  "tree", "ran",  "saw",  "red",  "blue", "good",
    "happy", "play", "friend", "home", "park", "ball", "girl", "boy"};

std::string_view pick_word(std::mt19937_64& rng) {
  return words[std::uniform_int_distribution<std::size_t>(0, words.size() - 1)(rng)];
}

void append_word(std::string& text, std::string_view w) {
  if (!text.empty()) text += ' ';
  text += w;
}

}  // namespace

expected<length_dist> parse_length_dist(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return fail(
        errc::invalid_argument,
        fmt::format("length '{}': {} (expected N, uniform:A:B or normal:MEAN:SD)", text, why));
  };
  length_dist d;
  d.text = std::string(text);
  const auto parts = split(text, ':');
  std::vector<double> nums;
  for (std::size_t i = parts.size() == 1 ? 0 : 1; i < parts.size(); ++i) {
    const auto v = to_number(parts[i]);
    if (!v) return bad(fmt::format("'{}' is not a number", parts[i]));
    if (*v > max_length_tokens) return bad(fmt::format("more than {}", max_length_tokens));
    nums.push_back(*v);
  }
  if (parts.size() == 1) {
    if (nums[0] < 1 || nums[0] != std::floor(nums[0])) return bad("must be an integer >= 1");
    d.a = nums[0];
    return d;
  }
  if (parts.size() != 3) return bad("wrong number of fields");
  d.a = nums[0];
  d.b = nums[1];
  if (parts[0] == "uniform") {
    d.shape = length_dist::kind::uniform;
    if (d.a != std::floor(d.a) || d.b != std::floor(d.b)) return bad("bounds must be integers");
    if (d.a < 1) return bad("low must be >= 1");
    if (d.a > d.b) return bad("low > high");
    return d;
  }
  if (parts[0] == "normal") {
    d.shape = length_dist::kind::normal;
    if (d.a < 1) return bad("mean must be >= 1");
    if (d.b < 0) return bad("standard deviation must be >= 0");
    return d;
  }
  return bad(fmt::format("unknown distribution '{}'", parts[0]));
}

std::size_t sample_length(const length_dist& d, std::mt19937_64& rng) {
  double v = d.a;
  if (d.shape == length_dist::kind::uniform) {
    v = static_cast<double>(std::uniform_int_distribution<std::int64_t>(
        static_cast<std::int64_t>(std::ceil(d.a)),
        static_cast<std::int64_t>(std::floor(d.b)))(rng));
  } else if (d.shape == length_dist::kind::normal && d.b > 0) {
    v = std::round(std::normal_distribution<double>(d.a, d.b)(rng));
  }
  return static_cast<std::size_t>(std::clamp(v, 1.0, max_length_tokens));
}

std::vector<double> poisson_schedule_s(double rate_per_s, std::size_t n, std::uint64_t seed) {
  std::vector<double> at(n, 0.0);
  if (!(rate_per_s > 0) || std::isinf(rate_per_s)) return at;
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate_per_s);
  for (std::size_t i = 1; i < n; ++i) at[i] = at[i - 1] + gap(rng);
  return at;
}

std::string synthetic_prompt(std::size_t n_tokens, std::mt19937_64& rng) {
  std::string text;
  for (std::size_t i = 0; i < n_tokens; ++i) append_word(text, pick_word(rng));
  return text;
}

std::string exact_prompt(std::size_t n_tokens, std::mt19937_64& rng,
                         const std::function<std::size_t(std::string_view)>& count_tokens) {
  const auto join = [](const std::vector<std::string_view>& seq, std::size_t n_words) {
    std::string text;
    for (std::size_t i = 0; i < n_words; ++i) append_word(text, seq[i]);
    return text;
  };
  // Enough words to reach n_tokens, then the longest prefix within it (a binary search: a
  // word never removes tokens), then short words to fill the last few tokens.
  std::vector<std::string_view> seq;
  for (std::size_t want = std::max<std::size_t>(n_tokens, 1);; want *= 2) {
    while (seq.size() < want) seq.push_back(pick_word(rng));
    if (count_tokens(join(seq, seq.size())) >= n_tokens || want > 16 * n_tokens) break;
  }
  std::size_t lo = 0;
  std::size_t hi = seq.size();
  while (lo < hi) {
    const std::size_t mid = (lo + hi + 1) / 2;
    if (count_tokens(join(seq, mid)) <= n_tokens) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  std::string text = join(seq, lo);
  std::size_t k = count_tokens(text);
  constexpr std::array<std::string_view, 5> fillers = {"a", "I", "of", "the", "."};
  for (int round = 0; k < n_tokens && round < 64; ++round) {
    bool grew = false;
    for (const auto f : fillers) {
      std::string candidate = text;
      append_word(candidate, f);
      const std::size_t kc = count_tokens(candidate);
      if (kc > k && kc <= n_tokens) {
        text = std::move(candidate);
        k = kc;
        grew = true;
        break;
      }
    }
    if (!grew) break;
  }
  return text;
}

std::vector<std::string> sse_parser::feed(std::string_view bytes) {
  std::vector<std::string> out;
  if (overflowed_) return out;
  for (;;) {
    const auto nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      pending_.append(bytes);
      break;
    }
    std::string_view l = bytes.substr(0, nl);
    bytes.remove_prefix(nl + 1);
    if (!pending_.empty()) {
      pending_.append(l);
      std::string whole = std::move(pending_);
      pending_.clear();
      line(whole, out);
    } else {
      line(l, out);
    }
  }
  if (pending_.size() + data_.size() > max_event_bytes) overflowed_ = true;
  return out;
}

void sse_parser::line(std::string_view l, std::vector<std::string>& out) {
  if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
  if (l.empty()) {
    if (has_data_) out.push_back(std::move(data_));
    data_.clear();
    has_data_ = false;
    return;
  }
  if (l.front() == ':') return;  // a comment (keep-alive)
  const auto colon = l.find(':');
  const auto field = l.substr(0, colon);
  if (field != "data") return;
  std::string_view value = colon == std::string_view::npos ? "" : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
  if (data_.size() > max_event_bytes) overflowed_ = true;
}

std::optional<double> sum_samples(std::string_view text, std::string_view name) {
  std::optional<double> total;
  while (!text.empty()) {
    const auto eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (!line.starts_with(name) || line.size() == name.size()) continue;
    const char next = line[name.size()];
    if (next != ' ' && next != '{') continue;
    // The value follows the last space outside the labels (label values may hold spaces).
    const auto close = next == '{' ? line.find('}', name.size()) : name.size();
    if (close == std::string_view::npos) continue;
    std::string_view rest = line.substr(close + (next == '{' ? 1 : 0));
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    rest = rest.substr(0, rest.find(' '));  // a timestamp may follow
    if (const auto v = to_number(rest)) total = total.value_or(0) + *v;
  }
  return total;
}

expected<completion_chunk> parse_completion_chunk(std::string_view payload) {
  completion_chunk c;
  while (!payload.empty() && std::isspace(static_cast<unsigned char>(payload.back()))) {
    payload.remove_suffix(1);
  }
  if (payload == "[DONE]") {
    c.done = true;
    return c;
  }
  const auto j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(errc::invalid_argument,
                fmt::format("not a JSON object: '{}'", payload.substr(0, 120)));
  }
  if (const auto e = j.find("error"); e != j.end() && !e->is_null()) {
    if (e->is_object() && e->contains("message") && (*e)["message"].is_string()) {
      c.error = (*e)["message"].get<std::string>();
    } else {
      c.error = e->dump();
    }
  }
  if (const auto ch = j.find("choices"); ch != j.end() && ch->is_array() && !ch->empty()) {
    const auto& first = ch->front();
    if (first.contains("text") && first["text"].is_string()) {
      c.text = first["text"].get<std::string>();
    } else if (first.contains("delta") && first["delta"].is_object() &&
               first["delta"].contains("content") && first["delta"]["content"].is_string()) {
      c.text = first["delta"]["content"].get<std::string>();
    }
  }
  if (const auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (u->contains("completion_tokens") && (*u)["completion_tokens"].is_number_unsigned()) {
      c.completion_tokens = (*u)["completion_tokens"].get<std::uint64_t>();
    }
    if (u->contains("prompt_tokens") && (*u)["prompt_tokens"].is_number_unsigned()) {
      c.prompt_tokens = (*u)["prompt_tokens"].get<std::uint64_t>();
    }
  }
  return c;
}

results compute_results(const std::vector<request_record>& records, const slo& s) {
  results r;
  r.requests = records.size();
  double first_send = std::numeric_limits<double>::infinity();
  double last_end = 0;
  double prompt_tokens = 0;
  double output_tokens = 0;
  std::size_t good = 0;
  for (const auto& rec : records) {
    first_send = std::min(first_send, rec.send_s);
    last_end = std::max(last_end, rec.end_s);
    if (!rec.ok) {
      ++r.errors[rec.error_kind.empty() ? "unknown" : rec.error_kind];
      continue;
    }
    ++r.completed;
    const double e2e = (rec.end_s - rec.send_s) * 1e3;
    const double ttft =
        ((rec.token_s.empty() ? rec.end_s : rec.token_s.front()) - rec.send_s) * 1e3;
    r.ttft_ms.push_back(ttft);
    r.e2e_ms.push_back(e2e);
    std::optional<double> tpot;
    if (rec.output_tokens > 1) {
      tpot = (e2e - ttft) / static_cast<double>(rec.output_tokens - 1);
      r.tpot_ms.push_back(*tpot);
    }
    for (std::size_t i = 1; i < rec.token_s.size(); ++i) {
      r.itl_ms.push_back((rec.token_s[i] - rec.token_s[i - 1]) * 1e3);
    }
    prompt_tokens += static_cast<double>(rec.prompt_tokens);
    output_tokens += static_cast<double>(rec.output_tokens);
    const bool ttft_ok = !s.ttft_ms || ttft <= *s.ttft_ms;
    const bool tpot_ok = !s.tpot_ms || !tpot || *tpot <= *s.tpot_ms;
    if (ttft_ok && tpot_ok) ++good;
  }
  r.duration_s = records.empty() ? 0 : std::max(0.0, last_end - first_send);
  r.ttft = report::summarize(r.ttft_ms);
  r.tpot = report::summarize(r.tpot_ms);
  r.itl = report::summarize(r.itl_ms);
  r.e2e = report::summarize(r.e2e_ms);
  if (r.duration_s > 0) {
    r.request_throughput_req_s = static_cast<double>(r.completed) / r.duration_s;
    r.output_throughput_tok_s = output_tokens / r.duration_s;
    r.total_throughput_tok_s = (prompt_tokens + output_tokens) / r.duration_s;
  }
  if (r.completed > 0) {
    r.prompt_tokens_mean = prompt_tokens / static_cast<double>(r.completed);
    r.output_tokens_mean = output_tokens / static_cast<double>(r.completed);
  }
  if (s.ttft_ms || s.tpot_ms) {
    r.goodput_req_s = r.duration_s > 0 ? static_cast<double>(good) / r.duration_s : 0.0;
    r.goodput_fraction =
        r.requests > 0 ? static_cast<double>(good) / static_cast<double>(r.requests) : 0.0;
  }
  return r;
}

report::panel cdf_panel(const std::string& id, const std::string& title,
                        const std::vector<double>& samples_ms, const summary& s,
                        std::optional<double> slo_ms) {
  report::panel p{.id = id, .title = title, .x_label = "ms", .y_label = "fraction of samples"};
  p.y_max = 1;
  p.lines.push_back(report::line{.points = report::cdf_points(samples_ms)});
  p.markers = {{"p50", s.p50, "#d62728", 0}, {"p99", s.p99, "#d62728", 1}};
  if (slo_ms) p.markers.push_back({"SLO", *slo_ms, "#2ca02c", 2});
  if (!samples_ms.empty()) p.note = fmt::format("n = {}", samples_ms.size());
  return p;
}

std::string render_svg(const results& r, const std::string& title, const slo& s) {
  const auto& cdf = cdf_panel;
  return report::render_figure(
      title, {cdf("panel-ttft", "TTFT (time to first token)", r.ttft_ms, r.ttft, s.ttft_ms),
              cdf("panel-tpot", "TPOT (time per output token)", r.tpot_ms, r.tpot, s.tpot_ms),
              cdf("panel-itl", "ITL (inter-token latency)", r.itl_ms, r.itl, std::nullopt),
              cdf("panel-e2e", "E2E (end-to-end latency)", r.e2e_ms, r.e2e, std::nullopt)});
}

}  // namespace baton::bench::serve
