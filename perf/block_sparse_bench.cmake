kfa_kokkos_sources(block_sparse_bench.cpp)
add_executable(kfa-block-sparse-bench block_sparse_bench.cpp)
target_link_libraries(kfa-block-sparse-bench PRIVATE kfa::kfa)
kfa_host_flags(kfa-block-sparse-bench)
