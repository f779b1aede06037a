"""The two native forwards (fwd_check --bench: mma.sync and Hopper wgmma) beside PyTorch SDPA's
FlashAttention-2 and cuDNN kernels, in one call, on the FlashAttention-2 paper setup; prints TFLOP/s
and ratios. Also a dense bf16 GEMM rate (torch.matmul 8192^3) for the fraction-of-GEMM column.
  python3 fwd_vs_peers.py FWD_CHECK [--out results.json] [--reps 30] [--variant NAME=FWD_CHECK ...]
--variant adds the Hopper column of another build (a tile or schedule variant) to the same table.
"""
import argparse, json, os, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../perf/gpu"))
import torch  # noqa: E402
from bench_vs_sdpa import run_peers  # noqa: E402
from triton.testing import do_bench  # noqa: E402


def gemm_tflops():
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    t = do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    return 2 * 8192**3 / t / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fwd_check")
    ap.add_argument("--out", default="fwd_vs_peers.json")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--variant", action="append", default=[], help="NAME=FWD_CHECK")
    a = ap.parse_args()

    def bench(path):
        out = subprocess.run([path, "--bench", str(a.reps)], check=True, capture_output=True, text=True).stdout
        return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

    kfa = bench(a.fwd_check)
    variants = [v.split("=", 1) for v in a.variant]
    for name, path in variants:
        for r, v in zip(kfa, bench(path)):
            r[name] = v["wgmma"]
    dims = sorted({r["d"] for r in kfa})
    seqlens = sorted({r["n"] for r in kfa})
    peers = run_peers(dims, seqlens)
    gemm = gemm_tflops()
    json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
               "gemm_tflops": gemm, "kfa": kfa, "peers": peers}, open(a.out, "w"), indent=1)

    def peer(name, d, c, n):
        return next((r.get("tflops", float("nan")) for r in peers
                     if r["path"] == name and r["d"] == d and r["causal"] == c and r["n"] == n), float("nan"))

    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"dense bf16 GEMM {gemm:.0f} TFLOP/s; forward TFLOP/s")
    print(f"{'d':>4} {'c':>1} {'n':>6} {'wgmma':>6} {'mma':>6} {'flash2':>6} {'cudnn':>6} "
          f"{'wg/cudnn':>8} {'wg/fa2':>6} {'mma/fa2':>7} {'wg/gemm':>7}" +
          "".join(f" {name[:10]:>10} {'/cudnn':>6}" for name, _ in variants))
    for r in kfa:
        d, c, n = r["d"], r["causal"], r["n"]
        fa2, cud = peer("flash2", d, c, n), peer("cudnn", d, c, n)
        print(f"{d:>4} {c:>1} {n:>6} {r['wgmma']:6.1f} {r['mma']:6.1f} {fa2:6.1f} {cud:6.1f} "
              f"{r['wgmma'] / cud:8.2f} {r['wgmma'] / fa2:6.2f} {r['mma'] / fa2:7.2f} {r['wgmma'] / gemm:7.1%}" +
              "".join(f" {r[name]:10.1f} {r[name] / cud:6.2f}" for name, _ in variants))


if __name__ == "__main__":
    sys.exit(main())
