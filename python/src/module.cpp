// The extension module kfa._kfa: the C API (include/kfa/c/kfa.h) for Python. A tensor crosses as a
// plain tuple (data pointer, element type code, extents, strides in elements, memory code) that the
// package (python/kfa/__init__.py) makes from a PyTorch tensor without copying, so the module needs
// neither PyTorch's headers nor its library, and every call is validated by the C API exactly as the
// C++ API validates it. Invalid arguments raise ValueError, other failures RuntimeError. The calls
// release the GIL; on a GPU they are asynchronous on the context's stream.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kfa/c/kfa.h"

namespace py = pybind11;

namespace {

using Desc = std::tuple<std::uintptr_t, int, std::vector<std::int64_t>, std::vector<std::int64_t>, int>;
using OptDesc = std::optional<Desc>;

void check(kfa_status s) {
  if (s == KFA_SUCCESS) return;
  const std::string msg = kfa_last_error();
  if (s == KFA_ERROR_INVALID_ARGUMENT) throw py::value_error(msg);
  throw std::runtime_error(msg);
}

kfa_tensor tensor_of(const Desc& d) {
  const auto& [ptr, dtype, extents, strides, memory] = d;
  if (extents.size() != strides.size() || extents.size() > KFA_MAX_RANK)
    throw py::value_error("kfa: a tensor descriptor needs as many strides as extents, at most " +
                          std::to_string(KFA_MAX_RANK));
  kfa_tensor t{};
  t.data = reinterpret_cast<void*>(ptr);
  t.dtype = dtype;
  t.rank = static_cast<std::int32_t>(extents.size());
  t.memory = memory;
  for (std::size_t r = 0; r < extents.size(); ++r) {
    t.extents[r] = extents[r];
    t.strides[r] = strides[r];
  }
  return t;
}

/// The descriptor of an optional tensor: null when absent.
struct MaybeTensor {
  kfa_tensor t{};
  bool present = false;
  explicit MaybeTensor(const OptDesc& d) {
    if (d) t = tensor_of(*d), present = true;
  }
  const kfa_tensor* get() const { return present ? &t : nullptr; }
};

/// A kfa_block_mask; Params that use it hold a reference, so it outlives their calls' launches.
struct BlockMask {
  kfa_block_mask m = nullptr;
  BlockMask(std::int64_t seqlen_q, std::int64_t seqlen_k, std::int64_t block_q, std::int64_t block_k,
            std::int64_t batch, std::int64_t heads, const py::bytes& blocks) {
    const std::string b = blocks;  // one byte per block
    const std::int64_t n = batch * heads * ((seqlen_q + block_q - 1) / std::max<std::int64_t>(block_q, 1)) *
                           ((seqlen_k + block_k - 1) / std::max<std::int64_t>(block_k, 1));
    if (static_cast<std::int64_t>(b.size()) != n)
      throw py::value_error("kfa: the block matrix has " + std::to_string(b.size()) + " entries, expected " +
                            std::to_string(n));
    check(kfa_block_mask_create(&m, seqlen_q, seqlen_k, block_q, block_k, batch, heads,
                                reinterpret_cast<const std::uint8_t*>(b.data())));
  }
  ~BlockMask() {
    if (m != nullptr) kfa_block_mask_destroy(m);
  }
  BlockMask(const BlockMask&) = delete;
  BlockMask& operator=(const BlockMask&) = delete;
};

/// kfa_params with the ALiBi slopes and the block mask it points at.
struct Params {
  kfa_params p{};
  std::vector<float> alibi;
  std::shared_ptr<BlockMask> mask;
  Params() { kfa_params_default(&p); }
  const kfa_params* get() {
    p.alibi_slopes = alibi.empty() ? nullptr : alibi.data();
    p.num_alibi_slopes = static_cast<std::int64_t>(alibi.size());
    p.block_mask = mask ? mask->m : nullptr;
    return &p;
  }
};

/// A context on one memory space (and, on a GPU, one stream); destroyed before Kokkos is finalized.
struct Context {
  kfa_context ctx = nullptr;
  Context(int memory, std::uintptr_t stream) { check(kfa_context_create(&ctx, memory, reinterpret_cast<void*>(stream))); }
  ~Context() { close(); }
  void close() {
    if (ctx != nullptr) kfa_context_destroy(ctx);
    ctx = nullptr;
  }
  kfa_context get() const {
    if (ctx == nullptr) throw std::runtime_error("kfa: the context is closed");
    return ctx;
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
};

}  // namespace

PYBIND11_MODULE(_kfa, m) {
  m.doc() = "kfa's C API for Python (use the kfa package, not this module)";
  m.attr("F32") = KFA_DTYPE_F32;
  m.attr("F64") = KFA_DTYPE_F64;
  m.attr("F16") = KFA_DTYPE_F16;
  m.attr("BF16") = KFA_DTYPE_BF16;
  m.attr("I32") = KFA_DTYPE_I32;
  m.attr("HOST") = KFA_MEMORY_HOST;
  m.attr("DEVICE") = KFA_MEMORY_DEVICE;

  m.def("initialize", [] { check(kfa_initialize()); });
  m.def("finalize", [] { check(kfa_finalize()); });

  py::class_<BlockMask, std::shared_ptr<BlockMask>>(m, "BlockMask")
      .def(py::init<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                    const py::bytes&>(),
           py::arg("seqlen_q"), py::arg("seqlen_k"), py::arg("block_q"), py::arg("block_k"), py::arg("batch"),
           py::arg("heads"), py::arg("blocks"));

  py::class_<Params>(m, "Params")
      .def(py::init<>())
      .def_property(
          "softmax_scale", [](const Params& s) -> std::optional<double> {
            if (s.p.has_softmax_scale) return s.p.softmax_scale;
            return std::nullopt;
          },
          [](Params& s, std::optional<double> v) {
            s.p.has_softmax_scale = v.has_value();
            s.p.softmax_scale = v.value_or(0.0);
          })
      .def_property(
          "softcap", [](const Params& s) { return s.p.softcap; }, [](Params& s, double v) { s.p.softcap = v; })
      .def_property(
          "dropout_p", [](const Params& s) { return s.p.dropout_p; }, [](Params& s, double v) { s.p.dropout_p = v; })
      .def_property(
          "window_left", [](const Params& s) { return s.p.window_left; },
          [](Params& s, std::int64_t v) { s.p.window_left = v; })
      .def_property(
          "window_right", [](const Params& s) { return s.p.window_right; },
          [](Params& s, std::int64_t v) { s.p.window_right = v; })
      .def_property(
          "seed", [](const Params& s) { return s.p.seed; }, [](Params& s, std::uint64_t v) { s.p.seed = v; })
      .def_property(
          "offset", [](const Params& s) { return s.p.offset; }, [](Params& s, std::uint64_t v) { s.p.offset = v; })
      .def_property(
          "causal", [](const Params& s) { return s.p.causal != 0; }, [](Params& s, bool v) { s.p.causal = v; })
      .def_property(
          "deterministic", [](const Params& s) { return s.p.deterministic != 0; },
          [](Params& s, bool v) { s.p.deterministic = v; })
      .def_property(
          "backend", [](const Params& s) { return s.p.backend; }, [](Params& s, int v) { s.p.backend = v; })
      .def_readwrite("alibi_slopes", &Params::alibi)
      .def_readwrite("block_mask", &Params::mask);

  py::class_<Context>(m, "Context")
      .def(py::init<int, std::uintptr_t>(), py::arg("memory"), py::arg("stream") = 0)
      .def("close", &Context::close)
      .def("fence", [](const Context& c) { check(kfa_context_fence(c.get())); },
           py::call_guard<py::gil_scoped_release>());

  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def(
      "forward",
      [](const Context& c, const Desc& q, const Desc& k, const Desc& v, const Desc& o, const Desc& lse, Params& p) {
        const kfa_tensor tq = tensor_of(q), tk = tensor_of(k), tv = tensor_of(v), to = tensor_of(o),
                         tl = tensor_of(lse);
        check(kfa_forward(c.get(), &tq, &tk, &tv, &to, &tl, p.get()));
      },
      nogil);
  m.def(
      "backward",
      [](const Context& c, const Desc& dout, const Desc& q, const Desc& k, const Desc& v, const Desc& out,
         const Desc& lse, const Desc& dq, const Desc& dk, const Desc& dv, Params& p) {
        const kfa_tensor tg = tensor_of(dout), tq = tensor_of(q), tk = tensor_of(k), tv = tensor_of(v),
                         to = tensor_of(out), tl = tensor_of(lse), tdq = tensor_of(dq), tdk = tensor_of(dk),
                         tdv = tensor_of(dv);
        check(kfa_backward(c.get(), &tg, &tq, &tk, &tv, &to, &tl, &tdq, &tdk, &tdv, p.get()));
      },
      nogil);
  m.def(
      "backward_workspace_size",
      [](const Context& c, const Desc& q, const Desc& k, Params& p) {
        const kfa_tensor tq = tensor_of(q), tk = tensor_of(k);
        std::size_t bytes = 0;
        check(kfa_backward_workspace_size(c.get(), &tq, &tk, p.get(), &bytes));
        return bytes;
      });
  m.def(
      "backward_with_workspace",
      [](const Context& c, const Desc& dout, const Desc& q, const Desc& k, const Desc& v, const Desc& out,
         const Desc& lse, const Desc& dq, const Desc& dk, const Desc& dv, Params& p, std::uintptr_t workspace,
         std::size_t workspace_bytes) {
        const kfa_tensor tg = tensor_of(dout), tq = tensor_of(q), tk = tensor_of(k), tv = tensor_of(v),
                         to = tensor_of(out), tl = tensor_of(lse), tdq = tensor_of(dq), tdk = tensor_of(dk),
                         tdv = tensor_of(dv);
        check(kfa_backward_with_workspace(c.get(), &tg, &tq, &tk, &tv, &to, &tl, &tdq, &tdk, &tdv, p.get(),
                                          reinterpret_cast<void*>(workspace), workspace_bytes));
      },
      nogil);
  m.def(
      "forward_varlen",
      [](const Context& c, const Desc& q, const Desc& k, const Desc& v, const Desc& o, const Desc& lse,
         const Desc& cu_q, const Desc& cu_k, std::int64_t max_q, std::int64_t max_k, Params& p) {
        const kfa_tensor tq = tensor_of(q), tk = tensor_of(k), tv = tensor_of(v), to = tensor_of(o),
                         tl = tensor_of(lse), tcq = tensor_of(cu_q), tck = tensor_of(cu_k);
        check(kfa_forward_varlen(c.get(), &tq, &tk, &tv, &to, &tl, &tcq, &tck, max_q, max_k, p.get()));
      },
      nogil);
  m.def(
      "backward_varlen",
      [](const Context& c, const Desc& dout, const Desc& q, const Desc& k, const Desc& v, const Desc& out,
         const Desc& lse, const Desc& dq, const Desc& dk, const Desc& dv, const Desc& cu_q, const Desc& cu_k,
         std::int64_t max_q, std::int64_t max_k, Params& p) {
        const kfa_tensor tg = tensor_of(dout), tq = tensor_of(q), tk = tensor_of(k), tv = tensor_of(v),
                         to = tensor_of(out), tl = tensor_of(lse), tdq = tensor_of(dq), tdk = tensor_of(dk),
                         tdv = tensor_of(dv), tcq = tensor_of(cu_q), tck = tensor_of(cu_k);
        check(kfa_backward_varlen(c.get(), &tg, &tq, &tk, &tv, &to, &tl, &tdq, &tdk, &tdv, &tcq, &tck, max_q, max_k,
                                  p.get()));
      },
      nogil);
  m.def(
      "forward_kvcache",
      [](const Context& c, const Desc& q, const Desc& k_cache, const Desc& v_cache, const Desc& o, const Desc& lse,
         const Desc& cache_seqlens, const OptDesc& k_new, const OptDesc& v_new, const OptDesc& block_table,
         int num_splits, bool check_indices, Params& p) {
        const kfa_tensor tq = tensor_of(q), tkc = tensor_of(k_cache), tvc = tensor_of(v_cache), to = tensor_of(o),
                         tl = tensor_of(lse), ts = tensor_of(cache_seqlens);
        const MaybeTensor kn(k_new), vn(v_new), bt(block_table);
        check(kfa_forward_kvcache(c.get(), &tq, &tkc, &tvc, &to, &tl, &ts, kn.get(), vn.get(), bt.get(), num_splits,
                                  check_indices ? 1 : 0, p.get()));
      },
      nogil);
}
