"""kfa's OpenMP forward against PyTorch's CPU SDPA (its flash-attention CPU kernel), same shapes.

Times torch.nn.functional.scaled_dot_product_attention on the CPU like the anchor measurement
(batch 1, 12 heads, d 64, fp32, non-causal; one warm-up, median of 5 calls; torch.set_num_threads)
and reads kfa-bench JSON files written on the same machine (one per thread count), then prints
GFLOP/s side by side and the ratio kfa / PyTorch.

  python3 cpu_peer_compare.py --kfa kfa_t2.json kfa_t16.json [--out compare.json]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def torch_gflops(threads, n, heads=12, d=64, reps=5):
    torch.set_num_threads(threads)
    q, k, v = (torch.randn(1, heads, n, d, dtype=torch.float32) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v)
        ts.append(time.perf_counter() - t)
    t = sorted(ts)[reps // 2]
    return 4 * heads * n * n * d / t / 1e9, t * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kfa", nargs="+", required=True, help="kfa-bench --json files")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for path in args.kfa:
        js = json.load(open(path))
        threads = js["concurrency"]
        for r in js["results"]:
            if r["causal"] or r["dtype"] != "f32" or not r["kfa"]["ran"]:
                continue
            n, heads, d = r["seqlen"], r["heads"], r["head_dim"]
            kfa_g = r["kfa"]["tflops"] * 1e3
            tg, tms = torch_gflops(threads, n, heads, d)
            rows.append(dict(threads=threads, seqlen=n, heads=heads, head_dim=d, kfa_ms=r["kfa"]["ms"],
                             kfa_gflops=kfa_g, torch_ms=tms, torch_gflops=tg, ratio=kfa_g / tg))
    print(f"torch {torch.__version__}, fp32, batch 1, non-causal; GFLOP/s = 4*B*H*N*N*d / median time")
    print(f"{'threads':>7} {'seqlen':>6} {'H':>3} {'d':>3} | {'kfa ms':>9} {'GFLOP/s':>8} | {'torch ms':>9} {'GFLOP/s':>8} | {'kfa/torch':>9}")
    for r in rows:
        print(f"{r['threads']:>7} {r['seqlen']:>6} {r['heads']:>3} {r['head_dim']:>3} | {r['kfa_ms']:>9.2f} "
              f"{r['kfa_gflops']:>8.1f} | {r['torch_ms']:>9.2f} {r['torch_gflops']:>8.1f} | {r['ratio']:>8.2f}x")
    if args.out:
        json.dump(dict(torch=torch.__version__, rows=rows), open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
