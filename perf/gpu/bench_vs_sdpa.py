"""kfa on the GPU beside PyTorch SDPA's FlashAttention-2 kernel and cuDNN, in ONE call.

FlashAttention-2 paper setup: bf16, batch * seqlen = 16k tokens, hidden 2048 (heads = 2048 / head_dim),
seqlen 512..16k, head_dim 64/128/256, causal and not. Forward FLOPs = 4 * b * h * n^2 * d (halved when
causal). kfa is timed by kfa-gpu-bench (CUDA events, L2 flushed before each call, median); the peers
by triton's do_bench (also L2-flushed, median), as in the anchor measurements.

  python3 bench_vs_sdpa.py --bench build/perf/gpu/kfa-gpu-bench [--out results.json] [--quick]
"""
import argparse, json, subprocess, sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

FP32_FMA_PEAK = 66.9  # TFLOP/s, H100 SXM non-tensor fp32


def flops(b, h, n, d, causal):
    return 4 * b * h * n * n * d / (2 if causal else 1)


def run_kfa(bench, dims, seqlens, paths, memory, portable_reps):
    cmd = [bench, "--paths", ",".join(paths), "--dims", ",".join(map(str, dims)),
           "--seqlens", ",".join(map(str, seqlens)), "--portable-reps", str(portable_reps)] + (["--memory"] if memory else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run_peers(dims, seqlens):
    peers = {"flash2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    rows = []
    for d in dims:
        for causal in (False, True):
            for n in seqlens:
                b, h = max(1, 16384 // n), 2048 // d
                q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                for name, be in peers.items():
                    r = {"path": name, "d": d, "causal": int(causal), "n": n}
                    try:
                        with sdpa_kernel(be):
                            t = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                         warmup=25, rep=100, return_mode="median")
                        r["tflops"] = flops(b, h, n, d, causal) / t / 1e9
                    except Exception as e:  # a peer that does not take the case
                        r["error"] = str(e).splitlines()[0][:80]
                    rows.append(r)
                del q, k, v
                torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--out", default="bench_vs_sdpa.json")
    ap.add_argument("--quick", action="store_true", help="head_dim 64/128, seqlen 1k/4k/16k")
    ap.add_argument("--no-portable", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also the seqlen-64k memory run")
    ap.add_argument("--portable-reps", type=int, default=5, help="timed calls of the (slow) portable path")
    a = ap.parse_args()
    dims = [64, 128] if a.quick else [64, 128, 256]
    seqlens = [1024, 4096, 16384] if a.quick else [512, 1024, 2048, 4096, 8192, 16384]
    paths = ["native"] + ([] if a.no_portable else ["portable"])
    kfa = run_kfa(a.bench, dims, seqlens, paths, a.memory, a.portable_reps)
    peers = run_peers(dims, seqlens)
    device = next((r["name"] for r in kfa if r.get("kind") == "device"), torch.cuda.get_device_name())
    rows = [r for r in kfa if r.get("kind") == "fwd"] + peers
    json.dump({"gpu": device, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
               "kfa": kfa, "peers": peers}, open(a.out, "w"), indent=1)

    def get(path, d, c, n):
        for r in rows:
            if r["path"] == path and r["d"] == d and r["causal"] == c and r["n"] == n:
                return r.get("tflops", float("nan"))
        return float("nan")

    print(f"GPU {device}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; forward TFLOP/s")
    print(f"{'d':>4} {'c':>1} {'n':>6} {'native':>7} {'portable':>8} {'flash2':>7} {'cudnn':>7} "
          f"{'nat/fa2':>7} {'nat/cudnn':>9} {'port/fp32pk':>11}")
    for d in dims:
        for c in (0, 1):
            for n in seqlens:
                nat, port, fa2, cud = (get(p, d, c, n) for p in ("native", "portable", "flash2", "cudnn"))
                print(f"{d:>4} {c:>1} {n:>6} {nat:7.1f} {port:8.1f} {fa2:7.1f} {cud:7.1f} "
                      f"{nat / fa2:7.2f} {nat / cud:9.2f} {port / FP32_FMA_PEAK:11.1%}")
    for r in kfa:
        if r.get("kind") == "memory":
            print(f"memory seqlen {r['seqlen']} b1 h16 d128 causal, {r['path']}: tensors {r['tensor_bytes'] / 2**30:.3f} GiB, "
                  f"in use after the call {r['used_after_call'] / 2**30:.3f} GiB "
                  f"({r['used_after_call'] / r['tensor_bytes'] - 1:+.1%}), {r['ms']:.1f} ms, {r['tflops']:.1f} TFLOP/s")


if __name__ == "__main__":
    sys.exit(main())
