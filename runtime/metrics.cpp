#include "runtime/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "base/check.hpp"

namespace baton::runtime {
namespace {

bool valid_name(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == ':';
  });
}

/// Escapes a label value as the exposition format requires.
std::string escape(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string label_text(const metric_labels& labels, std::string_view extra_key = {},
                       std::string_view extra_value = {}) {
  std::string out;
  for (const auto& [k, v] : labels) {
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", k, escape(v));
  }
  if (!extra_key.empty()) {
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", extra_key, extra_value);
  }
  return out.empty() ? "" : "{" + out + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

}  // namespace

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  BATON_CHECK(std::is_sorted(bounds_.begin(), bounds_.end()) &&
                  std::adjacent_find(bounds_.begin(), bounds_.end()) == bounds_.end(),
              "histogram bounds must increase strictly");
  buckets_.resize(bounds_.size() + 1);
}

void histogram::observe(double v) noexcept {
  const auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                          bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::uint64_t histogram::cumulative_count(std::size_t i) const noexcept {
  std::uint64_t total = 0;
  for (std::size_t b = 0; b <= i && b < buckets_.size(); ++b) total += buckets_[b].load();
  return total;
}

std::vector<double> exponential_bounds(double start, double factor, int count) {
  std::vector<double> bounds;
  for (int i = 0; i < count; ++i, start *= factor) bounds.push_back(start);
  return bounds;
}

metrics_registry::entry& metrics_registry::find_or_add(std::string_view name, std::string_view help,
                                                       metric_labels labels, kind type,
                                                       bool& added) {
  BATON_CHECK(valid_name(name), "metric names match [a-zA-Z_:][a-zA-Z0-9_:]*");
  for (auto& e : entries_) {
    if (e.name == name) {
      BATON_CHECK(e.type == type, "a metric name is used with two types");
      if (e.labels == labels) {
        added = false;
        return e;
      }
    }
  }
  added = true;
  const std::size_t index = type == kind::counter ? counters_.size()
                            : type == kind::gauge ? gauges_.size()
                                                  : histograms_.size();
  // Keep a family's series together, so the text output lists each family once.
  auto last = std::find_if(entries_.rbegin(), entries_.rend(),
                           [&](const entry& e) { return e.name == name; });
  auto at = last == entries_.rend() ? entries_.end() : last.base();
  return *entries_.insert(
      at, entry{std::string(name), std::string(help), std::move(labels), type, index});
}

counter& metrics_registry::get_counter(std::string_view name, std::string_view help,
                                       metric_labels labels) {
  std::lock_guard lock(mutex_);
  bool added = false;
  auto& e = find_or_add(name, help, std::move(labels), kind::counter, added);
  if (added) counters_.emplace_back();
  return counters_[e.index];
}

gauge& metrics_registry::get_gauge(std::string_view name, std::string_view help,
                                   metric_labels labels) {
  std::lock_guard lock(mutex_);
  bool added = false;
  auto& e = find_or_add(name, help, std::move(labels), kind::gauge, added);
  if (added) gauges_.emplace_back();
  return gauges_[e.index];
}

histogram& metrics_registry::get_histogram(std::string_view name, std::string_view help,
                                           std::vector<double> bounds, metric_labels labels) {
  std::lock_guard lock(mutex_);
  bool added = false;
  auto& e = find_or_add(name, help, std::move(labels), kind::histogram, added);
  if (added) histograms_.emplace_back(std::move(bounds));
  return histograms_[e.index];
}

std::string metrics_registry::prometheus_text() const {
  std::lock_guard lock(mutex_);
  std::string out;
  std::string_view family;
  for (const auto& e : entries_) {
    if (e.name != family) {
      family = e.name;
      static constexpr const char* type_names[] = {"counter", "gauge", "histogram"};
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", e.name, e.help, e.name,
                         type_names[static_cast<int>(e.type)]);
    }
    if (e.type == kind::counter) {
      out += fmt::format("{}{} {}\n", e.name, label_text(e.labels), counters_[e.index].value());
    } else if (e.type == kind::gauge) {
      out +=
          fmt::format("{}{} {}\n", e.name, label_text(e.labels), number(gauges_[e.index].value()));
    } else {
      const auto& h = histograms_[e.index];
      for (std::size_t i = 0; i <= h.bounds().size(); ++i) {
        const double bound = i < h.bounds().size() ? h.bounds()[i] : INFINITY;
        out += fmt::format("{}_bucket{} {}\n", e.name, label_text(e.labels, "le", number(bound)),
                           h.cumulative_count(i));
      }
      out += fmt::format("{}_sum{} {}\n", e.name, label_text(e.labels), number(h.sum()));
      out += fmt::format("{}_count{} {}\n", e.name, label_text(e.labels),
                         h.cumulative_count(h.bounds().size()));
    }
  }
  return out;
}

std::string merge_node_metrics(const std::vector<std::pair<std::string, std::string>>& texts,
                               const std::vector<std::string>& prefixes) {
  struct family {
    std::string header;  // its HELP and TYPE lines
    std::string samples;
  };
  std::vector<std::string> order;
  std::map<std::string, family> families;
  for (const auto& [node, text] : texts) {
    std::string current;  // the family of the samples that follow, "" = not kept
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
        const auto name = line.substr(7, line.find(' ', 7) - 7);
        const bool kept = std::any_of(prefixes.begin(), prefixes.end(),
                                      [&](const std::string& p) { return name.starts_with(p); });
        current = kept ? name : "";
        if (!kept) continue;
        auto [it, added] = families.try_emplace(name);
        if (added) order.push_back(name);
        // One HELP and one TYPE per family, from the first node that has them.
        if (it->second.header.find(line.substr(0, 7)) == std::string::npos) {
          it->second.header += line + "\n";
        }
        continue;
      }
      if (current.empty() || line.empty() || line.starts_with('#')) continue;
      const auto brace = line.find('{');
      const auto space = line.find(' ');
      std::string labelled =
          brace != std::string::npos && brace < space
              ? fmt::format("{}{{node=\"{}\",{}", line.substr(0, brace), node,
                            line.substr(brace + 1))
              : fmt::format("{}{{node=\"{}\"}}{}", line.substr(0, space), node, line.substr(space));
      families[current].samples += labelled + "\n";
    }
  }
  std::string out;
  for (const auto& name : order) out += families[name].header + families[name].samples;
  return out;
}

}  // namespace baton::runtime
