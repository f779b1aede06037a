"""kfa for PyTorch: exact attention, FlashAttention-style, on kfa's native GPU kernels or its portable
algorithm, through kfa's C API (no copies: tensors are passed by pointer, extents and strides).

    out = kfa.attention(q, k, v, causal=True)                  # q, k, v [batch, seqlen, heads, head_dim]
    out, lse = kfa.attention(q, k, v, layout="bhsd", return_lse=True)
    out = kfa.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    out = kfa.attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, k_new=k, v_new=v)
    mask = kfa.BlockMask(blocks, seqlen_q, seqlen_k, block_q=128, block_k=128)  # blocks: bool [.., nqb, nkb]
    out = kfa.attention(q, k, v, block_mask=mask)               # skipped blocks cost nothing

attention and attention_varlen are differentiable (an autograd Function calling kfa's backward);
GPU calls run on PyTorch's current CUDA stream of the tensors' device, which must be the device the
library's Kokkos runs on (CUDA device 0 unless Kokkos was told otherwise). Element types: float32 and
float64 everywhere, float16 and bfloat16 in GPU builds.
"""
import atexit

import torch

from . import _kfa

__all__ = ["attention", "attention_varlen", "attention_with_kvcache", "BlockMask"]

_DTYPES = {torch.float32: _kfa.F32, torch.float64: _kfa.F64, torch.float16: _kfa.F16, torch.bfloat16: _kfa.BF16,
           torch.int32: _kfa.I32}
_BACKENDS = {"auto": 0, "portable": 1, "native": 2}


def _desc(t):
    """The C API descriptor of tensor t: (pointer, element type, extents, strides, memory)."""
    if t.dtype not in _DTYPES:
        raise TypeError(f"kfa: unsupported element type {t.dtype}")
    return (t.data_ptr(), _DTYPES[t.dtype], tuple(t.shape), tuple(t.stride()), _kfa.DEVICE if t.is_cuda else _kfa.HOST)


_contexts = {}


def _context(t):
    """The context of t's memory space and, on a GPU, of the current stream (cached)."""
    if t.is_cuda:
        stream = torch.cuda.current_stream(t.device).cuda_stream
        key = (_kfa.DEVICE, stream)
    else:
        key, stream = (_kfa.HOST, 0), 0
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = _contexts[key] = _kfa.Context(key[0], stream)
    return ctx


def _shutdown():
    for ctx in _contexts.values():
        ctx.close()
    _contexts.clear()
    _kfa.finalize()


_kfa.initialize()
atexit.register(_shutdown)


def _unit_last(t):
    """t, or a copy of it, with unit stride in the last dimension (what kfa requires)."""
    return t if t.stride(-1) == 1 else t.contiguous()


class BlockMask:
    """Which (query block, key block) pairs of the scores are computed (kfa::BlockMask), from a boolean
    block matrix `blocks` [n_qblocks, n_kblocks], [heads, n_qblocks, n_kblocks] or [batch, heads,
    n_qblocks, n_kblocks] (size-1 batch / heads broadcast), n_qblocks = ceil(seqlen_q / block_q) and
    likewise for keys. Block sizes are multiples of 16; the native GPU kernels take 64, 128 and 256.
    Blocks left out are skipped (no loads, no arithmetic); the mask combines with causal and window.
    Made once, it is reused across calls (copied to the GPU on first use there)."""

    def __init__(self, blocks, seqlen_q, seqlen_k, block_q=128, block_k=128):
        b = torch.as_tensor(blocks).to(device="cpu", dtype=torch.bool)
        while b.dim() < 4:
            b = b.unsqueeze(0)
        if b.dim() != 4:
            raise ValueError("kfa: a block matrix has 2 to 4 dimensions")
        self.shape = tuple(b.shape)
        self.seqlen_q, self.seqlen_k, self.block_q, self.block_k = seqlen_q, seqlen_k, block_q, block_k
        self.blocks = b
        self._mask = _kfa.BlockMask(int(seqlen_q), int(seqlen_k), int(block_q), int(block_k), b.shape[0], b.shape[1],
                                    bytes(b.contiguous().to(torch.uint8).flatten().tolist()))


_PARAMS = {}  # the Params of plain option sets (no slopes, mask or seed), made once: calls reuse them


def _params(causal, softmax_scale, window, softcap, alibi_slopes, dropout_p, deterministic, backend, seed=0,
            block_mask=None):
    key = None
    if alibi_slopes is None and block_mask is None and seed == 0:
        key = (bool(causal), softmax_scale, int(window[0]), int(window[1]), float(softcap), float(dropout_p),
               bool(deterministic), backend)
        p = _PARAMS.get(key)
        if p is not None:
            return p
    p = _make_params(causal, softmax_scale, window, softcap, alibi_slopes, dropout_p, deterministic, backend, seed,
                     block_mask)
    if key is not None and len(_PARAMS) < 1024:
        _PARAMS[key] = p
    return p


def _make_params(causal, softmax_scale, window, softcap, alibi_slopes, dropout_p, deterministic, backend, seed,
                 block_mask):
    p = _kfa.Params()
    if block_mask is not None:
        if not isinstance(block_mask, BlockMask):
            raise TypeError("kfa: block_mask must be a kfa.BlockMask")
        p.block_mask = block_mask._mask
    p.causal = bool(causal)
    if softmax_scale is not None:
        p.softmax_scale = float(softmax_scale)
    p.window_left, p.window_right = (int(window[0]), int(window[1]))
    p.softcap = float(softcap)
    p.dropout_p = float(dropout_p)
    p.seed = seed
    if alibi_slopes is not None:
        s = alibi_slopes.detach().float().cpu().tolist() if torch.is_tensor(alibi_slopes) else list(alibi_slopes)
        p.alibi_slopes = [float(x) for x in s]
    p.deterministic = bool(deterministic)
    if backend not in _BACKENDS:
        raise ValueError(f"kfa: backend must be one of {sorted(_BACKENDS)}")
    p.backend = _BACKENDS[backend]
    return p


def _dropout_seed(dropout_p):
    """A Philox seed from PyTorch's default generator (torch.manual_seed makes runs repeatable)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64).item()) if dropout_p > 0 else 0


def _lse_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _to_kfa(t, layout):
    """The [batch, seqlen, heads, head_dim] view of t in `layout` ("bshd" or "bhsd")."""
    if layout == "bshd":
        return t
    if layout == "bhsd":
        return t.transpose(1, 2)
    raise ValueError('kfa: layout must be "bshd" or "bhsd"')


def _forward(q, k, v, layout, params):
    """(q, k, v as passed to kfa, out, lse) of the forward, without autograd."""
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    qk, kk, vk, ok = (_to_kfa(x, layout) for x in (q, k, v, out))
    b, sq, h, _ = qk.shape
    lse = torch.empty((b, h, sq), dtype=_lse_dtype(q), device=q.device)
    _kfa.forward(_context(q), _desc(qk), _desc(kk), _desc(vk), _desc(ok), _desc(lse), params)
    return q, k, v, out, lse


def _forward_varlen(q, k, v, cu_q, cu_k, max_q, max_k, params):
    """(q, k, v as passed to kfa, out, lse) of the packed forward, without autograd."""
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((q.shape[1], q.shape[0]), dtype=_lse_dtype(q), device=q.device)
    _kfa.forward_varlen(_context(q), _desc(q), _desc(k), _desc(v), _desc(out), _desc(lse), _desc(cu_q), _desc(cu_k),
                        int(max_q), int(max_k), params)
    return q, k, v, out, lse


def _needs_grad(*tensors):
    """Whether autograd records this call (else the forward runs without an autograd node)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout, params):
        q, k, v, out, lse = _forward(q, k, v, layout, params)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.params = layout, params
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dout = _unit_last(dout)
        dq, dk, dv = (torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))
        views = [_to_kfa(x, ctx.layout) for x in (dout, q, k, v, out)]
        grads = [_to_kfa(x, ctx.layout) for x in (dq, dk, dv)]
        # The workspace from PyTorch's (caching, stream-ordered) allocator: kfa then allocates nothing and
        # the call stays asynchronous on the stream.
        c = _context(q)
        nbytes = _kfa.backward_workspace_size(c, _desc(views[1]), _desc(views[2]), ctx.params)
        ws = torch.empty(max(nbytes, 8), dtype=torch.uint8, device=q.device)
        _kfa.backward_with_workspace(c, *(_desc(x) for x in views), _desc(lse), *(_desc(x) for x in grads), ctx.params,
                                     ws.data_ptr(), ws.numel())
        return dq, dk, dv, None, None


class _AttentionVarlen(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, params):
        q, k, v, out, lse = _forward_varlen(q, k, v, cu_q, cu_k, max_q, max_k, params)
        ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k)
        ctx.max_q, ctx.max_k, ctx.params = int(max_q), int(max_k), params
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
        dout = _unit_last(dout)
        dq, dk, dv = (torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))
        _kfa.backward_varlen(_context(q), _desc(dout), _desc(q), _desc(k), _desc(v), _desc(out), _desc(lse), _desc(dq),
                             _desc(dk), _desc(dv), _desc(cu_q), _desc(cu_k), ctx.max_q, ctx.max_k, ctx.params)
        return dq, dk, dv, None, None, None, None, None


def attention(q, k, v, causal=False, softmax_scale=None, window=(-1, -1), softcap=0.0, alibi_slopes=None,
              dropout_p=0.0, block_mask=None, return_lse=False, layout="bshd", deterministic=False, backend="auto"):
    """softmax(q k^T * softmax_scale) v for q [batch, seqlen_q, heads, head_dim] and k, v [batch, seqlen_k,
    heads_kv, head_dim] (layout "bshd"; "bhsd" takes [batch, heads, seqlen, head_dim]); heads a multiple of
    heads_kv (GQA, MQA). causal is aligned to the bottom right (the last query sees the last key);
    window = (left, right) keys around the diagonal, -1 unbounded; softcap: scores become
    softcap * tanh(score / softcap); alibi_slopes: one per head; dropout_p: on the attention weights,
    with a seed drawn from PyTorch's generator; block_mask: a kfa.BlockMask. Returns out (and the
    log-sum-exp [batch, heads, seqlen_q], float32) in q's layout. Differentiable in q, k, v."""
    params = _params(causal, softmax_scale, window, softcap, alibi_slopes, dropout_p, deterministic, backend,
                     _dropout_seed(dropout_p), block_mask)
    if _needs_grad(q, k, v):
        out, lse = _Attention.apply(q, k, v, layout, params)
    else:
        out, lse = _forward(q, k, v, layout, params)[3:]
    return (out, lse) if return_lse else out


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                     softmax_scale=None, window=(-1, -1), softcap=0.0, alibi_slopes=None, dropout_p=0.0,
                     block_mask=None, return_lse=False, deterministic=False, backend="auto"):
    """attention over packed sequences: q [total_q, heads, head_dim], k, v [total_k, heads_kv, head_dim],
    sequence b's rows cu_seqlens[b] .. cu_seqlens[b + 1] - 1 (int32 [batch + 1], on q's device). The
    log-sum-exp is [heads, total_q]; a block_mask's blocks count positions inside each sequence.
    Differentiable in q, k, v."""
    params = _params(causal, softmax_scale, window, softcap, alibi_slopes, dropout_p, deterministic, backend,
                     _dropout_seed(dropout_p), block_mask)
    if _needs_grad(q, k, v):
        out, lse = _AttentionVarlen.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, params)
    else:
        out, lse = _forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, params)[3:]
    return (out, lse) if return_lse else out


def attention_with_kvcache(q, k_cache, v_cache, cache_seqlens, k_new=None, v_new=None, block_table=None, causal=False,
                           softmax_scale=None, window=(-1, -1), softcap=0.0, alibi_slopes=None, num_splits=0,
                           check_indices=True, return_lse=False, backend="auto"):
    """Attention of q [batch, seqlen_q, heads, head_dim] over a KV cache, FlashAttention's
    flash_attn_with_kvcache: k_cache, v_cache [batch, capacity, heads_kv, head_dim], or paged
    [num_pages, page_size, heads_kv, head_dim] with block_table (int32 [batch, max_pages]);
    cache_seqlens int32 [batch]. k_new, v_new [batch, seqlen_new, heads_kv, head_dim] are written into the
    cache at each sequence's end first (advancing cache_seqlens is the caller's). Not differentiable."""
    if (k_new is None) != (v_new is None):
        raise ValueError("kfa: k_new and v_new go together")
    q = _unit_last(q)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    b, sq, h, _ = q.shape
    lse = torch.empty((b, h, sq), dtype=_lse_dtype(q), device=q.device)
    params = _params(causal, softmax_scale, window, softcap, alibi_slopes, 0.0, False, backend)
    # the tensors whose pointers cross stay referenced here until the call has returned
    k_new, v_new = (None if t is None else _unit_last(t) for t in (k_new, v_new))
    opt = lambda t: None if t is None else _desc(t)
    _kfa.forward_kvcache(_context(q), _desc(q), _desc(k_cache), _desc(v_cache), _desc(out), _desc(lse),
                         _desc(cache_seqlens), opt(k_new), opt(v_new), opt(block_table), int(num_splits),
                         bool(check_indices), params)
    return (out, lse) if return_lse else out
