"""Backward TFLOP/s of PyTorch's FlashAttention-2 SDPA kernel on the FlashAttention-2 paper setup
(bf16, batch*seqlen = 16k, hidden 2048), measured beside kfa's bwd_check --bench in the same run."""
import sys
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F


def median_ms(fn, reps=15):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    seqlens = [int(x) for x in sys.argv[1:]] or [1024, 4096, 16384]
    print(f"{'d':<4} {'causal':<6} {'seqlen':<6} {'fa2 bwd ms':<10} {'TFLOP/s':<8}")
    for d in (64, 128):
        for causal in (False, True):
            for n in seqlens:
                b, h = 16384 // n, 2048 // d
                q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    g = torch.randn_like(out)
                    ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), g, retain_graph=True))
                flops = 2.5 * 4 * b * h * n * n * d / (2 if causal else 1)
                print(f"{d:<4} {str(causal):<6} {n:<6} {ms:<10.3f} {flops / ms * 1e-9:<8.1f}")


if __name__ == "__main__":
    main()
