"""kfa from Python: causal attention forward and backward on PyTorch tensors (a GPU when kfa was built
for one and PyTorch sees it, else the CPU), checked against PyTorch's own attention.

    PYTHONPATH=<prefix>/lib/python python3 examples/python/attention.py
"""
import torch

import kfa

use_gpu = torch.cuda.is_available()
device, dtype = ("cuda", torch.bfloat16) if use_gpu else ("cpu", torch.float32)
b, s, h, h_kv, d = 2, 256, 8, 2, 64
q = torch.randn(b, s, h, d, device=device, dtype=dtype, requires_grad=True)
k = torch.randn(b, s, h_kv, d, device=device, dtype=dtype, requires_grad=True)
v = torch.randn(b, s, h_kv, d, device=device, dtype=dtype, requires_grad=True)

try:
    out = kfa.attention(q, k, v, causal=True)  # [b, s, h, d], grouped-query attention
except RuntimeError as e:  # kfa built for the CPU only: run the example there
    print(f"kfa on {device} failed ({e}); using the CPU")
    device, dtype = "cpu", torch.float32
    q, k, v = (x.detach().to(device, dtype).requires_grad_() for x in (q, k, v))
    out = kfa.attention(q, k, v, causal=True)
out.sum().backward()

# the same with PyTorch (k, v repeated over the query heads of each kv head)
rq, rk, rv = (x.detach().double().requires_grad_() for x in (q, k, v))
scores = torch.einsum("bqhd,bkhd->bhqk", rq, rk.repeat_interleave(h // h_kv, 2), ) / d**0.5
scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool, device=device).triu(1), float("-inf"))
ref = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), rv.repeat_interleave(h // h_kv, 2))
ref.sum().backward()
pairs = (("out", out.detach(), ref.detach()), ("dq", q.grad, rq.grad), ("dk", k.grad, rk.grad), ("dv", v.grad, rv.grad))
errs = {name: (a.double() - r).abs().max().item() / max(1.0, r.abs().max().item()) for name, a, r in pairs}
print(f"kfa.attention on {device} ({dtype}): max |kfa - fp64| / max(1, |fp64|): "
      + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
tol = 3e-2 if dtype == torch.bfloat16 else 1e-5
assert all(e < tol for e in errs.values()), "kfa differs from the reference"
