"""Prints kfa's feature benchmark (kfa-feature-bench) beside the peers (peer_feature_bench.py) as ratios.
   python3 feature_table.py kfa_features.jsonl [peers.jsonl]"""
import json, os, sys

kfa = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peers = []
if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
    peers = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]


def rows(kind):
    return [r for r in kfa if r["kind"] == kind]


sp = rows("sparse")
if sp:
    dense = next(r for r in sp if r["case"] == "dense")
    flex = [p for p in peers if p.get("case") == "sparse"]
    print("block-sparse B4 H16 N8192 d128 bf16, 128x128 blocks (ms; x = flex / kfa)")
    print("density  kfa fwd  flex fwd   x     kfa bwd  flex bwd   x    fwd t/t_dense  bwd t/t_dense  (target <= s+0.03)")
    masked = [r for r in sp if r["case"] != "dense"]
    for i, r in enumerate(masked):
        s = float(r["case"].split()[1])
        f = flex[i] if i < len(flex) else None
        ff = f"{f['fwd_ms']:8.3f} {f['fwd_ms'] / r['fwd_ms']:5.2f}" if f else "       -     -"
        fb = f"{f['bwd_ms']:8.3f} {f['bwd_ms'] / r['bwd_ms']:5.2f}" if f else "       -     -"
        print(f"{s:7.4f} {r['fwd_ms']:8.3f} {ff}  {r['bwd_ms']:8.3f} {fb}  {r['fwd_ms'] / dense['fwd_ms']:8.3f}"
              f"       {r['bwd_ms'] / dense['bwd_ms']:8.3f}      {s + 0.03:.3f}")
    print(f"dense    {dense['fwd_ms']:8.3f} ({dense['fwd_tflops']} TFLOP/s)   bwd {dense['bwd_ms']:.3f} ({dense['bwd_tflops']} TFLOP/s)")

vl = rows("varlen")
if vl:
    print("\npacked varlen, causal, H16 d128 bf16 (TFLOP/s; x = kfa / flex)")
    flex = next((p for p in peers if p.get("case") == "varlen"), None)
    for r in vl:
        extra = ""
        if flex and r["case"] == "packed causal":
            extra = f"   flex {flex['fwd_tflops']} / {flex['bwd_tflops']}   x {r['fwd_tflops'] / flex['fwd_tflops']:.2f} / {r['bwd_tflops'] / flex['bwd_tflops']:.2f}"
        print(f"{r['case']:22} fwd {r['fwd_tflops']:6.1f}  bwd {r['bwd_tflops']:6.1f}{extra}")

md = rows("modifiers")
if md:
    print("\nscore modifiers and dropout, B4 H16 N4096 d128 bf16 (cost over plain; targets: dropout <= 1.15 fwd, 1.20 bwd; others <= 1.10)")
    base = {}
    for r in md:
        causal = r["case"].endswith("causal")
        if r["case"].startswith("plain"):
            base[causal] = r
    for r in md:
        b = base[r["case"].endswith("causal")]
        print(f"{r['case']:22} fwd {r['fwd_ms']:7.3f} ms x{r['fwd_ms'] / b['fwd_ms']:5.2f}   bwd {r['bwd_ms']:7.3f} ms x{r['bwd_ms'] / b['bwd_ms']:5.2f}"
              f"   ({r['fwd_tflops']} / {r['bwd_tflops']} TFLOP/s)")
