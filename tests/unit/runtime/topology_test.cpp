#include "runtime/topology.hpp"

#include "runtime/cluster_secret.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace baton::runtime {
namespace {

constexpr std::string_view valid = R"(# a comment
[cluster]
name = "test"
provider = "tcp"

[model]
checkpoint = "models/m.bin"
tokenizer = "models/t.bin"

[timeouts]
dead_after_ms = 400

[[node]]
name = "router-0"
kind = "cpu"
roles = ["router"]
fabric = "127.0.0.1:7100"
admin = "127.0.0.1:9100"

[[node]]
name = "prefill-0"
kind = "trainium"
device = "emulated:trn2"
roles = ["prefill"]
fabric = "127.0.0.1:7101"
admin = "127.0.0.1:9101"

[[node]]
name = "decode-0"
kind = "wafer-scale"
device = "emulated:wse3"
roles = ["decode", "kv"]
fabric = "127.0.0.1:7102"
admin = "127.0.0.1:9102"
kv_blocks = 100
)";

/// `valid` with the first occurrence of `from` replaced by `to`.
std::string edit(std::string_view from, std::string_view to) {
  std::string text(valid);
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  return text;
}

std::string error_of(std::string_view text) {
  auto topo = parse_topology(text, "/etc/baton/cluster.toml");
  EXPECT_FALSE(topo.has_value());
  if (topo) return "";
  EXPECT_EQ(topo.error().code, errc::invalid_argument);
  return topo.error().message;
}

TEST(Topology, ParsesAValidFile) {
  auto topo = parse_topology(valid, "/etc/baton/cluster.toml");
  ASSERT_TRUE(topo) << topo.error().message;
  EXPECT_EQ(topo->cluster_name, "test");
  ASSERT_EQ(topo->nodes.size(), 3u);
  const auto* prefill = topo->find("prefill-0");
  ASSERT_NE(prefill, nullptr);
  EXPECT_EQ(prefill->kind, wire::node_kind::trainium);
  EXPECT_TRUE(prefill->emulated());
  EXPECT_EQ(prefill->line, 20u);
  const auto* decode = topo->find("decode-0");
  ASSERT_NE(decode, nullptr);
  EXPECT_EQ(decode->kind, wire::node_kind::wafer_scale);
  EXPECT_EQ(decode->device, "emulated:wse3");
  EXPECT_TRUE(topo->emulated_workers());
  EXPECT_EQ(topo->emulated.scale, 1u);
  EXPECT_EQ(topo->emulated.time_scale, 1.0);
  EXPECT_TRUE(decode->has_role(wire::role::kv));
  EXPECT_EQ(decode->kv_blocks, 100u);
  EXPECT_EQ(decode->max_batch, 32u);
  EXPECT_EQ(topo->timeouts.dead_after_ms, 400u);
  EXPECT_EQ(topo->timeouts.suspect_after_ms, 250u);
  EXPECT_EQ(topo->model.checkpoint, "/etc/baton/models/m.bin");
  EXPECT_EQ(topo->seeds, std::vector<std::string>{"router-0"});  // routers by default
  EXPECT_EQ(topo->find("nobody"), nullptr);
}

TEST(Topology, TheRepositoryTopologyLoads) {
  auto topo = load_topology(BATON_SOURCE_DIR "/cluster.toml");
  ASSERT_TRUE(topo) << topo.error().message;
  EXPECT_GE(topo->nodes.size(), 3u);
}

TEST(Topology, SyntaxErrorsNameLineAndColumn) {
  auto message = error_of(edit("kv_blocks = 100", "kv_blocks = 10 0"));
  EXPECT_NE(message.find("/etc/baton/cluster.toml:35:16:"), std::string::npos) << message;
}

TEST(Topology, UnknownKeysAreErrors) {
  auto message = error_of(edit("roles = [\"router\"]", "rols = [\"router\"]"));
  EXPECT_NE(message.find("cluster.toml:16:1: node[0]: unknown key 'rols'"), std::string::npos)
      << message;
  message = error_of(edit("[timeouts]", "[timeouts]\nsuspect_ms = 3"));
  EXPECT_NE(message.find("timeouts: unknown key 'suspect_ms'"), std::string::npos) << message;
  message = error_of(edit("[cluster]", "[clutser]\n[cluster]"));
  EXPECT_NE(message.find("topology: unknown key 'clutser'"), std::string::npos) << message;
}

TEST(Topology, WrongTypesAndValuesAreNamed) {
  auto message = error_of(edit("kind = \"cpu\"", "kind = 3"));
  EXPECT_NE(message.find("cluster.toml:15:8: node[0].kind: expected a string, got an integer"),
            std::string::npos)
      << message;
  message = error_of(edit("kind = \"cpu\"", "kind = \"gpu\""));
  EXPECT_NE(message.find("expected trainium, wafer-scale or cpu, got \"gpu\""), std::string::npos)
      << message;
  message = error_of(edit("device = \"emulated:trn2\"", "device = \"trn2\""));
  EXPECT_NE(message.find("node[1].device: expected \"cpu\" or \"emulated:PROFILE\""),
            std::string::npos)
      << message;
  message = error_of(edit("[\"prefill\"]", "[\"prefil\"]"));
  EXPECT_NE(message.find("node[1].roles: expected router, prefill, decode or kv"),
            std::string::npos)
      << message;
  message = error_of(edit("kv_blocks = 100", "kv_blocks = -1"));
  EXPECT_NE(message.find("node[2].kv_blocks: expected an integer in [1, 16777216], got -1"),
            std::string::npos)
      << message;
  message = error_of(edit("\"127.0.0.1:7101\"", "\"127.0.0.1\""));
  EXPECT_NE(message.find("node[1].fabric: address \"127.0.0.1\": no port; expected host:port"),
            std::string::npos)
      << message;
  message = error_of(edit("\"127.0.0.1:9101\"", "\"::1:9101\""));
  EXPECT_NE(message.find("node[1].admin: address \"::1:9101\": an IPv6 host needs brackets"),
            std::string::npos)
      << message;
  message = error_of(edit("provider = \"tcp\"", "provider = \"rdma\""));
  EXPECT_NE(message.find("cluster.provider: expected tcp, shm, verbs or efa"), std::string::npos)
      << message;
}

TEST(Topology, ClusterRulesAreChecked) {
  auto message = error_of(edit("name = \"prefill-0\"", "name = \"router-0\""));
  EXPECT_NE(message.find("node[1].name: \"router-0\" is already used"), std::string::npos)
      << message;
  message = error_of(edit("\"127.0.0.1:9101\"", "\"127.0.0.1:9100\""));
  EXPECT_NE(message.find("node[1].admin: 127.0.0.1:9100 is already used"), std::string::npos)
      << message;
  message = error_of(edit("dead_after_ms = 400", "dead_after_ms = 50"));
  EXPECT_NE(message.find("suspect_after_ms (250) < dead_after_ms (50)"), std::string::npos)
      << message;
  message = error_of(edit("provider = \"tcp\"", "provider = \"tcp\"\nseeds = [\"nobody\"]"));
  EXPECT_NE(message.find("cluster.seeds: \"nobody\" is not a node"), std::string::npos) << message;
  message = error_of(edit("[\"decode\", \"kv\"]", "[\"decode\", \"decode\"]"));
  EXPECT_NE(message.find("\"decode\" listed twice"), std::string::npos) << message;
}

TEST(Topology, PortZeroListensOnAnyPortAndIsNeverAlreadyUsed) {
  std::string text(valid);
  for (const char* used :
       {"127.0.0.1:7100", "127.0.0.1:7101", "127.0.0.1:9100", "127.0.0.1:9101"}) {
    text.replace(text.find(used), std::string_view(used).size(), "127.0.0.1:0");
  }
  auto topo = parse_topology(text, "/etc/baton/cluster.toml");
  ASSERT_TRUE(topo) << topo.error().message;
  EXPECT_EQ(topo->nodes[0].fabric_address, "127.0.0.1:0");
  EXPECT_EQ(topo->nodes[1].admin_address, "127.0.0.1:0");
}

TEST(Topology, AMissingRoleIsAWarningNotAnError) {
  auto topo = parse_topology(edit("roles = [\"decode\", \"kv\"]", "roles = [\"kv\"]"), "c.toml");
  ASSERT_TRUE(topo) << topo.error().message;
  const std::string no_native = "router router-0 has no native address: clients cannot reach it";
  const std::string kv_idle =
      "the kv role (decode-0) is accepted but starts no actor yet: KV-cache shards are a later "
      "issue";
  EXPECT_EQ(topo->warnings(),
            (std::vector<std::string>{"no node has the role decode: it must join later", no_native,
                                      kv_idle}));
  EXPECT_EQ(parse_topology(valid, "c.toml")->warnings(),
            (std::vector<std::string>{no_native, kv_idle}));
  auto with_native = parse_topology(
      edit("admin = \"127.0.0.1:9100\"", "admin = \"127.0.0.1:9100\"\nnative = \"127.0.0.1:7000\""),
      "c.toml");
  ASSERT_TRUE(with_native) << with_native.error().message;
  EXPECT_EQ(with_native->warnings(), std::vector<std::string>{kv_idle});
  EXPECT_EQ(with_native->nodes[0].native_address, "127.0.0.1:7000");
  EXPECT_NE(error_of(edit("admin = \"127.0.0.1:9101\"",
                          "admin = \"127.0.0.1:9101\"\nnative = \"127.0.0.1:7001\""))
                .find("only a node with the router role has a client port"),
            std::string::npos);
}

TEST(Topology, RouterPolicyIsReadAndChecked) {
  auto topo = parse_topology(edit("[timeouts]",
                                  "[router]\nprefill_on_decode_max_tokens = 32\n"
                                  "when_no_prefill = \"prefill-on-decode\"\n"
                                  "max_attempts = 5\nmax_waiting = 7\nmax_wait_ms = 2500\n\n"
                                  "[timeouts]\norphan_grace_ms = 900\n"),
                             "c.toml");
  ASSERT_TRUE(topo) << topo.error().message;
  EXPECT_EQ(topo->router.prefill_on_decode_max_tokens, 32u);
  EXPECT_EQ(topo->router.when_no_prefill, "prefill-on-decode");
  EXPECT_EQ(topo->router.max_attempts, 5u);
  EXPECT_EQ(topo->router.max_waiting, 7u);
  EXPECT_EQ(topo->router.max_wait_ms, 2500u);
  EXPECT_EQ(topo->timeouts.orphan_grace_ms, 900u);
  const auto message =
      error_of(edit("[timeouts]", "[router]\nwhen_no_prefill = \"maybe\"\n\n[timeouts]"));
  EXPECT_NE(message.find("router.when_no_prefill: expected \"wait\" or \"prefill-on-decode\", "
                         "got \"maybe\""),
            std::string::npos)
      << message;
}

TEST(Topology, EmulatedDevicesAreReadAndNeverMixedWithCpuWorkers) {
  auto topo =
      parse_topology(edit("[timeouts]",
                          "[emulated]\nshape = \"llama-3.1-8b\"\nscale = 64\ntime_scale = 0\n\n"
                          "[timeouts]"),
                     "c.toml");
  ASSERT_TRUE(topo) << topo.error().message;
  EXPECT_EQ(topo->emulated.shape, "llama-3.1-8b");
  EXPECT_EQ(topo->emulated.scale, 64u);
  EXPECT_EQ(topo->emulated.time_scale, 0.0);
  auto message = error_of(edit("[timeouts]", "[emulated]\ntime_scale = -1\n\n[timeouts]"));
  EXPECT_NE(message.find("emulated.time_scale: expected a number in [0, 1000000], got -1"),
            std::string::npos)
      << message;
  message = error_of(edit("[timeouts]", "[emulated]\nscales = 2\n\n[timeouts]"));
  EXPECT_NE(message.find("emulated: unknown key 'scales'"), std::string::npos) << message;
  // A CPU decode node beside an emulated prefill node could not use its KV.
  message = error_of(edit("device = \"emulated:wse3\"", "device = \"cpu\""));
  EXPECT_NE(message.find("cluster.toml:31:10: node[2].device: \"cpu\" cannot serve beside "
                         "prefill-0's \"emulated:trn2\""),
            std::string::npos)
      << message;
  // The router's device does not matter: it computes nothing.
  EXPECT_TRUE(parse_topology(edit("kind = \"cpu\"", "kind = \"cpu\"\ndevice = \"cpu\""), "c.toml"));
}

TEST(Topology, MissingSectionsAndFiles) {
  auto message = error_of("[model]\ncheckpoint = \"a\"\ntokenizer = \"b\"\n");
  EXPECT_NE(message.find("missing required table [cluster]"), std::string::npos) << message;
  message = error_of(edit("name = \"test\"\n", ""));
  EXPECT_NE(message.find("cluster: missing required key 'name'"), std::string::npos) << message;
  auto missing = load_topology("/nonexistent/cluster.toml");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST(Topology, ModelNamesAreLookedUpInTheSearchPathAndPathsBesideTheFile) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("baton-model-path-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "m.bin") << "x";
  std::ofstream(dir / "t.bin") << "x";
  ::setenv("BATON_MODEL_PATH", ("/nonexistent:" + dir.string()).c_str(), 1);
  auto named = parse_topology(edit("checkpoint = \"models/m.bin\"\ntokenizer = \"models/t.bin\"",
                                   "checkpoint = \"m.bin\"\ntokenizer = \"t.bin\""),
                              "/etc/baton/cluster.toml");
  ASSERT_TRUE(named) << named.error().message;
  EXPECT_EQ(named->model.checkpoint, dir / "m.bin");
  EXPECT_EQ(named->model.tokenizer, dir / "t.bin");
  EXPECT_EQ(named->model.missing(), "");
  ASSERT_GE(named->model.searched.size(), 5u);
  EXPECT_EQ(named->model.searched[0], "/nonexistent");
  EXPECT_EQ(named->model.searched[1], dir);
  EXPECT_EQ(named->model.searched.back(), "/etc/shared/models");

  auto absent = parse_topology(edit("checkpoint = \"models/m.bin\"", "checkpoint = \"gone.bin\""),
                               "/etc/baton/cluster.toml");
  ASSERT_TRUE(absent) << absent.error().message;
  const auto why = absent->model.missing();
  EXPECT_NE(
      why.find("no checkpoint 'gone.bin' in the model search path (/nonexistent, " + dir.string()),
      std::string::npos)
      << why;
  EXPECT_NE(why.find("no tokenizer 't.bin' at /etc/baton/models/t.bin"), std::string::npos) << why;

  // `baton generate --model NAME` resolves names the same way, from the current folder.
  const auto cli = resolve_model("m.bin", "sub/t.bin", "/work");
  EXPECT_EQ(cli.checkpoint, dir / "m.bin");
  EXPECT_EQ(cli.tokenizer, "/work/sub/t.bin");
  EXPECT_TRUE(cli.checkpoint_named);
  EXPECT_FALSE(cli.tokenizer_named);
  EXPECT_NE(
      model_path_hint().find("BATON_MODEL_PATH is \"/nonexistent:" + dir.string() + "\" here"),
      std::string::npos)
      << model_path_hint();
  ::unsetenv("BATON_MODEL_PATH");
  EXPECT_NE(model_path_hint().find("BATON_MODEL_PATH is not set in this process's environment"),
            std::string::npos)
      << model_path_hint();
  std::filesystem::remove_all(dir);
}

TEST(Topology, WithoutASecretNodesBindLoopbackOnlyUnlessInsecure) {
  auto loopback = parse_topology(valid, "/etc/baton/cluster.toml");
  ASSERT_TRUE(loopback) << loopback.error().message;
  EXPECT_TRUE(check_exposure(*loopback, *loopback->find("router-0")));

  const auto exposed_text = edit("fabric = \"127.0.0.1:7100\"", "fabric = \"10.0.0.5:7100\"");
  auto exposed = parse_topology(exposed_text, "/etc/baton/cluster.toml");
  ASSERT_TRUE(exposed) << exposed.error().message;
  const auto refused = check_exposure(*exposed, *exposed->find("router-0"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("node router-0 binds fabric 10.0.0.5:7100"),
            std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("baton secret init"), std::string::npos);
  EXPECT_TRUE(check_exposure(*exposed, *exposed->find("prefill-0"))) << "its addresses are local";

  auto secret =
      parse_topology(edit("provider = \"tcp\"", "provider = \"tcp\"\nsecret = \"cluster.secret\""),
                     "/etc/baton/cluster.toml");
  ASSERT_TRUE(secret) << secret.error().message;
  EXPECT_EQ(secret->secret, "/etc/baton/cluster.secret") << "beside the topology file";
  auto insecure = parse_topology(edit("provider = \"tcp\"", "provider = \"tcp\"\ninsecure = true"),
                                 "/etc/baton/c.toml");
  ASSERT_TRUE(insecure) << insecure.error().message;
  EXPECT_TRUE(insecure->insecure);
  for (auto* t : {&*secret, &*insecure}) {
    t->nodes.front().fabric_address = "10.0.0.5:7100";
    EXPECT_TRUE(check_exposure(*t, t->nodes.front()));
  }
  EXPECT_NE(error_of(edit("provider = \"tcp\"", "provider = \"tcp\"\ninsecure = 1"))
                .find("cluster.insecure: expected a boolean"),
            std::string::npos);
}

TEST(ClusterSecret, IsMadeOwnerOnlyNeverOverwrittenAndRefusedWhenOthersCanReadIt) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("baton-secret-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto file = dir / "cluster.secret";
  ASSERT_TRUE(cluster_secret::create(file));
  EXPECT_EQ(std::filesystem::status(file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto again = cluster_secret::create(file);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("never overwritten"), std::string::npos);
  auto loaded = cluster_secret::load(file);
  ASSERT_TRUE(loaded) << loaded.error().message;
  const auto tag = loaded->sign("label", {1, 2}, {"a", "b"});
  EXPECT_TRUE(loaded->verify(tag, "label", {1, 2}, {"a", "b"}));
  EXPECT_FALSE(loaded->verify(tag, "label", {1, 3}, {"a", "b"}));
  EXPECT_FALSE(loaded->verify(tag, "label", {1, 2}, {"ab", ""})) << "lengths are signed too";
  EXPECT_FALSE(loaded->verify(tag, "other", {1, 2}, {"a", "b"}));
  // Another secret signs differently.
  const auto other = dir / "other.secret";
  ASSERT_TRUE(cluster_secret::create(other));
  EXPECT_FALSE(cluster_secret::load(other)->verify(tag, "label", {1, 2}, {"a", "b"}));

  std::filesystem::permissions(file, std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  const auto readable = cluster_secret::load(file);
  ASSERT_FALSE(readable);
  EXPECT_NE(readable.error().message.find("mode 0640"), std::string::npos)
      << readable.error().message;
  const auto bad = dir / "bad.secret";
  std::ofstream(bad) << "not hex\n";
  std::filesystem::permissions(
      bad, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto garbled = cluster_secret::load(bad);
  ASSERT_FALSE(garbled);
  EXPECT_NE(garbled.error().message.find(bad.string() + ":1: expected 64 hexadecimal digits"),
            std::string::npos)
      << garbled.error().message;
  EXPECT_FALSE(cluster_secret::load(dir / "missing.secret"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace baton::runtime
