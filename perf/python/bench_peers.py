"""kfa, FlashAttention-2 and cuDNN timed from Python in one process, through the kfa package and
PyTorch's SDPA backends, on the FlashAttention-2 paper setup (bf16, batch x seqlen = 16k, hidden 2048).
Forward and backward separately, CUDA-synchronized wall clock, median of repeated calls after warm-up;
TFLOP/s with 4 B H N^2 d (halved when causal) for the forward and 2.5x that for the backward. The last
lines are a table of kfa beside each peer as ratios.

    PYTHONPATH=<build>/python python3 perf/python/bench_peers.py [--dims 64,128,256] [--seqlens 1024,4096,16384]
    ... bench_peers.py --demo      scripts/demo.sh's layer: batch 1, 12 heads, head_dim 64, seqlen 1k/2k/4k
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import kfa


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def time_fn(fn, reps=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[len(ts) // 2]


def fwd_bwd(fn, inputs):
    o = fn()
    g = torch.randn_like(o)
    tf = time_fn(fn)
    tb = time_fn(lambda: torch.autograd.grad(o, inputs, g, retain_graph=True))
    return tf, tb


def main():
    demo = "--demo" in sys.argv
    dims = [64] if demo else [int(x) for x in arg("--dims", "64,128,256").split(",")]
    seqlens = [int(x) for x in arg("--seqlens", "1024,2048,4096" if demo else "1024,4096,16384").split(",")]
    rows = []
    for d in dims:
        for causal in (False, True):
            for n in seqlens:
                b, h = (1, 12) if demo else (max(1, 16384 // n), 2048 // d)
                fl = 4 * b * h * n * n * d / (2 if causal else 1)
                # each in its own layout: kfa's [b, s, h, d], SDPA's [b, h, s, d]
                qs, ks, vs = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                              for _ in range(3))
                qh, kh, vh = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (qs, ks, vs))
                res = {"kfa": fwd_bwd(lambda: kfa.attention(qs, ks, vs, causal=causal), (qs, ks, vs))}
                for name, be in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel(be):
                            res[name] = fwd_bwd(lambda: F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal),
                                                (qh, kh, vh))
                    except RuntimeError as e:  # a backend that does not take the shape
                        print(f"{name} d{d} n{n}: {e}".splitlines()[0], file=sys.stderr)
                for name, (tf, tb) in res.items():
                    r = dict(impl=name, d=d, causal=int(causal), n=n, fwd_ms=round(tf, 4), bwd_ms=round(tb, 4),
                             fwd_tflops=round(fl / tf / 1e9, 1), bwd_tflops=round(2.5 * fl / tb / 1e9, 1))
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                del qs, ks, vs, qh, kh, vh
    by = {(r["impl"], r["d"], r["causal"], r["n"]): r for r in rows}
    setup = "batch 1, 12 heads" if demo else "FA2 paper setup"
    print(f"\nkfa (Python package) beside FA2 and cuDNN (SDPA), {torch.cuda.get_device_name()}, bf16, {setup}, TFLOP/s")
    print(f"{'d':>4} {'causal':>6} {'n':>6} {'kfa fwd':>8} {'/fa2':>6} {'/cudnn':>7} {'kfa bwd':>8} {'/fa2':>6} {'/cudnn':>7}")
    for (impl, d, causal, n), r in by.items():
        if impl != "kfa":
            continue
        ratio = lambda peer, key: (f"{r[key] / by[(peer, d, causal, n)][key]:.2f}" if (peer, d, causal, n) in by else "-")
        print(f"{d:>4} {causal:>6} {n:>6} {r['fwd_tflops']:8.1f} {ratio('fa2', 'fwd_tflops'):>6} "
              f"{ratio('cudnn', 'fwd_tflops'):>7} {r['bwd_tflops']:8.1f} {ratio('fa2', 'bwd_tflops'):>6} "
              f"{ratio('cudnn', 'bwd_tflops'):>7}")


if __name__ == "__main__":
    main()
