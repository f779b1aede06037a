# kfa-hip-emulated-runner: tests/hip/hip_runner.hip and the HIP kernels (backends/hip/src/*.hip),
# unmodified, compiled for the host against the stand-in hip/hip_runtime.h of this folder. Needs a
# host clang that has _Float16 and ext_vector_type on x86 (clang >= 15; ROCm's clang qualifies), so
# it is compiled with custom commands rather than with the project's C++ compiler.
set(_kfa_emu_probe ${CMAKE_CURRENT_BINARY_DIR}/emulator_probe.cpp)
file(WRITE ${_kfa_emu_probe}
  "typedef _Float16 h4 __attribute__((ext_vector_type(4)));\nint main() { h4 a = {1, 2, 3, 4}; return (int)(float)a[0] - 1; }\n")
if(NOT KFA_EMULATOR_CXX)
  get_filename_component(_hip_bin ${KFA_HIPCC} DIRECTORY)
  file(GLOB _llvm_clangs /opt/rocm/llvm/bin/clang++ /usr/lib/llvm-*/bin/clang++)
  list(SORT _llvm_clangs COMPARE NATURAL ORDER DESCENDING)
  foreach(cand ${_hip_bin}/../llvm/bin/clang++ ${_llvm_clangs} clang++)
    execute_process(COMMAND ${cand} -std=c++20 -x c++ ${_kfa_emu_probe} -o ${_kfa_emu_probe}.out
      RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
    if(_rc EQUAL 0)
      set(KFA_EMULATOR_CXX ${cand} CACHE FILEPATH "Host clang (>= 15) that compiles the HIP kernels for the emulator")
      break()
    endif()
  endforeach()
endif()
if(NOT KFA_EMULATOR_CXX)
  message(STATUS "kfa: no host clang with _Float16 found: kfa-hip-emulated-runner is not built")
  return()
endif()
message(STATUS "kfa: HIP kernels emulated on the host with ${KFA_EMULATOR_CXX}")

set(_emu_sources
  ${CMAKE_CURRENT_SOURCE_DIR}/hip_runner.hip
  ${PROJECT_SOURCE_DIR}/backends/hip/src/launch.hip
  ${PROJECT_SOURCE_DIR}/backends/hip/src/forward_f16.hip
  ${PROJECT_SOURCE_DIR}/backends/hip/src/forward_bf16.hip
  ${PROJECT_SOURCE_DIR}/backends/hip/src/backward_f16.hip
  ${PROJECT_SOURCE_DIR}/backends/hip/src/backward_bf16.hip)
set(_emu_objects)
foreach(src ${_emu_sources})
  get_filename_component(name ${src} NAME_WE)
  set(obj ${CMAKE_CURRENT_BINARY_DIR}/emulated/${name}.o)
  add_custom_command(OUTPUT ${obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/emulated
    COMMAND ${KFA_EMULATOR_CXX} -std=c++20 -O2 -g -Wno-psabi -I${CMAKE_CURRENT_SOURCE_DIR}/emulator
            -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR}/backends/hip/include
            -MD -MF ${obj}.d -x c++ -c ${src} -o ${obj}
    DEPENDS ${src}
    DEPFILE ${obj}.d
    COMMENT "host clang ${name} (emulated HIP)"
    VERBATIM)
  list(APPEND _emu_objects ${obj})
endforeach()
add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/emulated/kfa-hip-emulated-runner
  COMMAND ${KFA_EMULATOR_CXX} ${_emu_objects} -o ${CMAKE_CURRENT_BINARY_DIR}/emulated/kfa-hip-emulated-runner
  DEPENDS ${_emu_objects}
  COMMENT "linking kfa-hip-emulated-runner"
  VERBATIM)
add_custom_target(kfa-hip-emulated-runner ALL DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/emulated/kfa-hip-emulated-runner)
# the --quick subset covers every feature once per element type in seconds; the full set takes minutes
add_test(NAME kfa-hip-emulated-runner COMMAND ${CMAKE_CURRENT_BINARY_DIR}/emulated/kfa-hip-emulated-runner --quick)
