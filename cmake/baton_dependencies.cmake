# Every third-party dependency, found once. All of them are Debian 12 packages that
# tools/setup.sh installs.

find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(tl-expected CONFIG REQUIRED)           # tl::expected
find_package(CapnProto 0.9 CONFIG REQUIRED)         # CapnProto::capnp, capnp_generate_cpp()
find_package(fmt CONFIG REQUIRED)                   # fmt::fmt
find_package(spdlog CONFIG REQUIRED)                # spdlog::spdlog
find_package(CLI11 CONFIG REQUIRED)                 # CLI11::CLI11
find_package(nlohmann_json CONFIG REQUIRED)         # nlohmann_json::nlohmann_json
find_package(tomlplusplus 3 CONFIG REQUIRED)        # tomlplusplus::tomlplusplus
find_package(Boost 1.74 REQUIRED)                   # Boost::headers (Asio, Beast)
find_package(CAF 0.17 REQUIRED)                     # CAF::core (cmake/FindCAF.cmake)
find_package(OpenSSL 3 REQUIRED)                    # OpenSSL::Crypto (HMAC, RAND_bytes)
pkg_check_modules(LIBFABRIC REQUIRED IMPORTED_TARGET libfabric>=1.17)  # PkgConfig::LIBFABRIC
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)            # PkgConfig::XXHASH

if(BATON_TESTS)
  find_package(GTest CONFIG REQUIRED)               # GTest::gtest_main, GTest::gmock
  find_package(benchmark CONFIG REQUIRED)           # benchmark::benchmark
endif()
