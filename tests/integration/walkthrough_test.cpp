// docs/operations.md's three-host walk-through, followed literally. The test reads the doc,
// writes its marked file (`<!-- walkthrough: file NAME -->`), makes each marked host
// (`<!-- walkthrough: host NAME -->`) a Linux network namespace holding the addresses
// the topology gives the nodes that host starts, and runs each marked block's commands in
// document order in its host's namespace, with only what a reader sets: `baton` on PATH
// and BATON_MODEL_PATH. `baton node` runs in the background as the doc says; every other
// command must exit 0. The texts generated through the router (native client and curl)
// and in one process must be byte-identical to the single-process reference.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/address.hpp"
#include "cluster_harness.hpp"
#include "launcher/netns_lab.hpp"
#include "runtime/topology.hpp"

namespace baton::testing {
namespace {

using launcher::netns_lab;

using namespace std::chrono_literals;
using json = nlohmann::json;

/// A fenced block of the doc that a `<!-- walkthrough: KIND NAME -->` line marks.
struct doc_block {
  std::string kind;  ///< "file" or "host"
  std::string name;
  std::vector<std::string> lines;
};

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The marked blocks, in document order. A marker is followed (blank lines aside) by a
/// fence; anything else between them is an error, reported as a block of kind "error".
/// Blocks may be indented (inside a list item): the fence's indentation is removed from
/// every line.
std::vector<doc_block> marked_blocks(const std::string& markdown) {
  static const std::regex marker(R"(^\s*<!-- walkthrough: (file|host) (\S+) -->\s*$)");
  std::vector<doc_block> blocks;
  std::istringstream lines(markdown);
  std::optional<doc_block> pending;
  constexpr auto outside = std::string::npos;
  std::size_t indent = outside;  ///< the fence's indentation inside a marked block
  for (std::string line; std::getline(lines, line);) {
    const auto text = line.find_first_not_of(' ');
    const bool fence = text != std::string::npos && line.compare(text, 3, "```") == 0;
    std::smatch m;
    if (indent != outside) {
      if (fence) {
        blocks.push_back(std::move(*pending));
        pending.reset();
        indent = outside;
      } else {
        pending->lines.push_back(line.substr(std::min({indent, text, line.size()})));
      }
    } else if (std::regex_match(line, m, marker)) {
      pending = doc_block{m[1], m[2], {}};
    } else if (pending && fence) {
      indent = text;
    } else if (pending && text != std::string::npos) {
      blocks.push_back({"error", pending->name, {line}});
      pending.reset();
    }
  }
  return blocks;
}

/// A shell block's commands: continuation lines joined, blank and comment lines dropped.
std::vector<std::string> commands(const doc_block& block) {
  std::vector<std::string> out;
  std::string current;
  for (const auto& line : block.lines) {
    if (current.empty() && (line.empty() || line.starts_with("#"))) continue;
    if (line.ends_with("\\")) {
      current += line.substr(0, line.size() - 1);
      continue;
    }
    out.push_back(current + line);
    current.clear();
  }
  return out;
}

/// The words of a command as /bin/sh splits them (quotes and backslashes; no expansion).
std::vector<std::string> shell_words(const std::string& command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < command.size(); ++i) {
    const char c = command[i];
    if (quote == '\'') {
      if (c == '\'')
        quote = 0;
      else
        word += c;
    } else if (quote == '"') {
      if (c == '"')
        quote = 0;
      else if (c == '\\' && i + 1 < command.size())
        word += command[++i];
      else
        word += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < command.size()) {
      word += command[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(word);
  return words;
}

/// The value after `flag` in `words` ("" if absent).
std::string flag(const std::vector<std::string>& words, const std::string& name) {
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    if (words[i] == name) return words[i + 1];
  }
  return "";
}

bool starts_with_words(const std::string& command, const std::string& prefix) {
  return command.starts_with(prefix + " ") || command == prefix;
}

struct run_result {
  int status = -1;  ///< the exit status; -1 when killed or timed out
  std::string out;
  std::string err;
};

/// Runs `argv` with its output and errors in files of `dir`, killed after `timeout`.
run_result run_for(const std::vector<std::string>& argv, const std::filesystem::path& dir,
                   std::chrono::milliseconds timeout) {
  const auto out_file = dir / "command.out";
  const auto err_file = dir / "command.err";
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    const int out = open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  run_result r;
  int status = 0;
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.err = "(killed: still running after " + std::to_string(timeout.count()) + " ms)\n";
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  if (WIFEXITED(status) && r.err.empty()) r.status = WEXITSTATUS(status);
  r.out = read_text(out_file);
  r.err += read_text(err_file);
  return r;
}

/// The text of a node's listening line as the topology's fixed addresses give it.
std::string listening_line(const runtime::node_spec& n) {
  return fmt::format("node {} listening fabric={} admin={}{}{}", n.name, n.fabric_address,
                     n.admin_address, n.native_address.empty() ? "" : " native=" + n.native_address,
                     n.http_address.empty() ? "" : " http=" + n.http_address);
}

/// Every host a node listens on (its fabric, admin, native and http addresses).
std::set<std::string> hosts_of(const runtime::node_spec& n) {
  std::set<std::string> hosts;
  for (const auto* a : {&n.fabric_address, &n.admin_address, &n.native_address, &n.http_address}) {
    if (auto parsed = parse_host_port(*a, port_zero::allowed)) hosts.insert(parsed->host);
  }
  return hosts;
}

class Walkthrough : public ::testing::Test {
 protected:
  void SetUp() override {
    auto made = netns_lab::create();
    if (!made) {
      GTEST_SKIP() << "this test needs `ip netns` (root and iproute2) to make one network "
                      "namespace per host: "
                   << made.error().message;
    }
    lab_ = std::move(*made);
    dir_ = std::filesystem::temp_directory_path() / fmt::format("baton-walkthrough-{}", getpid());
    std::filesystem::create_directories(dir_);
  }

  void TearDown() override {
    for (auto it = started_.rbegin(); it != started_.rend(); ++it) nodes_.erase(*it);  // killed
    lab_.reset();  // kills what is left in the namespaces, deletes them
    std::error_code ignored;
    if (!dir_.empty() && std::getenv("BATON_KEEP") == nullptr) {
      std::filesystem::remove_all(dir_, ignored);
    }
  }

  /// The script a reader's shell on that host runs: what the doc has them set, then the
  /// command from the doc's folder (where the topology file was copied).
  [[nodiscard]] std::string script(const std::string& command, bool exec) const {
    const auto bin = std::filesystem::path(BATON_BINARY).parent_path().string();
    return fmt::format("export PATH={}:\"$PATH\" BATON_MODEL_PATH={}; cd {} && {}{}", quote(bin),
                       quote(BATON_SHARED_MODELS_DIR), quote(dir_.string()), exec ? "exec " : "",
                       command);
  }

  run_result run(const std::string& host, const std::string& command,
                 std::chrono::milliseconds timeout = 30s) {
    std::printf("[%s]$ %s\n", host.c_str(), command.c_str());
    auto r = run_for(lab_->shell(host, script(command, false)), dir_, timeout);
    std::printf("%s%s", r.out.c_str(), r.err.c_str());
    return r;
  }

  /// `baton node ...` in the background, as a reader runs it under systemd or tmux; waits
  /// for its listening line.
  void start_node(const std::string& host, const std::string& command) {
    const auto name = flag(shell_words(command), "--name");
    const auto* spec = topology_.find(name);
    ASSERT_NE(spec, nullptr) << command << ": no such node in the topology";
    std::printf("[%s]$ %s &\n", host.c_str(), command.c_str());
    nodes_[name] = std::make_unique<child_process>(lab_->shell(host, script(command, true)),
                                                   dir_ / (name + ".log"));
    started_.push_back(name);
    const auto line = nodes_[name]->wait_for_line("node " + name + " listening ", 30s);
    ASSERT_TRUE(line) << name << " did not report its addresses:\n" << nodes_[name]->log();
    std::printf("%s\n", line->c_str());
    EXPECT_EQ(*line, listening_line(*spec));
    // The doc's sample of this line, when it shows one, is the real one.
    const auto shown = doc_.find("node " + name + " listening ");
    if (shown != std::string::npos) {
      EXPECT_EQ(doc_.substr(shown, doc_.find('\n', shown) - shown), *line);
    }
  }

  /// What the doc says to wait for before using the cluster: every router logs
  /// "router ready native=..." once it has a prefill and a decode worker.
  void wait_until_routers_ready() {
    for (const auto& n : topology_.nodes) {
      if (!n.has_role(wire::role::router) || !nodes_.contains(n.name)) continue;
      const auto ready = wait_until(
          [&] { return nodes_[n.name]->log().find("router ready native=") != std::string::npos; },
          30s);
      ASSERT_TRUE(ready) << n.name << " never placed on both roles:\n" << nodes_[n.name]->log();
    }
  }

  /// `baton status` again until every node is alive (an operator runs it until it says so).
  void status_until_alive(const std::string& host, const std::string& command) {
    run_result r;
    const auto all_alive = [&] {
      r = run_for(lab_->shell(host, script(command, false)), dir_, 10s);
      if (r.status != 0) return false;
      for (const auto& n : topology_.nodes) {
        const std::regex row("(^|\n)" + n.name + " [^\n]* alive ");
        if (!std::regex_search(r.out, row)) return false;
      }
      return true;
    };
    std::printf("[%s]$ %s\n", host.c_str(), command.c_str());
    const bool alive = wait_until(all_alive, 30s).has_value();
    std::printf("%s%s", r.out.c_str(), r.err.c_str());
    EXPECT_TRUE(alive) << "not every node alive:\n" << r.out << r.err;
  }

  std::unique_ptr<netns_lab> lab_;
  std::filesystem::path dir_;
  std::string doc_;
  runtime::topology topology_;
  std::map<std::string, std::unique_ptr<child_process>> nodes_;
  std::vector<std::string> started_;
  reference reference_;
};

TEST_F(Walkthrough, ThreeHostsOfOperationsMdServeTheReferenceText) {
  doc_ = read_text(BATON_SOURCE_DIR "/docs/operations.md");
  const auto blocks = marked_blocks(doc_);
  // 1. The topology file, the same on every host (they share this folder).
  std::filesystem::path topology_file;
  std::vector<std::string> host_order;
  for (const auto& b : blocks) {
    ASSERT_NE(b.kind, "error") << "a walkthrough marker for " << b.name
                               << " is not followed by a fenced block: " << b.lines[0];
    if (b.kind == "file") {
      std::ofstream(dir_ / b.name) << fmt::format("{}\n", fmt::join(b.lines, "\n"));
      if (b.name.ends_with(".toml")) topology_file = dir_ / b.name;
    } else if (std::find(host_order.begin(), host_order.end(), b.name) == host_order.end()) {
      host_order.push_back(b.name);
    }
  }
  ASSERT_FALSE(topology_file.empty()) << "no marked topology file in docs/operations.md";
  auto topology = runtime::load_topology(topology_file);
  ASSERT_TRUE(topology) << topology.error().message;
  topology_ = *topology;
  ASSERT_EQ(host_order.size(), 3u) << "the walk-through has three hosts";

  // 2. One namespace per host, holding the addresses of the nodes it starts.
  std::map<std::string, std::set<std::string>> addresses;
  for (const auto& b : blocks) {
    if (b.kind != "host") continue;
    for (const auto& c : commands(b)) {
      if (!starts_with_words(c, "baton node")) continue;
      const auto* spec = topology_.find(flag(shell_words(c), "--name"));
      ASSERT_NE(spec, nullptr) << c;
      addresses[b.name].merge(hosts_of(*spec));
    }
  }
  for (const auto& host : host_order) {
    const auto& a = addresses[host];
    auto ok = lab_->add_host(host, std::vector<std::string>(a.begin(), a.end()));
    ASSERT_TRUE(ok) << ok.error().message;
  }

  // 3. Every block in document order, each in its host's namespace.
  std::optional<std::string> routed, in_process;
  int curls = 0;
  for (const auto& b : blocks) {
    if (b.kind != "host") continue;
    for (const auto& c : commands(b)) {
      const auto words = shell_words(c);
      if (starts_with_words(c, "baton node")) {
        ASSERT_NO_FATAL_FAILURE(start_node(b.name, c));
        continue;
      }
      if (starts_with_words(c, "baton status")) {
        status_until_alive(b.name, c);
        continue;
      }
      const bool uses_cluster = starts_with_words(c, "curl") || flag(words, "--router") != "";
      if (uses_cluster) {
        ASSERT_NO_FATAL_FAILURE(wait_until_routers_ready());
      }
      const auto r = run(b.name, c);
      ASSERT_EQ(r.status, 0) << c << "\n" << r.out << r.err;
      if (starts_with_words(c, "baton check")) {
        for (const auto& n : topology_.nodes) {
          for (const auto& host :
               {n.fabric_address, n.admin_address, n.native_address, n.http_address}) {
            if (!host.empty()) {
              EXPECT_NE(r.out.find(host), std::string::npos) << host << "\n" << r.out;
            }
          }
        }
      } else if (starts_with_words(c, "baton generate")) {
        for (const char* f : {"--temperature", "--top-p", "--seed", "--steps"}) {
          ASSERT_NE(flag(words, f), "") << c << ": the reference needs " << f;
        }
        const auto expected =
            reference_(words.back(), std::stof(flag(words, "--temperature")),
                       std::stof(flag(words, "--top-p")), std::stoull(flag(words, "--seed")),
                       std::stoi(flag(words, "--steps")));
        EXPECT_EQ(r.out, expected) << c;
        (flag(words, "--router").empty() ? in_process : routed) = r.out;
      } else if (starts_with_words(c, "curl")) {
        const auto request = json::parse(flag(words, "-d"), nullptr, false);
        const auto answer = json::parse(r.out, nullptr, false);
        ASSERT_TRUE(request.is_object() && answer.is_object()) << c << "\n" << r.out;
        ASSERT_TRUE(request.value("echo", false)) << "the doc's curl echoes the prompt";
        const int positions =
            answer["usage"]["prompt_tokens"].get<int>() + request["max_tokens"].get<int>() - 1;
        const auto expected = reference_(request["prompt"], request["temperature"].get<float>(),
                                         request["top_p"].get<float>(),
                                         request["seed"].get<std::uint64_t>(), positions);
        EXPECT_EQ(answer["choices"][0]["text"].get<std::string>() + "\n", expected) << r.out;
        ++curls;
      }
    }
  }
  EXPECT_TRUE(routed) << "the walk-through generates through the router";
  EXPECT_TRUE(in_process) << "the walk-through generates in one process";
  EXPECT_EQ(routed, in_process);
  EXPECT_EQ(curls, 1) << "the walk-through asks the HTTP API once";
  // The router's readiness line as the doc shows it.
  const auto shown = doc_.find("router ready native=", doc_.find("<!-- walkthrough: "));
  ASSERT_NE(shown, std::string::npos) << "the doc shows the router's ready line";
  const auto ready = doc_.substr(shown, doc_.find_first_of("`\n", shown) - shown);
  const auto router = std::find_if(topology_.nodes.begin(), topology_.nodes.end(),
                                   [](const auto& n) { return n.has_role(wire::role::router); });
  ASSERT_NE(router, topology_.nodes.end());
  EXPECT_NE(nodes_[router->name]->log().find(ready), std::string::npos)
      << ready << "\n"
      << nodes_[router->name]->log();

  // 4. Stopping: SIGTERM makes each node leave and exit 0.
  for (auto it = started_.rbegin(); it != started_.rend(); ++it) {
    auto& node = *nodes_[*it];
    node.signal(SIGTERM);
    const auto status = node.wait(15s);
    ASSERT_TRUE(status) << *it << " did not stop:\n" << node.log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *it << "\n" << node.log();
  }
}

}  // namespace
}  // namespace baton::testing
