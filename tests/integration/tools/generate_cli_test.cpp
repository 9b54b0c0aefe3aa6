// Runs the real `baton` binary (BATON_BINARY) and checks what it prints.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "tests/unit/engine/test_models.hpp"

namespace {

struct run_result {
  int exit_code = -1;
  std::string out;
};

/// Runs `args` through /bin/sh with the baton binary, after `before` (a `cd`, an
/// environment change); captures stdout only.
run_result run_baton(const std::string& args, const std::string& before = {}) {
  const std::string command = before + std::string("'") + BATON_BINARY + "' " + args;
  run_result result;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string models(const char* name) {
  return std::string("'") + BATON_SHARED_MODELS_DIR + "/" + name + "'";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(GenerateCli, GreedyOutputIsByteIdenticalToLlama2c) {
  const auto r = run_baton("generate --model " + models("stories260K.bin") + " --tokenizer " +
                           models("tok512.bin") +
                           " --temperature 0 --steps 100 'Once upon a time' 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, read_text(std::string(BATON_SHARED_MODELS_DIR) + "/expected_t0_n100.txt"));
}

TEST(GenerateCli, SeededOutputIsByteIdenticalToLlama2c) {
  const auto r = run_baton("generate --model " + models("stories260K.bin") + " --tokenizer " +
                           models("tok512.bin") +
                           " --temperature 0.8 --top-p 0.95 --seed 7 --steps 150 'Lily and Ben'"
                           " 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, read_text(std::string(BATON_SHARED_MODELS_DIR) +
                             "/expected_t0.8_p0.95_s7_n150_lily.txt"));
}

TEST(GenerateCli, DiagnosticsGoToStderr) {
  const auto r =
      run_baton("generate --model " + models("stories260K.bin") + " --tokenizer " +
                models("tok512.bin") + " --temperature 0 --steps 10 'Once' 2>&1 >/dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("kernel="), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tok/s"), std::string::npos) << r.out;
}

TEST(GenerateCli, BadModelFailsWithMessage) {
  const auto r = run_baton("generate --model " + models("tok512.bin") + " --tokenizer " +
                           models("tok512.bin") + " 'Once' 2>&1 >/dev/null");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("invalid_argument"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tok512.bin"), std::string::npos) << r.out;
}

/// A fresh folder with no models in it or beside it, for commands that must search.
std::string empty_folder(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("baton-cli-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(GenerateCli, ModelNamesAreFoundInTheModelSearchPathAsNodesFindThem) {
  const auto dir = empty_folder("names");
  const auto r = run_baton(
      "generate --model stories260K.bin --tokenizer tok512.bin --temperature 0 --steps 100 "
      "'Once upon a time' 2>/dev/null",
      "cd '" + dir + "' && BATON_MODEL_PATH='/nonexistent:" BATON_SHARED_MODELS_DIR "' ");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, read_text(std::string(BATON_SHARED_MODELS_DIR) + "/expected_t0_n100.txt"));
  std::filesystem::remove_all(dir);
}

TEST(GenerateCli, AModelNameNotFoundSaysWhereItLookedAndAboutBatonModelPath) {
  const auto dir = empty_folder("missing");
  std::ofstream(dir + "/here.bin") << "x";
  const auto r =
      run_baton("generate --model here.bin --tokenizer tok512.bin 'Once' 2>&1 >/dev/null",
                "cd '" + dir + "' && unset BATON_MODEL_PATH && ");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no checkpoint 'here.bin' in the model search path (" + dir + "/models"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("no tokenizer 'tok512.bin' in the model search path"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("which is not searched: write ./here.bin"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BATON_MODEL_PATH is not set in this process's environment"),
            std::string::npos)
      << r.out;
  std::filesystem::remove_all(dir);
}

/// cluster.toml with `from` replaced by `to` everywhere, written into `dir`.
std::string cluster_variant(const std::string& dir, const std::string& from,
                            const std::string& to) {
  std::string text = read_text(std::string(BATON_SOURCE_DIR) + "/cluster.toml");
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  std::ofstream(dir + "/cluster.toml") << text;
  return dir + "/cluster.toml";
}

TEST(CheckCli, PrintsEveryAddressOfEveryNodeAndTheTopologysWarnings) {
  const auto r = run_baton("check '" BATON_SOURCE_DIR "/cluster.toml' 2>&1",
                           "BATON_MODEL_PATH='" BATON_SHARED_MODELS_DIR "' ");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* address : {"127.0.0.1:7100", "127.0.0.1:9100", "127.0.0.1:7000",
                              "127.0.0.1:8000", "127.0.0.1:7104", "127.0.0.1:9104"}) {
    EXPECT_NE(r.out.find(address), std::string::npos) << address << "\n" << r.out;
  }
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nnode +fabric +admin +native +http\n")))
      << r.out;
  EXPECT_NE(r.out.find("warning: the kv role (decode-0, decode-1) is accepted but starts no "
                       "actor yet"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("BATON_MODEL_PATH in the environment of every `baton node`"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("port 0"), std::string::npos) << r.out;
}

TEST(CheckCli, SaysWhatPortZeroMeansAndWhereAMissingModelWasLookedFor) {
  const auto dir = empty_folder("check");
  const auto any = cluster_variant(dir, "127.0.0.1:8000", "127.0.0.1:0");
  auto r = run_baton("check '" + any + "' 2>&1", "BATON_MODEL_PATH='" BATON_SHARED_MODELS_DIR "' ");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("port 0: any free port, reported at start"), std::string::npos) << r.out;

  const auto missing = cluster_variant(dir, "stories260K.bin", "nope.bin");
  r = run_baton("check '" + missing + "' 2>&1", "BATON_MODEL_PATH=/nonexistent ");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("no checkpoint 'nope.bin' in the model search path (/nonexistent, "),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("BATON_MODEL_PATH is \"/nonexistent\" here"), std::string::npos) << r.out;
  std::filesystem::remove_all(dir);
}

TEST(ModelCli, SynthThenInfo) {
  const std::string path = baton::engine::testing::temp_path("cli_synth.bin");
  const auto synth = run_baton(
      "model synth --dim 64 --hidden 160 --layers 2 --heads 4 "
      "--kv-heads 2 --vocab 512 --seq-len 32 --seed 3 --out '" +
      path + "' 2>/dev/null");
  ASSERT_EQ(synth.exit_code, 0);
  const auto info = run_baton("model info '" + path + "'");
  EXPECT_EQ(info.exit_code, 0);
  EXPECT_NE(info.out.find("n_kv_heads=2"), std::string::npos) << info.out;
  // 512*64 + 2*(64 + 64*64*2 + 32*64*2 + 64 + 3*160*64) + 64
  EXPECT_NE(info.out.find("parameters  119104"), std::string::npos) << info.out;
  const auto gen = run_baton("generate --model '" + path + "' --tokenizer " + models("tok512.bin") +
                             " --temperature 0 --steps 20 'Once' 2>/dev/null");
  EXPECT_EQ(gen.exit_code, 0);
  EXPECT_EQ(gen.out.rfind("Once", 0), 0U) << gen.out;
}

// `baton model roofline`: HARDWARE.md section 6 within 5%, every line labelled.
double figure_after(const std::string& out, const std::string& label) {
  const auto at = out.find(label);
  if (at == std::string::npos) return -1.0;
  return std::stod(out.substr(at + label.size()));
}

void expect_every_line_labelled(const std::string& out) {
  std::size_t start = 0;
  while (start < out.size()) {
    const std::size_t end = out.find('\n', start);
    const std::string line = out.substr(start, end - start);
    EXPECT_TRUE(line.find("predicted") != std::string::npos ||
                line.find("emulated") != std::string::npos)
        << line;
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

TEST(RooflineCli, Trainium2PrefillMatchesSection6) {
  const auto r =
      run_baton("model roofline --profile trn2 --model llama-3.1-70b --prompt 2000 --batch 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NEAR(figure_after(r.out, "predicted prefill of 2000 tokens: "), 107.0, 0.05 * 107.0)
      << r.out;
  expect_every_line_labelled(r.out);
}

TEST(RooflineCli, H100DecodeStepMatchesSection6) {
  const auto r = run_baton(
      "model roofline --profile h100 --model llama-3.1-70b --prompt 2000 --batch 1 "
      "--context 2250");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NEAR(figure_after(r.out, "at context 2250: "), 10.6, 0.05 * 10.6) << r.out;
  expect_every_line_labelled(r.out);
  const auto json = run_baton(
      "model roofline --profile h100 --model llama-3.1-70b --prompt 2000 --context 2250 --json");
  ASSERT_EQ(json.exit_code, 0);
  EXPECT_NEAR(figure_after(json.out, "\"predicted_decode_step_ms\":"), 10.6, 0.05 * 10.6)
      << json.out;
  EXPECT_NE(json.out.find("\"profile\":\"emulated:h100\""), std::string::npos) << json.out;
}

TEST(RooflineCli, BadProfileAndShapeFailWithMessage) {
  const auto p =
      run_baton("model roofline --profile tpu --model llama-3.1-70b --prompt 10 2>&1 >/dev/null");
  EXPECT_EQ(p.exit_code, 1);
  EXPECT_NE(p.out.find("unknown hardware profile 'tpu'"), std::string::npos) << p.out;
  const auto s =
      run_baton("model roofline --profile trn2 --model llama-7b --prompt 10 2>&1 >/dev/null");
  EXPECT_EQ(s.exit_code, 1);
  EXPECT_NE(s.out.find("unknown model shape 'llama-7b'"), std::string::npos) << s.out;
  const auto c = run_baton("model roofline --profile cs3 --model custom --checkpoint " +
                           models("stories260K.bin") + " --prompt 100 --batch 4");
  EXPECT_EQ(c.exit_code, 0);
  EXPECT_NE(c.out.find("extrapolated from llama-3.1-8b"), std::string::npos) << c.out;
  expect_every_line_labelled(c.out);
}

}  // namespace
