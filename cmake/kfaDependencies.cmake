# Kokkos and Catch2: an installed package first (find_package), else the pinned source tarballs in
# KFA_DEPS_DIR, else the pinned upstream release. Sources are built inside this project.
include(FetchContent)

function(kfa_dependency_url out tarball upstream)
  if(KFA_DEPS_DIR AND EXISTS "${KFA_DEPS_DIR}/${tarball}")
    set(${out} "${KFA_DEPS_DIR}/${tarball}" PARENT_SCOPE)
  else()
    set(${out} "${upstream}" PARENT_SCOPE)
  endif()
endfunction()

# Kokkos >= 4.6: 4.6.01 is the tested minimum (the Kokkos::HIP build in CI), 5.0.2 the tested release
# of the host and CUDA builds.
find_package(Kokkos 4.6 QUIET)
if(Kokkos_FOUND)
  message(STATUS "kfa: using installed Kokkos ${Kokkos_VERSION} (${Kokkos_DIR}), devices: ${Kokkos_DEVICES}")
  set(KFA_KOKKOS_BUILT_IN_TREE OFF)
else()
  string(TOUPPER "${KFA_KOKKOS_DEVICE}" _dev)
  if(_dev STREQUAL "HIP")
    # Kokkos 5 needs ROCm >= 6.2; Kokkos 4.6 accepts hipcc >= 5.2 (e.g. the distributions' ROCm 5.x).
    # The mirrored 4.6.01 tarball is a git archive of the tag, so its hash is not the release file's:
    # without it the tag itself is fetched.
    set(_kokkos_version 4.6.01)
    if(KFA_DEPS_DIR AND EXISTS "${KFA_DEPS_DIR}/kokkos-4.6.01.tar.gz")
      set(_kokkos_from "${KFA_DEPS_DIR}/kokkos-4.6.01.tar.gz")
      set(_kokkos_source URL "${_kokkos_from}"
        URL_HASH SHA256=d8a8a5e15331c46b900d3f75d2b62b0b32f067b126a4a75d465224c899765084)
    else()
      set(_kokkos_from "https://github.com/kokkos/kokkos.git (tag 4.6.01)")
      set(_kokkos_source GIT_REPOSITORY https://github.com/kokkos/kokkos.git GIT_TAG 4.6.01 GIT_SHALLOW ON)
    endif()
  else()
    set(_kokkos_version 5.0.2)
    kfa_dependency_url(_kokkos_from kokkos-5.0.2.tar.gz
      "https://github.com/kokkos/kokkos/releases/download/5.0.2/kokkos-5.0.2.tar.gz")
    set(_kokkos_source URL "${_kokkos_from}"
      URL_HASH SHA256=188817bb452ca805ee8701f1c5adbbb4fb83dc8d1c50624566a18a719ba0fa5e)
  endif()
  message(STATUS "kfa: building Kokkos ${_kokkos_version} from ${_kokkos_from} with ${KFA_KOKKOS_DEVICE}")
  set(Kokkos_ENABLE_SERIAL ON CACHE BOOL "")
  if(_dev STREQUAL "OPENMP")
    set(Kokkos_ENABLE_OPENMP ON CACHE BOOL "")
  elseif(_dev STREQUAL "CUDA")
    set(Kokkos_ENABLE_CUDA ON CACHE BOOL "")
    set(Kokkos_ARCH_${KFA_KOKKOS_ARCH} ON CACHE BOOL "")
    # Kokkos enables CUDA inside its own scope, which would fix CMake's default architecture globally.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND KFA_KOKKOS_ARCH MATCHES "([0-9]+)$")
      set(CMAKE_CUDA_ARCHITECTURES ${CMAKE_MATCH_1} CACHE STRING "GPU architecture of kfa's Kokkos sources")
    endif()
    if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.25.2 AND NOT CMAKE_CXX_COMPILER MATCHES "nvcc_wrapper")
      set(Kokkos_ENABLE_COMPILE_AS_CMAKE_LANGUAGE ON CACHE BOOL "")
    endif()
  elseif(_dev STREQUAL "HIP")
    set(Kokkos_ENABLE_HIP ON CACHE BOOL "")
    set(Kokkos_ARCH_${KFA_KOKKOS_ARCH} ON CACHE BOOL "")
    set(Kokkos_ENABLE_ROCTHRUST OFF CACHE BOOL "rocThrust for Kokkos's HIP sort (not used by kfa)")
  elseif(NOT _dev STREQUAL "SERIAL")
    message(FATAL_ERROR "KFA_KOKKOS_DEVICE must be OpenMP, Serial, CUDA or HIP (got ${KFA_KOKKOS_DEVICE})")
  endif()
  FetchContent_Declare(kokkos ${_kokkos_source})
  if(_dev STREQUAL "HIP")
    # Kokkos's own sources as C++17: the clang 15 of ROCm 5.x crashes on libstdc++'s <regex> (which
    # Kokkos's command-line parsing includes) in C++20 HIP mode. Kokkos 4.6 asks its users for
    # cxx_std_17 only, so kfa's targets still compile as C++20.
    set(_kfa_cxx_standard ${CMAKE_CXX_STANDARD})
    set(CMAKE_CXX_STANDARD 17)
    FetchContent_MakeAvailable(kokkos)
    set(CMAKE_CXX_STANDARD ${_kfa_cxx_standard})
  else()
    FetchContent_MakeAvailable(kokkos)
  endif()
  set(KFA_KOKKOS_BUILT_IN_TREE ON)
endif()
# kfa's sources that include Kokkos are compiled for Kokkos's GPU architecture: CMake's default would
# leave PTX for an older GPU only, JIT-compiled at the first launch of each kernel (over a minute).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND Kokkos_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES ${Kokkos_CUDA_ARCHITECTURES})
endif()
if(Kokkos_ENABLE_CUDA)
  message(STATUS "kfa: CUDA architectures of the Kokkos sources: ${CMAKE_CUDA_ARCHITECTURES}")
endif()

if(KFA_BUILD_TESTS)
  find_package(Catch2 3 QUIET)
  if(Catch2_FOUND)
    message(STATUS "kfa: using installed Catch2 ${Catch2_VERSION}")
  else()
    kfa_dependency_url(_url Catch2-3.7.1.tar.gz
      "https://github.com/catchorg/Catch2/archive/refs/tags/v3.7.1.tar.gz")
    message(STATUS "kfa: building Catch2 3.7.1 from ${_url}")
    set(CATCH_INSTALL_DOCS OFF CACHE BOOL "")
    set(CATCH_INSTALL_EXTRAS OFF CACHE BOOL "")
    FetchContent_Declare(catch2 URL "${_url}"
      URL_HASH SHA256=c991b247a1a0d7bb9c39aa35faf0fe9e19764213f28ffba3109388e62ee0269c)
    FetchContent_MakeAvailable(catch2)
  endif()
endif()

# Sources that include Kokkos must be compiled as CUDA when Kokkos compiles CUDA as a CMake language.
function(kfa_kokkos_sources)
  if(Kokkos_COMPILE_LANGUAGE STREQUAL "CUDA" OR Kokkos_ENABLE_COMPILE_AS_CMAKE_LANGUAGE)
    if(Kokkos_ENABLE_CUDA)
      set_source_files_properties(${ARGN} PROPERTIES LANGUAGE CUDA)
    endif()
  endif()
endfunction()

# Host optimization flags for kfa's own targets.
function(kfa_host_flags target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND NOT CMAKE_CXX_COMPILER MATCHES "nvcc_wrapper")
    # With a HIP Kokkos every C++ source is also compiled for the GPU: the flags go to the host pass
    # only (-Xarch_host), since "omp simd" in device code makes clang call OpenMP's device runtime
    # (__kmpc_alloc_shared), which a HIP link does not have.
    set(_host "")
    if(Kokkos_ENABLE_HIP AND CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      set(_host "-Xarch_host ")
    endif()
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:SHELL:${_host}-fopenmp-simd>")
    if(KFA_ARCH_NATIVE)
      # 512-bit vectors for the vectorized loops where the CPU has them (compilers default to 256 on
      # AVX-512 CPUs; the softmax loops of the CPU forward run ~10% faster with 512)
      target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:SHELL:${_host}-march=native>"
                                               "$<$<COMPILE_LANGUAGE:CXX>:SHELL:${_host}-mprefer-vector-width=512>")
    endif()
  endif()
endfunction()
