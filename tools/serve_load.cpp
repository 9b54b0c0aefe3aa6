#include "tools/serve_load.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace baton::tools::serve {
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

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(rank));
  const auto hi = static_cast<std::size_t>(std::ceil(rank));
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

summary summarize(std::vector<double> values_ms) {
  summary s;
  if (values_ms.empty()) return s;
  std::sort(values_ms.begin(), values_ms.end());
  s.count = values_ms.size();
  s.mean = std::accumulate(values_ms.begin(), values_ms.end(), 0.0) /
           static_cast<double>(values_ms.size());
  s.p50 = percentile(values_ms, 50);
  s.p90 = percentile(values_ms, 90);
  s.p99 = percentile(values_ms, 99);
  return s;
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
  r.ttft = summarize(r.ttft_ms);
  r.tpot = summarize(r.tpot_ms);
  r.itl = summarize(r.itl_ms);
  r.e2e = summarize(r.e2e_ms);
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

namespace {

std::string xml_escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

/// A 1-2-5 step that puts about `target` ticks on [0, max].
double nice_step(double max, int target) {
  const double raw = max / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

/// Three significant digits without an exponent: 0.123, 12.3, 1234.
std::string short_number(double v) {
  const double a = std::abs(v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 10) return fmt::format("{:.1f}", v);
  if (a >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3f}", v);
}

constexpr double panel_w = 450, panel_h = 300;
constexpr double pad_left = 62, pad_right = 18, pad_top = 34, pad_bottom = 46;

/// One panel's plot area: data (ms, fraction) to SVG coordinates.
struct frame {
  double x0, left, bottom, w, h, x_max, step;
  [[nodiscard]] double px(double v) const { return left + v / x_max * w; }
  [[nodiscard]] double py(double f) const { return bottom - f * h; }
};

void draw_axes(std::string& svg, const frame& f) {
  svg += fmt::format(
      R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#444"/>)",
      f.left, f.bottom - f.h, f.w, f.h);
  svg += '\n';
  for (int i = 0; i * f.step <= f.x_max + f.step / 2; ++i) {
    const double v = i * f.step;
    svg += fmt::format(
        R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="#ddd"/>)"
        R"(<text x="{0:.1f}" y="{3:.1f}" font-size="11" text-anchor="middle">{4}</text>)",
        f.px(v), f.bottom, f.bottom - f.h, f.bottom + 15,
        v >= 1000 ? fmt::format("{:.0f}", v) : fmt::format("{:.4g}", v));
    svg += '\n';
  }
  for (int i = 0; i <= 4; ++i) {
    const double y = i * 0.25;
    svg += fmt::format(
        R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{2:.1f}" y2="{1:.1f}" stroke="#ddd"/>)"
        R"(<text x="{3:.1f}" y="{4:.1f}" font-size="11" text-anchor="end">{5:.4g}</text>)",
        f.left, f.py(y), f.left + f.w, f.left - 6, f.py(y) + 4, y);
    svg += '\n';
  }
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="12" text-anchor="middle">ms</text>)",
                     f.left + f.w / 2, f.bottom + 34);
  svg += fmt::format(R"(<text x="{0:.1f}" y="{1:.1f}" font-size="12" text-anchor="middle" )"
                     R"svg(transform="rotate(-90 {0:.1f} {1:.1f})">fraction of samples</text>)svg",
                     f.x0 + 16, f.bottom - f.h / 2);
  svg += '\n';
}

/// The empirical CDF of `sorted` (not empty): at most about 500 evenly spaced ranks.
void draw_cdf(std::string& svg, const frame& f, const std::vector<double>& sorted) {
  const std::size_t n = sorted.size();
  const std::size_t stride = std::max<std::size_t>(1, n / 500);
  std::string points = fmt::format("{:.1f},{:.1f}", f.px(sorted.front()), f.py(0));
  for (std::size_t i = 0; i < n; i += stride) {
    points += fmt::format(" {:.1f},{:.1f}", f.px(sorted[i]),
                          f.py(static_cast<double>(i + 1) / static_cast<double>(n)));
  }
  points += fmt::format(" {:.1f},{:.1f}", f.px(sorted.back()), f.py(1));
  svg += fmt::format(R"(<polyline fill="none" stroke="#1f77b4" stroke-width="1.8" points="{}"/>)",
                     points);
  svg += '\n';
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end" )"
                     R"(fill="#555">n = {}</text>)",
                     f.left + f.w - 4, f.bottom - 6, n);
  svg += '\n';
}

/// Dashed lines at p50 and p99 (red) and at the SLO (green), labelled.
void draw_markers(std::string& svg, const frame& f, const summary& sm,
                  std::optional<double> slo_ms) {
  struct marker {
    const char* label;
    double v;
    const char* color;
    double dy;
  };
  std::vector<marker> markers = {{"p50", sm.p50, "#d62728", 12}, {"p99", sm.p99, "#d62728", 26}};
  if (slo_ms && *slo_ms <= f.x_max) markers.push_back({"SLO", *slo_ms, "#2ca02c", 40});
  if (slo_ms && *slo_ms > f.x_max) {  // off the scale: say so at the right edge
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end" )"
                       R"(fill="#2ca02c">SLO {} &#8594;</text>)",
                       f.left + f.w - 4, f.bottom - f.h + 40, short_number(*slo_ms));
    svg += '\n';
  }
  for (const auto& m : markers) {
    // Labels right of their line, or left of it near the right edge.
    const bool left_of = f.px(m.v) > f.left + 0.75 * f.w;
    svg += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="{7}" )"
                       R"(stroke-dasharray="4 3"/><text x="{3:.1f}" y="{4:.1f}" font-size="11" )"
                       R"(text-anchor="{8}" fill="{7}">{5} {6}</text>)",
                       f.px(m.v), f.bottom, f.bottom - f.h, f.px(m.v) + (left_of ? -3 : 3),
                       f.bottom - f.h + m.dy, m.label, short_number(m.v), m.color,
                       left_of ? "end" : "start");
    svg += '\n';
  }
}

void panel(std::string& svg, const std::string& id, const std::string& name,
           const std::vector<double>& samples, const summary& sm, std::optional<double> slo_ms,
           double x0, double y0) {
  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  const double max = sorted.empty() ? 1.0 : std::max(sorted.back(), 1e-3);
  const double step = nice_step(max, 5);
  const frame f{x0,
                x0 + pad_left,
                y0 + panel_h - pad_bottom,
                panel_w - pad_left - pad_right,
                panel_h - pad_top - pad_bottom,
                std::ceil(max / step) * step,
                step};
  svg += fmt::format(R"(<g id="{}">)", id);
  svg += '\n';
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="14" text-anchor="middle">{}</text>)",
                     f.left + f.w / 2, y0 + 20, xml_escape(name));
  svg += '\n';
  draw_axes(svg, f);
  if (sorted.empty()) {
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="13" text-anchor="middle" )"
                       R"(fill="#888">no samples</text>)",
                       f.left + f.w / 2, f.bottom - f.h / 2);
    svg += '\n';
  } else {
    draw_cdf(svg, f, sorted);
    draw_markers(svg, f, sm, slo_ms);
  }
  svg += "</g>\n";
}

}  // namespace

std::string render_svg(const results& r, const std::string& title, const slo& s) {
  const double width = 2 * panel_w;
  const double height = 2 * panel_h + 30;
  std::string svg =
      fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0:.0f}" height="{1:.0f}" )"
                  R"(viewBox="0 0 {0:.0f} {1:.0f}" font-family="sans-serif">)",
                  width, height);
  svg += '\n';
  svg += fmt::format(R"(<rect width="{:.0f}" height="{:.0f}" fill="white"/>)", width, height);
  svg += fmt::format(R"(<text x="{:.1f}" y="20" font-size="15" text-anchor="middle">{}</text>)",
                     width / 2, xml_escape(title));
  svg += '\n';
  panel(svg, "panel-ttft", "TTFT (time to first token)", r.ttft_ms, r.ttft, s.ttft_ms, 0, 30);
  panel(svg, "panel-tpot", "TPOT (time per output token)", r.tpot_ms, r.tpot, s.tpot_ms, panel_w,
        30);
  panel(svg, "panel-itl", "ITL (inter-token latency)", r.itl_ms, r.itl, std::nullopt, 0,
        30 + panel_h);
  panel(svg, "panel-e2e", "E2E (end-to-end latency)", r.e2e_ms, r.e2e, std::nullopt, panel_w,
        30 + panel_h);
  svg += "</svg>\n";
  return svg;
}

}  // namespace baton::tools::serve
