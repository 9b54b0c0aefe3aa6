#include "report/plot.hpp"

#include <algorithm>
#include <cmath>
#include <string_view>

#include <fmt/format.h>

namespace baton::report {
namespace {

std::string escape(std::string_view s) {
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

std::string tick_label(double v) {
  return v >= 1000 ? fmt::format("{:.0f}", v) : fmt::format("{:.4g}", v);
}

constexpr double panel_w = 450, panel_h = 300, title_h = 30;
constexpr double pad_left = 62, pad_right = 18, pad_top = 34, pad_bottom = 46;

/// One axis from 0 to a round maximum at or above `max`.
struct axis {
  double max = 1;
  double step = 1;

  static axis around(double data_max) {
    const double m = std::isfinite(data_max) && data_max > 0 ? std::max(data_max, 1e-3) : 1.0;
    const double step = nice_step(m, 5);
    return {std::ceil(m / step - 1e-9) * step, step};
  }
};

/// One panel's plot area: data to SVG coordinates.
struct frame {
  double x0, left, bottom, w, h;
  axis x, y;
  [[nodiscard]] double px(double v) const { return left + std::clamp(v / x.max, 0.0, 1.0) * w; }
  [[nodiscard]] double py(double v) const { return bottom - std::clamp(v / y.max, 0.0, 1.0) * h; }
};

void draw_axes(std::string& svg, const frame& f, const panel& p) {
  svg += fmt::format(
      R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#444"/>)",
      f.left, f.bottom - f.h, f.w, f.h);
  svg += '\n';
  for (int i = 0; i * f.x.step <= f.x.max + f.x.step / 2; ++i) {
    const double v = i * f.x.step;
    svg += fmt::format(
        R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="#ddd"/>)"
        R"(<text x="{0:.1f}" y="{3:.1f}" font-size="11" text-anchor="middle">{4}</text>)",
        f.px(v), f.bottom, f.bottom - f.h, f.bottom + 15, tick_label(v));
    svg += '\n';
  }
  for (int i = 0; i * f.y.step <= f.y.max + f.y.step / 2; ++i) {
    const double v = i * f.y.step;
    svg +=
        fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{2:.1f}" y2="{1:.1f}" stroke="#ddd"/>)"
                    R"(<text x="{3:.1f}" y="{4:.1f}" font-size="11" text-anchor="end">{5}</text>)",
                    f.left, f.py(v), f.left + f.w, f.left - 6, f.py(v) + 4, tick_label(v));
    svg += '\n';
  }
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="12" text-anchor="middle">{}</text>)",
                     f.left + f.w / 2, f.bottom + 34, escape(p.x_label));
  svg += fmt::format(R"(<text x="{0:.1f}" y="{1:.1f}" font-size="12" text-anchor="middle" )"
                     R"svg(transform="rotate(-90 {0:.1f} {1:.1f})">{2}</text>)svg",
                     f.x0 + 16, f.bottom - f.h / 2, escape(p.y_label));
  svg += '\n';
}

void draw_lines(std::string& svg, const frame& f, const panel& p) {
  int legend_row = 0;
  for (const auto& l : p.lines) {
    if (l.points.empty()) continue;
    std::string points;
    for (const auto& [x, y] : l.points) {
      points += fmt::format("{}{:.1f},{:.1f}", points.empty() ? "" : " ", f.px(x), f.py(y));
    }
    svg += fmt::format(R"(<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>)",
                       l.color, points);
    svg += '\n';
    if (!l.label.empty()) {
      svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" fill="{}">{}</text>)",
                         f.left + 6, f.bottom - f.h + 14 + 14 * legend_row++, l.color,
                         escape(l.label));
      svg += '\n';
    }
  }
  for (const auto& b : p.bars) {
    svg += fmt::format(
        R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="3"/>)",
        f.px(b.x0), f.py(b.y), std::max(f.px(b.x1), f.px(b.x0) + 1), f.py(b.y), b.color);
    svg += '\n';
  }
}

void draw_markers(std::string& svg, const frame& f, const panel& p) {
  for (const auto& m : p.markers) {
    const double dy = 12 + 14.0 * m.row;
    if (m.x > f.x.max) {  // off the scale: say so at the right edge
      svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end" )"
                         R"(fill="{}">{} {} &#8594;</text>)",
                         f.left + f.w - 4, f.bottom - f.h + dy, m.color, escape(m.label),
                         short_number(m.x));
      svg += '\n';
      continue;
    }
    // Labels right of their line, or left of it near the right edge.
    const bool left_of = f.px(m.x) > f.left + 0.75 * f.w;
    svg += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="{7}" )"
                       R"(stroke-dasharray="4 3"/><text x="{3:.1f}" y="{4:.1f}" font-size="11" )"
                       R"(text-anchor="{8}" fill="{7}">{5} {6}</text>)",
                       f.px(m.x), f.bottom, f.bottom - f.h, f.px(m.x) + (left_of ? -3 : 3),
                       f.bottom - f.h + dy, escape(m.label), short_number(m.x), m.color,
                       left_of ? "end" : "start");
    svg += '\n';
  }
}

/// The largest x and y of a panel's data, for axes chosen from it.
point data_max(const panel& p) {
  point m{0, 0};
  for (const auto& l : p.lines) {
    for (const auto& [x, y] : l.points) m = {std::max(m.first, x), std::max(m.second, y)};
  }
  for (const auto& b : p.bars) m = {std::max({m.first, b.x0, b.x1}), std::max(m.second, b.y)};
  return m;
}

void draw_panel(std::string& svg, const panel& p, double x0, double y0) {
  const auto [x_data, y_data] = data_max(p);
  const frame f{x0,
                x0 + pad_left,
                y0 + panel_h - pad_bottom,
                panel_w - pad_left - pad_right,
                panel_h - pad_top - pad_bottom,
                axis::around(p.x_max > 0 ? p.x_max : x_data),
                axis::around(p.y_max > 0 ? p.y_max : y_data)};
  svg += fmt::format(R"(<g id="{}">)", escape(p.id));
  svg += '\n';
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="14" text-anchor="middle">{}</text>)",
                     f.left + f.w / 2, y0 + 20, escape(p.title));
  svg += '\n';
  draw_axes(svg, f, p);
  const bool empty =
      std::all_of(p.lines.begin(), p.lines.end(), [](const line& l) { return l.points.empty(); }) &&
      p.bars.empty();
  if (empty) {
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="13" text-anchor="middle" )"
                       R"(fill="#888">no samples</text>)",
                       f.left + f.w / 2, f.bottom - f.h / 2);
    svg += '\n';
  } else {
    draw_lines(svg, f, p);
    draw_markers(svg, f, p);
  }
  if (!p.note.empty()) {
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end" )"
                       R"(fill="#555">{}</text>)",
                       f.left + f.w - 4, f.bottom - 6, escape(p.note));
    svg += '\n';
  }
  svg += "</g>\n";
}

}  // namespace

std::string render_figure(const std::string& title, const std::vector<panel>& panels,
                          std::size_t columns) {
  columns = std::max<std::size_t>(1, std::min(columns, std::max<std::size_t>(1, panels.size())));
  const std::size_t rows = (panels.size() + columns - 1) / columns;
  const double width = static_cast<double>(columns) * panel_w;
  const double height = static_cast<double>(rows) * panel_h + title_h;
  std::string svg =
      fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0:.0f}" height="{1:.0f}" )"
                  R"(viewBox="0 0 {0:.0f} {1:.0f}" font-family="sans-serif">)",
                  width, height);
  svg += '\n';
  svg += fmt::format(R"(<rect width="{:.0f}" height="{:.0f}" fill="white"/>)", width, height);
  svg += fmt::format(R"(<text x="{:.1f}" y="20" font-size="15" text-anchor="middle">{}</text>)",
                     width / 2, escape(title));
  svg += '\n';
  for (std::size_t i = 0; i < panels.size(); ++i) {
    draw_panel(svg, panels[i], static_cast<double>(i % columns) * panel_w,
               title_h + static_cast<double>(i / columns) * panel_h);
  }
  svg += "</svg>\n";
  return svg;
}

std::vector<point> cdf_points(std::vector<double> samples, std::size_t max_points) {
  std::vector<point> out;
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  const std::size_t stride = std::max<std::size_t>(1, n / std::max<std::size_t>(1, max_points));
  out.emplace_back(samples.front(), 0.0);
  for (std::size_t i = 0; i < n; i += stride) {
    out.emplace_back(samples[i], static_cast<double>(i + 1) / static_cast<double>(n));
  }
  out.emplace_back(samples.back(), 1.0);
  return out;
}

}  // namespace baton::report
