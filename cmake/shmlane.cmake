# Helpers that declare one library or test per call, in the spirit of Abseil's
# absl_cc_library: shmlane_cc_library(NAME ring ...) builds target shmlane_ring
# exported as shmlane::ring; shmlane_cc_test(NAME ring_test ...) adds a ctest.
include_guard(GLOBAL)
include(CMakeParseArguments)

# Flags for code we write (not for generated protobuf sources).
# SHMLANE_THREAD_SAFETY (clang only) adds -Wthread-safety, which checks the
# ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations.
function(shmlane_strict_flags target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
  if(SHMLANE_THREAD_SAFETY)
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
endfunction()

# shmlane_cc_library(NAME n [HDRS ...] [SRCS ...] [DEPS ...] [DEFINES ...])
function(shmlane_cc_library)
  cmake_parse_arguments(L "" "NAME" "HDRS;SRCS;DEPS;DEFINES" ${ARGN})
  set(target shmlane_${L_NAME})
  if(L_SRCS)
    add_library(${target} STATIC ${L_SRCS} ${L_HDRS})
    target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} PUBLIC ${L_DEPS})
    target_compile_definitions(${target} PUBLIC ${L_DEFINES})
    shmlane_strict_flags(${target})
  else()
    add_library(${target} INTERFACE ${L_HDRS})
    target_include_directories(${target} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} INTERFACE ${L_DEPS})
    target_compile_definitions(${target} INTERFACE ${L_DEFINES})
  endif()
  add_library(shmlane::${L_NAME} ALIAS ${target})
endfunction()

# shmlane_cc_binary(NAME n SRCS ... [DEPS ...])
function(shmlane_cc_binary)
  cmake_parse_arguments(B "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${B_NAME} ${B_SRCS})
  target_link_libraries(${B_NAME} PRIVATE ${B_DEPS})
  shmlane_strict_flags(${B_NAME})
endfunction()

# shmlane_cc_test(NAME n SRCS ... [DEPS ...] [LABELS ...] [TIMEOUT s] [ARGS ...])
# Links GoogleTest's main unless NO_GTEST_MAIN is given. Every test gets the
# label "all" plus its own; the sanitizer presets select by label.
function(shmlane_cc_test)
  cmake_parse_arguments(T "NO_GTEST_MAIN" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  if(NOT SHMLANE_BUILD_TESTS)
    return()
  endif()
  add_executable(${T_NAME} ${T_SRCS})
  if(T_NO_GTEST_MAIN)
    target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock)
  else()
    target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} GTest::gtest_main GTest::gmock)
  endif()
  shmlane_strict_flags(${T_NAME})
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "all;${T_LABELS}" TIMEOUT ${T_TIMEOUT})
endfunction()
