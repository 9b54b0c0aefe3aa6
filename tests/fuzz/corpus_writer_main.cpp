// Writes the seed inputs of the codecs' fuzz corpora from schemas/samples.hpp: one encoded
// frame per body type into DIR/codec, one length-prefixed native client message per type
// into DIR/client_codec. Run it after a wire change:
//   build/release/tests/fuzz/fuzz_corpus_writer tests/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "schemas/client_codec.hpp"
#include "schemas/codec.hpp"
#include "schemas/samples.hpp"

namespace {

bool write(const std::filesystem::path& file, std::span<const std::byte> bytes) {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  namespace wire = baton::wire;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir / "codec");
  std::filesystem::create_directories(dir / "client_codec");
  for (const auto& f : wire::sample_frames()) {
    auto bytes = wire::encode(f);
    if (!bytes || !write(dir / "codec" / wire::body_name(f.body), bytes->bytes())) return 1;
  }
  for (const auto& m : wire::sample_client_messages()) {
    auto bytes = wire::encode_client_frame(m);
    if (!bytes || !write(dir / "client_codec" / wire::client_message_name(m), *bytes)) return 1;
  }
  std::printf("wrote the codec and client_codec seeds into %s\n", dir.c_str());
  return 0;
}
