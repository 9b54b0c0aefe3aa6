# Compiler settings shared by every Baton target, applied through baton_defaults().

if(BATON_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(BATON_SANITIZE STREQUAL "thread")
  # CAF is Debian's uninstrumented build: tests/tsan.supp names the hand-offs inside it that
  # TSan cannot see (the test preset passes it). -Wno-tsan: Boost.Asio's handlers pass
  # through atomic_thread_fence, which TSan does not model; Asio hands them between
  # threads under its scheduler's mutex, which TSan sees.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
elseif(BATON_SANITIZE)
  message(FATAL_ERROR "BATON_SANITIZE is '${BATON_SANITIZE}': use address, thread or nothing")
endif()

if(BATON_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "BATON_FUZZ needs clang (libFuzzer); use the 'fuzz' preset")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# baton_defaults(target): warnings (errors with BATON_WERROR) for Baton's own code.
function(baton_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                         $<$<BOOL:${BATON_WERROR}>:-Werror>)
endfunction()
