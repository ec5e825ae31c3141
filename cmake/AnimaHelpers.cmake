# anima_library(NAME SOURCES ... DEPS ...): one static library per part, with the repository root
# on the include path so headers are included as "services/common/flags.h".
function(anima_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# anima_binary(NAME SOURCES ... DEPS ...): an executable that only wires libraries together.
function(anima_binary name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()

# anima_test(NAME SOURCES ... DEPS ... [LABELS ...]): a GoogleTest binary registered with ctest.
# Integration tests get the directory of the built binaries in ANIMA_BIN_DIR.
function(anima_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT}
                       ENVIRONMENT "ANIMA_BIN_DIR=${PROJECT_BINARY_DIR}/bin;ANIMA_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()

# anima_fuzz_target(NAME SOURCES ... DEPS ... CORPUS dir): a fuzz target (LLVMFuzzerTestOneInput).
# Registered with ctest as a bounded run: the corpus, then ANIMA_FUZZ_RUNS mutated inputs.
option(ANIMA_LIBFUZZER "Build fuzz targets with clang's libFuzzer" OFF)
set(ANIMA_FUZZ_RUNS 20000 CACHE STRING "Mutated inputs per fuzz target in the test suite")
function(anima_fuzz_target name)
  cmake_parse_arguments(ARG "" "CORPUS" "SOURCES;DEPS" ${ARGN})
  if(ANIMA_LIBFUZZER)
    add_executable(${name} ${ARG_SOURCES})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    set(run_args -runs=${ANIMA_FUZZ_RUNS} -max_total_time=60)
  else()
    add_executable(${name} ${ARG_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_driver.cc)
    set(run_args --runs=${ANIMA_FUZZ_RUNS})
  endif()
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  add_test(NAME ${name} COMMAND ${name} ${run_args} ${PROJECT_SOURCE_DIR}/${ARG_CORPUS})
  set_tests_properties(${name} PROPERTIES TIMEOUT 300 LABELS fuzz)
endfunction()
