"""The Python package against an fp64 reference written here in PyTorch, with the tolerance rule: kfa's
max-abs error (outputs and gradients) at most 2x that of a plain unfused attention in the inputs'
precision, plus a tiny epsilon. Fresh random inputs each run (the seed is printed); outputs are made by
kfa itself (nothing to poison), NaN never passes. The CPU cases run everywhere; the GPU cases where
PyTorch sees a CUDA device and kfa was built for it."""
import math
import os
import random
import unittest

import torch

import kfa

SEED = int(os.environ.get("KFA_TEST_SEED", random.randrange(1 << 30)))
print(f"tests/python: seed {SEED}")
torch.manual_seed(SEED)


def visible(sq, sk, causal, window, device):
    """[sq, sk] mask of the keys each query sees (bottom-right aligned, kfa's rule)."""
    i = torch.arange(sq, device=device).view(-1, 1)
    j = torch.arange(sk, device=device).view(1, -1)
    diff = j - i - (sk - sq)
    left, right = window
    if causal:
        right = 0 if right < 0 else min(right, 0)
    ok = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        ok &= diff >= -left
    if right >= 0:
        ok &= diff <= right
    return ok


def reference(q, k, v, causal=False, scale=None, window=(-1, -1), softcap=0.0, alibi=None, allowed=None,
              dtype=torch.float64):
    """Unfused attention in `dtype`: out [b, sq, h, d] and lse [b, h, sq] (rows that see no key: 0, -inf);
    `allowed` [b or 1, h or 1, sq, sk] masks elements too."""
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    q, k, v = (x.to(dtype) for x in (q, k, v))
    k = k.repeat_interleave(h // hk, dim=2)
    v = v.repeat_interleave(h // hk, dim=2)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if alibi is not None:
        i = torch.arange(sq, device=q.device).view(-1, 1)
        j = torch.arange(sk, device=q.device).view(1, -1)
        dist = (i + sk - sq - j).abs().to(dtype)
        s = s - torch.as_tensor(alibi, dtype=dtype, device=q.device).view(1, h, 1, 1) * dist
    ok = visible(sq, sk, causal, window, q.device)
    if allowed is not None:
        ok = ok & allowed.to(q.device)
    s = s.masked_fill(~ok, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1).masked_fill(torch.isinf(lse).unsqueeze(-1), 0.0))
    p = p.masked_fill(~ok, 0.0)
    out = torch.einsum("bhqk,bkhd->bqhd", p, v)
    return out, lse


def element_mask(mask):
    """The [b or 1, h or 1, sq, sk] element mask of a kfa.BlockMask."""
    e = mask.blocks.repeat_interleave(mask.block_q, dim=2).repeat_interleave(mask.block_k, dim=3)
    return e[:, :, :mask.seqlen_q, :mask.seqlen_k]


def max_err(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return math.inf
    return (a - b).abs().max().item() if a.numel() else 0.0


EPS = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-3, torch.float16: 1e-4}


class Case:
    def __init__(self, b=2, sq=70, sk=70, h=4, hk=2, d=32, dtype=torch.float32, device="cpu"):
        mk = lambda *s: torch.randn(*s, dtype=torch.float64).to(dtype=dtype, device=device)
        self.q, self.k, self.v = mk(b, sq, h, d), mk(b, sk, hk, d), mk(b, sk, hk, d)
        self.dout = mk(b, sq, h, d)


class Checker(unittest.TestCase):
    def check_fwd_bwd(self, c, layout="bshd", **opt):
        """kfa's out and gradients against fp64, the plain attention in the inputs' precision as the bound."""
        dtype = c.q.dtype
        to_layout = (lambda t: t) if layout == "bshd" else (lambda t: t.transpose(1, 2).contiguous())
        from_layout = (lambda t: t) if layout == "bshd" else (lambda t: t.transpose(1, 2))
        q, k, v = (to_layout(x).detach().clone().requires_grad_() for x in (c.q, c.k, c.v))
        out = kfa.attention(q, k, v, layout=layout, **opt)
        self.assertEqual(out.shape, q.shape)
        out.backward(to_layout(c.dout))
        got = [from_layout(x) for x in (out.detach(), q.grad, k.grad, v.grad)]
        ropt = dict(causal=opt.get("causal", False), scale=opt.get("softmax_scale"), window=opt.get("window", (-1, -1)),
                    softcap=opt.get("softcap", 0.0), alibi=opt.get("alibi_slopes"),
                    allowed=element_mask(opt["block_mask"]) if "block_mask" in opt else None)
        results = []
        for rdtype in (torch.float64, dtype):
            rq, rk, rv = (x.detach().to(rdtype).requires_grad_() for x in (c.q, c.k, c.v))
            rout, _ = reference(rq, rk, rv, dtype=rdtype, **ropt)
            rout.backward(c.dout.to(rdtype))
            results.append([rout.detach(), rq.grad, rk.grad, rv.grad])
        exact, plain = results
        for name, g, e, p in zip(("out", "dq", "dk", "dv"), got, exact, plain):
            err, bound = max_err(g, e), 2 * max_err(p.to(dtype), e) + EPS[dtype]
            self.assertLessEqual(err, bound, f"{name}: kfa error {err:.3e}, bound {bound:.3e} ({opt}, {layout})")


class TestCpu(Checker):
    def test_head_dims_gqa_causal(self):
        for dtype in (torch.float32, torch.float64):
            for d in (32, 64):
                for h, hk in ((4, 4), (4, 2), (4, 1)):
                    for causal in (False, True):
                        self.check_fwd_bwd(Case(b=2, sq=57, sk=83, h=h, hk=hk, d=d, dtype=dtype), causal=causal)

    def test_bhsd_layout(self):
        self.check_fwd_bwd(Case(b=2, sq=40, sk=40, h=4, hk=2, d=32), layout="bhsd", causal=True)

    def test_window_softcap_alibi_scale(self):
        c = Case(b=1, sq=65, sk=65, h=4, hk=2, d=32, dtype=torch.float64)
        self.check_fwd_bwd(c, window=(20, 3))
        self.check_fwd_bwd(c, softcap=5.0, softmax_scale=0.3)
        self.check_fwd_bwd(c, alibi_slopes=[0.5, 0.25, 0.125, 0.0625], causal=True)

    def test_block_masks(self):
        for causal in (False, True):
            for heads_in_mask in (1, 4):
                sq = sk = 70  # 5 blocks of 16, the last one partial
                blocks = torch.rand(heads_in_mask, 5, 5) < 0.5
                blocks[..., 0, :] = False  # a block row that is all skipped: its queries see no key
                mask = kfa.BlockMask(blocks, sq, sk, block_q=16, block_k=16)
                self.check_fwd_bwd(Case(b=2, sq=sq, sk=sk, h=4, hk=2, d=32, dtype=torch.float64), block_mask=mask,
                                   causal=causal)
        c = Case(b=1, sq=40, sk=40, h=2, hk=2, d=16, dtype=torch.float64)
        out, lse = kfa.attention(c.q, c.k, c.v, block_mask=kfa.BlockMask(torch.zeros(3, 3, dtype=torch.bool), 40, 40, 16, 16),
                                 return_lse=True)
        self.assertTrue((out == 0).all() and torch.isneginf(lse).all())
        with self.assertRaises(ValueError):  # block sizes not multiples of 16
            kfa.attention(c.q, c.k, c.v, block_mask=kfa.BlockMask(torch.ones(4, 4, dtype=torch.bool), 40, 40, 10, 10))

    def test_lse_and_rows_that_see_no_key(self):
        c = Case(b=1, sq=30, sk=10, h=2, hk=2, d=16, dtype=torch.float64)
        q, k, v = (x.clone().requires_grad_() for x in (c.q, c.k, c.v))
        out, lse = kfa.attention(q, k, v, causal=True, return_lse=True)
        rout, rlse = reference(c.q, c.k, c.v, causal=True)
        self.assertEqual(lse.shape, (1, 2, 30))
        self.assertTrue(torch.isneginf(lse[:, :, :20]).all())  # causal with 30 queries, 10 keys
        self.assertTrue((out[:, :20] == 0).all())
        self.assertLess(max_err(lse[:, :, 20:], rlse[:, :, 20:]), 1e-12)
        self.assertLess(max_err(out, rout), 1e-12)
        out.backward(c.dout)
        self.assertTrue((q.grad[:, :20] == 0).all())

    def test_dropout_is_repeatable_and_its_gradient_matches_finite_differences(self):
        c = Case(b=1, sq=24, sk=24, h=2, hk=1, d=16, dtype=torch.float64)

        def f(q, k, v):
            torch.manual_seed(1234)  # the same Philox seed, so the same dropout mask
            return kfa.attention(q, k, v, dropout_p=0.3)

        base = f(c.q, c.k, c.v)
        self.assertTrue(torch.equal(base, f(c.q, c.k, c.v)))
        self.assertGreater(max_err(base, kfa.attention(c.q, c.k, c.v)), 1e-3)
        q, k, v = (x.clone().requires_grad_() for x in (c.q, c.k, c.v))
        f(q, k, v).backward(c.dout)
        for x, g in ((c.q, q.grad), (c.k, k.grad), (c.v, v.grad)):
            u = torch.randn_like(x)
            e = 1e-6
            xp, xm = x + e * u, x - e * u
            args = lambda y: [y if z is x else z for z in (c.q, c.k, c.v)]
            fd = ((f(*args(xp)) - f(*args(xm))) * c.dout).sum().item() / (2 * e)
            self.assertAlmostEqual(fd, (g * u).sum().item(), delta=1e-6 * max(1.0, abs(fd)))

    def test_deterministic_backward_is_bitwise_repeatable(self):
        c = Case(b=1, sq=50, sk=50, h=4, hk=2, d=32)
        grads = []
        for _ in range(2):
            q, k, v = (x.clone().requires_grad_() for x in (c.q, c.k, c.v))
            kfa.attention(q, k, v, causal=True, deterministic=True).backward(c.dout)
            grads.append((q.grad, k.grad, v.grad))
        for a, b in zip(*grads):
            self.assertTrue(torch.equal(a, b))

    def test_varlen_equals_attention_per_sequence(self):
        lens_q, lens_k, h, hk, d = [5, 0, 33, 17], [9, 4, 33, 1], 4, 2, 32
        cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
        mk = lambda n, heads: torch.randn(n, heads, d, dtype=torch.float64)
        q, k, v = mk(sum(lens_q), h), mk(sum(lens_k), hk), mk(sum(lens_k), hk)
        dout = mk(sum(lens_q), h)
        qs, ks, vs = (x.clone().requires_grad_() for x in (q, k, v))
        out = kfa.attention_varlen(qs, ks, vs, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k), causal=True)
        out.backward(dout)
        cq, ck = cu(lens_q).tolist(), cu(lens_k).tolist()
        for s in range(len(lens_q)):
            a, b = slice(cq[s], cq[s + 1]), slice(ck[s], ck[s + 1])
            rq, rk, rv = (x[None, sl].clone().requires_grad_() for x, sl in ((q, a), (k, b), (v, b)))
            rout, _ = reference(rq, rk, rv, causal=True)
            rout.backward(dout[None, a])
            self.assertLess(max_err(out[a], rout[0]), 1e-12)
            for g, rg in ((qs.grad[a], rq.grad[0]), (ks.grad[b], rk.grad[0]), (vs.grad[b], rv.grad[0])):
                self.assertLess(max_err(g, rg), 1e-11)

    def test_kvcache_append_then_attend(self):
        b, cap, h, hk, d, new = 3, 40, 4, 2, 32, 2
        k_cache = torch.randn(b, cap, hk, d, dtype=torch.float64)
        v_cache = torch.randn(b, cap, hk, d, dtype=torch.float64)
        lens = torch.tensor([0, 7, 38], dtype=torch.int32)
        q = torch.randn(b, new, h, d, dtype=torch.float64)
        k_new = torch.randn(b, new, hk, d, dtype=torch.float64)
        v_new = torch.randn(b, new, hk, d, dtype=torch.float64)
        before = k_cache.clone()
        out = kfa.attention_with_kvcache(q, k_cache, v_cache, lens, k_new=k_new, v_new=v_new, causal=True)
        for s in range(b):
            n = int(lens[s])
            self.assertTrue(torch.equal(k_cache[s, n:n + new], k_new[s]))  # appended in place
            self.assertTrue(torch.equal(k_cache[s, :n], before[s, :n]))
            rout, _ = reference(q[s:s + 1], k_cache[s:s + 1, :n + new], v_cache[s:s + 1, :n + new], causal=True)
            self.assertLess(max_err(out[s:s + 1], rout), 1e-12)

    def test_inference_path_and_reused_options(self):
        # without autograd (inputs without grad, or torch.no_grad) the forward runs without an autograd
        # node and gives the same bits; calls alternating their options each get their own
        c = Case(sq=45, sk=61)
        outs = {}
        for causal in (True, False, True, False):
            q, k, v = (x.clone().requires_grad_() for x in (c.q, c.k, c.v))
            with_grad = kfa.attention(q, k, v, causal=causal, window=(7, -1) if causal else (-1, -1))
            self.assertIsNotNone(with_grad.grad_fn)
            plain = kfa.attention(c.q, c.k, c.v, causal=causal, window=(7, -1) if causal else (-1, -1))
            with torch.no_grad():
                no_grad = kfa.attention(q, k, v, causal=causal, window=(7, -1) if causal else (-1, -1))
            self.assertIsNone(plain.grad_fn)
            self.assertIsNone(no_grad.grad_fn)
            self.assertTrue(torch.equal(plain, with_grad.detach()) and torch.equal(plain, no_grad))
            ref, _ = reference(c.q.double(), c.k.double(), c.v.double(), causal=causal,
                               window=(7, -1) if causal else (-1, -1), dtype=torch.float64)
            self.assertLess(max_err(plain, ref), 1e-5)
            if causal in outs:
                self.assertTrue(torch.equal(outs[causal], plain))
            outs[causal] = plain
        self.assertFalse(torch.equal(outs[True], outs[False]))

    def test_bad_input_raises(self):
        q = torch.randn(1, 8, 2, 16)
        with self.assertRaises(ValueError):
            kfa.attention(q, torch.randn(1, 8, 2, 8), torch.randn(1, 8, 2, 8))  # head dims differ
        with self.assertRaises(ValueError):
            kfa.attention(q, torch.randn(1, 8, 3, 16), torch.randn(1, 8, 3, 16))  # 2 heads over 3 kv heads
        with self.assertRaises(TypeError):
            kfa.attention(q.long(), q.long(), q.long())
        with self.assertRaises(ValueError):
            kfa.attention(q, q, q, layout="sbhd")


def _kfa_has_gpu():
    if not torch.cuda.is_available():
        return False
    x = torch.randn(1, 16, 1, 64, device="cuda", dtype=torch.float16)
    try:
        kfa.attention(x, x, x)
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


@unittest.skipUnless(_kfa_has_gpu(), "no CUDA device, or kfa built without one")
class TestGpu(Checker):
    def test_bf16_fp16_head_dims_gqa_causal(self):
        for dtype in (torch.bfloat16, torch.float16):
            for d in (64, 128):
                for causal in (False, True):
                    self.check_fwd_bwd(Case(b=2, sq=300, sk=300, h=4, hk=2, d=d, dtype=dtype, device="cuda"),
                                       causal=causal)

    def test_features_and_layout(self):
        c = Case(b=1, sq=257, sk=257, h=4, hk=1, d=128, dtype=torch.bfloat16, device="cuda")
        self.check_fwd_bwd(c, layout="bhsd", causal=True)
        self.check_fwd_bwd(c, window=(64, 0), softcap=20.0)
        self.check_fwd_bwd(c, alibi_slopes=[0.5, 0.25, 0.125, 0.0625])

    def test_block_mask(self):
        blocks = torch.rand(4, 3, 3) < 0.6
        mask = kfa.BlockMask(blocks, 300, 300, block_q=128, block_k=128)
        self.check_fwd_bwd(Case(b=2, sq=300, sk=300, h=4, hk=2, d=128, dtype=torch.bfloat16, device="cuda"),
                           block_mask=mask, causal=True)

    def test_matches_sdpa_on_a_side_stream(self):
        q, k, v = (torch.randn(2, 8, 512, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            out = kfa.attention(q, k, v, causal=True, layout="bhsd")
        s.synchronize()
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        exact, _ = reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
        self.assertLessEqual(max_err(out.transpose(1, 2), exact), 2 * max_err(ref.transpose(1, 2), exact) + 1e-3)


if __name__ == "__main__":
    unittest.main()
