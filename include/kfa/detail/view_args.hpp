#pragma once
// Turns user Views into the backend-neutral launcher arguments, checking everything that can be
// checked from the Views alone (rank, element type, layout, shapes, aliasing, accessibility).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>

#include "kfa/detail/args.hpp"
#include "kfa/error.hpp"

namespace kfa {

/// Element type of the log-sum-exp output: double for double inputs, float otherwise.
template <class T>
using lse_type = std::conditional_t<std::is_same_v<std::remove_cv_t<T>, double>, double, float>;

namespace detail {

template <class T>
constexpr DType dtype_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>) return DType::f32;
  else if constexpr (std::is_same_v<U, double>) return DType::f64;
  else if constexpr (std::is_same_v<U, Kokkos::Experimental::half_t>) return DType::f16;
  else if constexpr (std::is_same_v<U, Kokkos::Experimental::bhalf_t>) return DType::bf16;
  else static_assert(sizeof(U) == 0, "kfa: element type must be float, double, half_t or bhalf_t");
}

template <class View>
std::string extents_str(const View& v) {
  std::ostringstream s;
  s << "[";
  for (unsigned r = 0; r < View::rank(); ++r) s << (r ? ", " : "") << v.extent(r);
  s << "]";
  return s.str();
}

template <class ExecSpace, class View>
void check_view(const View& v, const char* name, unsigned rank) {
  static_assert(Kokkos::is_view_v<View>, "kfa: arguments must be Kokkos::View");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename View::memory_space>::accessible,
                "kfa: a View's memory space is not accessible from the execution space");
  if (View::rank() != rank) {
    std::ostringstream s;
    s << name << " must have rank " << rank << ", got rank " << View::rank();
    throw Error(s.str());
  }
  if (v.data() == nullptr) throw Error(std::string(name) + " is not allocated (null data)");
  if (v.stride(rank - 1) != 1)
    throw Error(std::string(name) + ": the last dimension must have unit stride (got stride " +
                std::to_string(v.stride(rank - 1)) + ")");
}

template <class View>
void check_extents(const View& v, const char* name, std::initializer_list<std::int64_t> want,
                   const char* dims) {
  unsigned r = 0;
  for (std::int64_t w : want) {
    if (static_cast<std::int64_t>(v.extent(r)) != w) {
      std::ostringstream s;
      s << name << " has extents " << extents_str(v) << ", expected " << dims << " = [";
      unsigned i = 0;
      for (std::int64_t x : want) s << (i++ ? ", " : "") << x;
      s << "]";
      throw Error(s.str());
    }
    ++r;
  }
}

template <class View>
Tensor4 tensor4(const View& v) {
  return {const_cast<void*>(static_cast<const void*>(v.data())), static_cast<std::int64_t>(v.stride(0)),
          static_cast<std::int64_t>(v.stride(1)), static_cast<std::int64_t>(v.stride(2))};
}

template <class View>
Tensor3 tensor3(const View& v) {
  return {const_cast<void*>(static_cast<const void*>(v.data())), static_cast<std::int64_t>(v.stride(0)),
          static_cast<std::int64_t>(v.stride(1)), static_cast<std::int64_t>(v.stride(2))};
}

/// Byte range [first, last) spanned by a View.
template <class View>
std::pair<std::uintptr_t, std::uintptr_t> byte_range(const View& v) {
  auto b = reinterpret_cast<std::uintptr_t>(v.data());
  return {b, b + v.span() * sizeof(typename View::value_type)};
}

template <class A, class B>
void check_no_overlap(const A& a, const char* an, const B& b, const char* bn) {
  auto [a0, a1] = byte_range(a);
  auto [b0, b1] = byte_range(b);
  if (a0 < b1 && b0 < a1)
    throw Error(std::string(an) + " and " + bn + " overlap in memory; outputs must not alias other arguments");
}

/// Shape of a [batch, seq, heads, dim] q and [batch, seq_k, heads_kv, dim] k/v triple, checked.
template <class ExecSpace, class Q, class K, class V>
Shape attention_shape(const Q& q, const K& k, const V& v) {
  check_view<ExecSpace>(q, "q", 4);
  check_view<ExecSpace>(k, "k", 4);
  check_view<ExecSpace>(v, "v", 4);
  static_assert(std::is_same_v<typename Q::non_const_value_type, typename K::non_const_value_type> &&
                    std::is_same_v<typename Q::non_const_value_type, typename V::non_const_value_type>,
                "kfa: q, k and v must have the same element type");
  Shape s;
  s.batch = q.extent(0);
  s.seqlen_q = q.extent(1);
  s.heads = q.extent(2);
  s.head_dim = q.extent(3);
  s.seqlen_k = k.extent(1);
  s.heads_kv = k.extent(2);
  if (s.batch == 0 || s.seqlen_q == 0 || s.heads == 0 || s.head_dim == 0)
    throw Error("q has an empty extent " + extents_str(q) + "; expected [batch, seqlen_q, heads, head_dim] all > 0");
  if (s.seqlen_k == 0 || s.heads_kv == 0)
    throw Error("k has an empty extent " + extents_str(k) + "; expected [batch, seqlen_k, heads_kv, head_dim] all > 0");
  check_extents(k, "k", {s.batch, s.seqlen_k, s.heads_kv, s.head_dim}, "[batch, seqlen_k, heads_kv, head_dim]");
  check_extents(v, "v", {s.batch, s.seqlen_k, s.heads_kv, s.head_dim}, "[batch, seqlen_k, heads_kv, head_dim]");
  if (s.heads % s.heads_kv != 0)
    throw Error("heads (" + std::to_string(s.heads) + ") must be a multiple of heads_kv (" +
                std::to_string(s.heads_kv) + ")");
  return s;
}

template <class ExecSpace, class T, class L>
void check_lse(const L& lse, const Shape& s) {
  check_view<ExecSpace>(lse, "lse", 3);
  static_assert(std::is_same_v<typename L::value_type, lse_type<T>>,
                "kfa: lse must hold kfa::lse_type<T> (float, or double for double inputs) and be writable");
  check_extents(lse, "lse", {s.batch, s.heads, s.seqlen_q}, "[batch, heads, seqlen_q]");
}

}  // namespace detail
}  // namespace kfa
