// The OpenAI request parser on its own: no sockets. Every field, at every depth, given a
// value of every JSON type, gets a typed answer (a request, or a 4xx naming the field),
// never an exception; the request that once ended the router process among them.
#include "frontend/openai_request.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace baton::frontend {
namespace {

using json = nlohmann::json;

const request_limits limits{"stories260K", 1000, 4096};

/// A value of every JSON type, and the edges of the numeric ones.
std::vector<json> every_type() {
  return {nullptr,
          true,
          false,
          0,
          1,
          -1,
          1.5,
          -0.0,
          1e300,
          18446744073709551615ull,
          -9223372036854775807ll - 1,
          "",
          "x",
          "text",
          json::array(),
          json::array({1}),
          json::array({"a"}),
          json::array({json::object()}),
          json::array({json::array({json::object({{"type", 1}})})}),
          json::object(),
          json::object({{"type", "text"}}),
          json::object({{"type", 1}, {"text", "x"}}),
          json::object({{"role", "user"}, {"content", 5}})};
}

json completion() {
  return {{"model", "stories260K"}, {"prompt", "Once"}};
}
json chat() {
  return {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
}

/// Parses `body`; the answer is a request, or a 4xx whose param is `param` or a field
/// inside it ("messages[0].content[1].type").
void expect_typed_answer(api_kind kind, const json& body, const std::string& param) {
  SCOPED_TRACE(body.dump());
  tl::expected<openai_request, api_error> r;
  ASSERT_NO_THROW(r = parse_openai_request(kind, body.dump(), limits));
  if (r) return;
  EXPECT_GE(r.error().status, 400u);
  EXPECT_LT(r.error().status, 500u);
  EXPECT_FALSE(r.error().message.empty());
  const auto& got = r.error().param;
  EXPECT_TRUE(got == param || got.starts_with(param + "[") || got.starts_with(param + "."))
      << got << " for " << param;
}

TEST(OpenaiRequest, TheContentPartWithANumberTypeIs400NotACrash) {
  const auto body =
      R"({"model":"stories260K","messages":[{"role":"user","content":[{"type":1,"text":"x"}]}]})";
  auto r = parse_openai_request(api_kind::chat, body, limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 400u);
  EXPECT_EQ(r.error().param, "messages[0].content[0].type");
  EXPECT_EQ(r.error().code, "invalid_type");
}

TEST(OpenaiRequest, EveryTopLevelFieldOfEveryTypeGetsATypedAnswer) {
  const std::vector<std::string> common = {"model",
                                           "max_tokens",
                                           "temperature",
                                           "top_p",
                                           "n",
                                           "seed",
                                           "stream",
                                           "stream_options",
                                           "stop",
                                           "user",
                                           "frequency_penalty",
                                           "presence_penalty",
                                           "logit_bias",
                                           "logprobs",
                                           "service_tier",
                                           "prompt_cache_key",
                                           "safety_identifier",
                                           "top_k",
                                           "min_p",
                                           "repetition_penalty",
                                           "ignore_eos",
                                           "min_tokens"};
  auto completions_fields = common;
  completions_fields.insert(completions_fields.end(), {"prompt", "echo", "suffix", "best_of"});
  for (const auto& name : completions_fields) {
    for (const auto& value : every_type()) {
      auto body = completion();
      body[name] = value;
      expect_typed_answer(api_kind::completions, body, name);
    }
  }
  auto chat_fields = common;
  chat_fields.insert(
      chat_fields.end(),
      {"messages", "max_completion_tokens", "top_logprobs", "response_format", "tools",
       "tool_choice", "parallel_tool_calls", "functions", "function_call", "modalities", "audio",
       "prediction", "reasoning_effort", "web_search_options", "store", "metadata", "verbosity"});
  for (const auto& name : chat_fields) {
    for (const auto& value : every_type()) {
      auto body = chat();
      body[name] = value;
      expect_typed_answer(api_kind::chat, body, name);
    }
  }
}

TEST(OpenaiRequest, EveryNestedFieldOfEveryTypeGetsATypedAnswer) {
  for (const auto& value : every_type()) {
    auto body = chat();
    body["messages"][0] = value;
    expect_typed_answer(api_kind::chat, body, "messages");
    for (const char* key : {"role", "content", "name"}) {
      body = chat();
      body["messages"][0][key] = value;
      expect_typed_answer(api_kind::chat, body, "messages");
    }
    body = chat();
    body["messages"][0]["content"] = json::array({value});
    expect_typed_answer(api_kind::chat, body, "messages");
    for (const char* key : {"type", "text"}) {
      body = chat();
      body["messages"][0]["content"] = json::array({{{"type", "text"}, {"text", "x"}}});
      body["messages"][0]["content"][0][key] = value;
      expect_typed_answer(api_kind::chat, body, "messages");
    }
    body = completion();
    body["stream_options"] = {{"include_usage", value}};
    expect_typed_answer(api_kind::completions, body, "stream_options");
    body = completion();
    body["stop"] = json::array({"a", value});
    expect_typed_answer(api_kind::completions, body, "stop");
    body = completion();
    body["prompt"] = json::array({value});
    expect_typed_answer(api_kind::completions, body, "prompt");
  }
}

TEST(OpenaiRequest, BodiesThatAreNotObjectsAre400) {
  for (const char* body : {"", "[", "null", "1", "\"x\"", "[1,2]", "{\"model\":", "\xff\xfe",
                           "{\"model\":\"stories260K\",\"prompt\":\"\xc3\"}"}) {
    auto r = parse_openai_request(api_kind::completions, body, limits);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().status, 400u) << body;
  }
}

TEST(OpenaiRequest, DeepNestingIsAnAnswerNotAStackOverflow) {
  std::string deep = R"({"model":"stories260K","prompt":"a","user":)";
  deep += std::string(100'000, '[') + std::string(100'000, ']') + "}";
  auto r = parse_openai_request(api_kind::completions, deep, limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "user");
}

TEST(OpenaiRequest, DefaultsAndValuesReachTheRequest) {
  auto r = parse_openai_request(api_kind::completions, completion().dump(), limits);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->request.prompt, "Once");
  EXPECT_EQ(r->request.params.temperature, 1.0f);
  EXPECT_EQ(r->request.params.top_p, 1.0f);
  EXPECT_FALSE(r->request.has_seed);
  auto body = chat();
  body.update({{"max_tokens", 7},
               {"temperature", 0},
               {"top_p", 0.5},
               {"seed", 9},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"stop", "\n"}});
  r = parse_openai_request(api_kind::chat, body.dump(), limits);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->request.prompt, "User: Hi\nAssistant:");
  EXPECT_EQ(r->request.max_tokens, 7u);
  EXPECT_EQ(r->request.params.temperature, 0.0f);
  EXPECT_EQ(r->request.params.top_p, 0.5f);
  EXPECT_TRUE(r->request.has_seed);
  EXPECT_EQ(r->request.params.seed, 9u);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->stops, std::vector<std::string>{"\n"});
}

TEST(OpenaiRequest, LimitsNameTheirField) {
  auto body = completion();
  body["prompt"] = std::string(5000, 'a');
  auto r = parse_openai_request(api_kind::completions, body.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "context_length_exceeded");
  EXPECT_EQ(r.error().param, "prompt");
  body = completion();
  body["model"] = "gpt-4";
  r = parse_openai_request(api_kind::completions, body.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 404u);
  EXPECT_EQ(r.error().code, "model_not_found");
}

TEST(OpenaiRequest, TheDefaultsClientsSendAreAccepted) {
  // What LangChain's ChatOpenAI and OpenAI send with nothing configured.
  auto body = chat();
  body.update({{"frequency_penalty", 0},
               {"presence_penalty", 0},
               {"n", 1},
               {"top_p", 1},
               {"temperature", 1},
               {"stream", false},
               {"logit_bias", json::object()},
               {"tools", json::array()},
               {"tool_choice", "none"},
               {"store", false},
               {"response_format", {{"type", "text"}}},
               {"modalities", {"text"}},
               {"parallel_tool_calls", true},
               {"user", "u"},
               {"metadata", {{"k", "v"}}}});
  auto r = parse_openai_request(api_kind::chat, body.dump(), limits);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->request.params, (wire::sampling{1.0f, 1.0f, 0}));
  auto legacy = completion();
  legacy.update({{"frequency_penalty", 0},
                 {"presence_penalty", 0},
                 {"n", 1},
                 {"best_of", 1},
                 {"logit_bias", json::object()},
                 {"suffix", nullptr},
                 {"echo", false}});
  EXPECT_TRUE(parse_openai_request(api_kind::completions, legacy.dump(), limits));
}

TEST(OpenaiRequest, EverySamplingParameterReachesTheRequest) {
  auto body = chat();
  body.update({{"n", 3},
               {"frequency_penalty", 0.5},
               {"presence_penalty", -1.5},
               {"repetition_penalty", 1.25},
               {"top_k", 40},
               {"min_p", 0.05},
               {"min_tokens", 4},
               {"ignore_eos", true},
               {"logprobs", true},
               {"top_logprobs", 3},
               {"logit_bias", {{"13", 5}, {"2", -100}}},
               {"max_completion_tokens", 20}});
  auto r = parse_openai_request(api_kind::chat, body.dump(), limits);
  ASSERT_TRUE(r) << r.error().message;
  const auto& p = r->request.params;
  EXPECT_EQ(r->request.n, 3u);
  EXPECT_EQ(r->request.max_tokens, 20u);
  EXPECT_FLOAT_EQ(p.frequency_penalty, 0.5f);
  EXPECT_FLOAT_EQ(p.presence_penalty, -1.5f);
  EXPECT_FLOAT_EQ(p.repetition_penalty, 1.25f);
  EXPECT_EQ(p.top_k, 40u);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
  EXPECT_EQ(p.min_tokens, 4u);
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 3u);
  ASSERT_EQ(p.logit_bias.size(), 2u);
  auto legacy = completion();
  legacy.update({{"logprobs", 2}});
  r = parse_openai_request(api_kind::completions, legacy.dump(), limits);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->request.params.logprobs);
  EXPECT_EQ(r->request.params.top_logprobs, 2u);
  legacy["top_k"] = -1;  // vLLM's "off"
  r = parse_openai_request(api_kind::completions, legacy.dump(), limits);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->request.params.top_k, 0u);
}

TEST(OpenaiRequest, WhatABaseModelCannotDoIsRefusedNamingTheParameterAndWhy) {
  const std::vector<std::pair<std::string, json>> refused = {
      {"tools", json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}})},
      {"tool_choice", "required"},
      {"functions", json::array({{{"name", "f"}}})},
      {"function_call", {{"name", "f"}}},
      {"response_format", {{"type", "json_object"}}},
      {"response_format", {{"type", "json_schema"}, {"json_schema", json::object()}}},
      {"modalities", {"text", "audio"}},
      {"audio", {{"voice", "alloy"}}},
      {"prediction", {{"type", "content"}, {"content", "x"}}},
      {"reasoning_effort", "low"},
      {"web_search_options", json::object()}};
  for (const auto& [name, value] : refused) {
    auto body = chat();
    body[name] = value;
    auto r = parse_openai_request(api_kind::chat, body.dump(), limits);
    ASSERT_FALSE(r) << name;
    EXPECT_EQ(r.error().status, 400u) << name;
    EXPECT_EQ(r.error().param, name);
    EXPECT_NE(r.error().message.find("not supported"), std::string::npos) << r.error().message;
  }
  auto image = chat();
  image["messages"][0]["content"] =
      json::array({{{"type", "image_url"}, {"image_url", {{"url", "http://x/y.png"}}}}});
  auto r = parse_openai_request(api_kind::chat, image.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "messages[0].content[0].type");
  auto suffix = completion();
  suffix["suffix"] = "the end";
  EXPECT_FALSE(parse_openai_request(api_kind::completions, suffix.dump(), limits));
  auto best_of = completion();
  best_of["best_of"] = 3;
  r = parse_openai_request(api_kind::completions, best_of.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "best_of");
  auto unknown = completion();
  unknown["frequency_penality"] = 0;  // a typo is still an unknown parameter
  r = parse_openai_request(api_kind::completions, unknown.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "unknown_parameter");
}

TEST(OpenaiRequest, OutOfRangeValuesNameTheirParameter) {
  const std::vector<std::pair<std::string, json>> bad = {{"n", 0},
                                                         {"n", 17},
                                                         {"frequency_penalty", 2.5},
                                                         {"presence_penalty", -3},
                                                         {"repetition_penalty", 0},
                                                         {"min_p", 1.5},
                                                         {"top_k", -2},
                                                         {"min_tokens", 100},
                                                         {"logit_bias", {{"x", 1}}},
                                                         {"logit_bias", {{"1", 101}}},
                                                         {"top_logprobs", 3},
                                                         {"max_completion_tokens", 7}};
  for (const auto& [name, value] : bad) {
    auto body = chat();
    body["max_tokens"] = 10;
    body[name] = value;
    auto r = parse_openai_request(api_kind::chat, body.dump(), limits);
    ASSERT_FALSE(r) << name << " = " << value.dump();
    EXPECT_EQ(r.error().param, name) << r.error().message;
  }
  auto legacy = completion();
  legacy["logprobs"] = 6;
  EXPECT_FALSE(parse_openai_request(api_kind::completions, legacy.dump(), limits));
}

}  // namespace
}  // namespace baton::frontend
