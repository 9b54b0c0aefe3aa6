// API keys (frontend/api_keys.hpp): the file's checks, and the gate's decisions on an
// injected clock.
#include "frontend/api_keys.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace baton::frontend {
namespace {

using namespace std::chrono_literals;
using clock = api_gate::clock;

constexpr const char* alice_key = "bk-alice-0123456789abcdef";
constexpr const char* bob_key = "bk-bob-0123456789abcdef";

std::string two_keys(std::uint32_t alice_streams, std::uint64_t bob_tokens) {
  return "[[key]]\nname = \"alice\"\nkey = \"" + std::string(alice_key) +
         "\"\nmax_streams = " + std::to_string(alice_streams) + "\n\n[[key]]\nname = \"bob\"\n" +
         "key = \"" + bob_key + "\"\ntokens_per_minute = " + std::to_string(bob_tokens) + "\n";
}

std::string bearer(const char* key) {
  return std::string("Bearer ") + key;
}

TEST(ApiKeys, AFileWithAnErrorIsRefusedWithItsLineAndField) {
  struct bad {
    std::string text;
    std::string says;
  };
  const bad cases[] = {
      {"[[key]]\nname = \"a\"\nkey = \"short\"\n", "keys.toml:3: the key of 'a' has 5 characters"},
      {"[[key]]\nname = \"a\"\n", "keys.toml:1: a [[key]] without 'key'"},
      {"[[key]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nmax_streams = -1\n",
       "keys.toml:4: 'max_streams' must be a whole number"},
      {"[[key]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nlimit = 3\n",
       "keys.toml:4: unknown field 'limit'"},
      {"[[key]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n[[key]]\nname = \"a\"\n"
       "key = \"0123456789abcdeg\"\n",
       "keys.toml:4: a second key named 'a'"},
      {"[[key]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n[[key]]\nname = \"b\"\n"
       "key = \"0123456789abcdef\"\n",
       "the key of 'b' is also another entry's"},
      {"[[key]\n", "keys.toml:1:"},
      {"[keys]\n", "keys.toml:1: unknown table or key 'keys'"},
  };
  for (const auto& c : cases) {
    auto parsed = api_keys::parse(c.text, "keys.toml");
    ASSERT_FALSE(parsed.has_value()) << c.text;
    EXPECT_EQ(parsed.error().code, errc::invalid_argument);
    EXPECT_NE(parsed.error().message.find(c.says), std::string::npos) << parsed.error().message;
  }
}

TEST(ApiKeys, KeysAreFoundByTheirValueOnly) {
  auto keys = api_keys::parse(two_keys(2, 0), "keys.toml");
  ASSERT_TRUE(keys.has_value()) << keys.error().message;
  EXPECT_EQ(keys->size(), 2u);
  ASSERT_NE(keys->find(alice_key), nullptr);
  EXPECT_EQ(keys->find(alice_key)->name, "alice");
  EXPECT_EQ(keys->find(alice_key)->max_streams, 2u);
  EXPECT_EQ(keys->find("bk-alice-0123456789abcdeF"), nullptr);
  EXPECT_EQ(keys->find("alice"), nullptr) << "a name is not a key";
  EXPECT_EQ(keys->find(""), nullptr);
}

/// A gate over two_keys(alice_streams, bob_tokens_per_minute), with no file to reload.
api_gate gate_of(std::uint32_t alice_streams, std::uint64_t bob_tokens_per_minute) {
  return api_gate(
      "/nonexistent/keys.toml",
      api_keys::parse(two_keys(alice_streams, bob_tokens_per_minute), "keys.toml").value());
}

TEST(ApiGate, NoKeyAWrongOneOrOneInTheClearIsUnauthorized) {
  auto gate = gate_of(0, 0);
  const auto now = clock::now();
  using kind = key_verdict::kind;
  EXPECT_EQ(gate.admit("", true, now).what, kind::unauthorized);
  EXPECT_EQ(gate.admit(std::string("Basic ") + alice_key, true, now).what, kind::unauthorized);
  EXPECT_EQ(gate.admit(bearer("bk-nobody-0123456789"), true, now).what, kind::unauthorized);
  const auto clear = gate.admit(bearer(alice_key), false, now);
  EXPECT_EQ(clear.what, kind::unauthorized);
  EXPECT_NE(clear.message.find("only over TLS or from loopback"), std::string::npos);
  const auto ok = gate.admit(bearer(alice_key), true, now);
  EXPECT_EQ(ok.what, kind::admitted);
  EXPECT_EQ(ok.name, "alice");
}

TEST(ApiGate, AKeysStreamsAreLimitedAndReleased) {
  auto gate = gate_of(2, 0);
  const auto now = clock::now();
  using kind = key_verdict::kind;
  EXPECT_EQ(gate.admit(bearer(alice_key), true, now).what, kind::admitted);
  EXPECT_EQ(gate.admit(bearer(alice_key), true, now).what, kind::admitted);
  const auto third = gate.admit(bearer(alice_key), true, now);
  EXPECT_EQ(third.what, kind::limited);
  EXPECT_EQ(third.retry_after_s, 1u);
  EXPECT_EQ(gate.admit(bearer(bob_key), true, now).what, kind::admitted) << "bob has his own";
  gate.finished("alice", 10, now);
  EXPECT_EQ(gate.admit(bearer(alice_key), true, now).what, kind::admitted);
}

TEST(ApiGate, TokensPerMinuteRefillAndSayWhenToComeBack) {
  auto gate = gate_of(0, 600);  // bob: 10 tokens a second
  auto now = clock::now();
  using kind = key_verdict::kind;
  ASSERT_EQ(gate.admit(bearer(bob_key), true, now).what, kind::admitted);
  gate.finished("bob", 1200, now);  // 600 over its minute
  const auto over = gate.admit(bearer(bob_key), true, now);
  ASSERT_EQ(over.what, kind::limited);
  EXPECT_EQ(over.retry_after_s, 61u);  // (600 + 1) tokens at 10 a second
  EXPECT_NE(over.message.find("tokens per min"), std::string::npos) << over.message;
  EXPECT_EQ(gate.admit(bearer(bob_key), true, now + 59s).what, kind::limited);
  EXPECT_EQ(gate.admit(bearer(bob_key), true, now + 61s).what, kind::admitted);
}

TEST(ApiGate, AChangedFileIsReloadedAndABadOneKeepsTheKeysBeforeIt) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("baton-api-keys-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "keys.toml";
  const auto write = [&](const std::string& text) {
    std::ofstream(file, std::ios::trunc) << text;
    ::chmod(file.c_str(), 0600);
  };
  write(two_keys(0, 0));
  auto keys = api_keys::load(file);
  ASSERT_TRUE(keys.has_value()) << keys.error().message;
  api_gate gate(file, std::move(*keys));
  auto now = clock::now();
  using kind = key_verdict::kind;
  ASSERT_EQ(gate.check(bearer(alice_key), true, now).what, kind::admitted);

  // Alice revoked, carol added (a longer file: its size changes even within one mtime tick).
  write("[[key]]\nname = \"carol\"\nkey = \"bk-carol-0123456789abcdef-longer\"\n");
  now += 2s;
  EXPECT_EQ(gate.check(bearer(alice_key), true, now).what, kind::unauthorized);
  EXPECT_EQ(gate.check("Bearer bk-carol-0123456789abcdef-longer", true, now).what, kind::admitted);
  EXPECT_EQ(gate.reloads(), 1u);

  write("[[key]]\nname = \"carol\"\n");  // broken: carol stays
  now += 2s;
  EXPECT_EQ(gate.check("Bearer bk-carol-0123456789abcdef-longer", true, now).what, kind::admitted);
  EXPECT_EQ(gate.reload_failures(), 1u);

  ::chmod(file.c_str(), 0644);
  EXPECT_FALSE(api_keys::load(file).has_value()) << "a file others may read is refused";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace baton::frontend
