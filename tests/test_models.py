"""End to end: tiny mlx-lm models (random weights), quantized, patched.

Qwen3 (tied embeddings: the output projection is QuantizedEmbedding.as_linear)
and Llama (a separate lm_head) are built from config dicts, quantized with
``nn.quantize``, and run over a prompt (prefill) and several batched decode
steps with a KV cache: first unpatched (the reference), then patched
(quantized layers), then patched with ``attention=True`` (flash_attention
too), then unpatched again. The same tokens are fed to every run (the
reference's greedy choices), and the logits of every step are compared
(tolerances.MODEL_LOGITS).

Needs mlx-lm (``pip install ".[models]"``); skipped without it.
"""

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_kernels as mk
from tolerances import MODEL_LOGITS, rel_err, to_np64

mlx_lm = pytest.importorskip("mlx_lm")
from mlx_lm.models import cache as lm_cache  # noqa: E402
from mlx_lm.models import llama, qwen3  # noqa: E402

COMMON = dict(
    hidden_size=256, num_hidden_layers=2, intermediate_size=512, num_attention_heads=4,
    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, vocab_size=512,
    max_position_embeddings=512, rope_theta=10000.0,
)
ARCHS = {
    "qwen3": (qwen3, dict(COMMON, model_type="qwen3", tie_word_embeddings=True)),
    "llama": (llama, dict(COMMON, model_type="llama", tie_word_embeddings=False)),
}
# (architecture, dtype, group size, bits): both bit widths, all group sizes,
# float32 and float16. (No bfloat16 model: MLX's own CPU bfloat16 path is
# ~5e-2 away from float32 on these models, which would leave the comparison
# nothing to detect; the op-level suite covers bfloat16.)
CASES = {
    "qwen3-f32-g64-b4": ("qwen3", mx.float32, 64, 4),
    "llama-f32-g128-b8": ("llama", mx.float32, 128, 8),
    "qwen3-f16-g32-b4": ("qwen3", mx.float16, 32, 4),
}
PROMPT_LEN, DECODE_STEPS, BATCH = 7, 4, 3


def build(arch, dtype, group_size, bits, seed=0):
    module, config = ARCHS[arch]
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    model.set_dtype(dtype)
    mnn.quantize(model, group_size=group_size, bits=bits)
    mx.eval(model.parameters())
    return model


def expected_layers(arch):
    # 7 linears per block, the embedding (a QuantizedEmbedding: swapped too,
    # whether or not the model uses its as_linear) and, untied, lm_head.
    tied = ARCHS[arch][1]["tie_word_embeddings"]
    return 7 * COMMON["num_hidden_layers"] + 1 + (0 if tied else 1)


def run(model, tokens, padding=None):
    """Prefill on tokens[:, :PROMPT_LEN], then one decode step per later token.

    padding: left padding per row (BatchKVCache: array masks), or None
    (KVCache: "causal" prefill mask, no mask in decode).
    """
    if padding is None:
        cache = lm_cache.make_prompt_cache(model)
    else:
        cache = [lm_cache.BatchKVCache(padding) for _ in model.layers]
    logits = [model(tokens[:, :PROMPT_LEN], cache=cache)]
    mx.eval(logits[-1])
    for t in range(PROMPT_LEN, tokens.shape[1]):
        logits.append(model(tokens[:, t : t + 1], cache=cache))
        mx.eval(logits[-1])
    return logits


def greedy_tokens(model, prompt, padding=None):
    tokens = prompt
    cache = (lm_cache.make_prompt_cache(model) if padding is None
             else [lm_cache.BatchKVCache(padding) for _ in model.layers])
    logits = model(prompt, cache=cache)
    for _ in range(DECODE_STEPS):
        nxt = mx.argmax(logits[:, -1:, :], axis=-1)
        tokens = mx.concatenate([tokens, nxt], axis=1)
        logits = model(nxt, cache=cache)
    mx.eval(tokens)
    return tokens


def real_positions(logits, padding):
    """The logits of the real tokens, [tokens, vocab]: with left padding, the
    prefill's first padding[b] positions of row b are padding queries, which
    see no key. Their logits are never used, and they carry the value of a
    fully masked attention row: MLX's CUDA op returns 0 there in half
    precision (cuDNN; H200, session 17, benchmarks/diag_masked_rows_gpu.py),
    its CPU op and float32 paths the mean of v, as ours does in every dtype
    (checked at the op level: test_flash_attention.py::test_fully_masked_bool_rows_*).
    The real positions never see the padding keys."""
    a = to_np64(logits)
    if padding is None or a.shape[1] == 1:
        return a.reshape(-1, a.shape[-1])
    return np.concatenate([a[b, pad:] for b, pad in enumerate(padding)])


def compare(got, ref, dtype, what, padding=None):
    assert len(got) == len(ref)
    for step, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape and g.dtype == r.dtype, f"{what} step {step}"
        err = rel_err(real_positions(g, padding), real_positions(r, padding))
        assert err <= MODEL_LOGITS[dtype], (
            f"{what}: step {step} ({'prefill' if step == 0 else 'decode'}) logits differ "
            f"from the unpatched model by {err:.3g} > {MODEL_LOGITS[dtype]:.3g}"
        )


@pytest.mark.parametrize("padded", [False, True], ids=["kvcache", "batch-left-padded"])
@pytest.mark.parametrize("case", list(CASES))
def test_patched_model_matches_unpatched(case, padded, device):
    arch, dtype, group_size, bits = CASES[case]
    model = build(arch, dtype, group_size, bits)
    prompt = mx.random.randint(0, COMMON["vocab_size"], (BATCH, PROMPT_LEN))
    padding = [0, 2, 5][:BATCH] if padded else None
    with mx.stream(device):
        tokens = greedy_tokens(model, prompt, padding)
        ref = run(model, tokens, padding)
        classes = {p: type(m) for p, m in model.named_modules()}
        params = [(k, v.shape, v.dtype) for k, v in tree_flatten(model.parameters())]

        report = mk.patch(model)
        assert report.num_swapped == expected_layers(arch), str(report)
        assert report.skipped == [] and report.attention == []
        # the same parameter tree, and MLX checkpoints load into the patched model
        assert [(k, v.shape, v.dtype) for k, v in tree_flatten(model.parameters())] == params
        model.load_weights(list(tree_flatten(model.parameters())))
        compare(run(model, tokens, padding), ref, dtype, f"{arch} patched", padding)

        report = mk.patch(model, attention=True)
        assert report.num_swapped == 0 and len(report.already) == expected_layers(arch)
        assert sorted(report.attention) == [
            f"model.layers.{i}.self_attn" for i in range(COMMON["num_hidden_layers"])
        ], str(report)
        assert report.attention_skipped == []
        compare(run(model, tokens, padding), ref, dtype, f"{arch} patched, attention", padding)

        restored = mk.unpatch(model)
        assert restored == expected_layers(arch) + COMMON["num_hidden_layers"]
        assert {p: type(m) for p, m in model.named_modules()} == classes
        assert getattr(ARCHS[arch][0], "scaled_dot_product_attention") is (
            mlx_lm.models.base.scaled_dot_product_attention)
        again = run(model, tokens, padding)
        for g, r in zip(again, ref):
            assert mx.array_equal(g, r), "unpatched model differs from before patching"


def test_attention_patch_is_per_model(device):
    """Patching one model's attention leaves another model of the same
    architecture on MLX (the module-level hook dispatches per model)."""
    a = build("qwen3", mx.float32, 64, 4, seed=1)
    b = build("qwen3", mx.float32, 64, 4, seed=1)
    x = mx.random.randint(0, COMMON["vocab_size"], (2, PROMPT_LEN))
    calls = []
    orig = mk.flash_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return orig(*args, **kwargs)

    with mx.stream(device):
        mk.patch(a, attention=True)
        try:
            mk.flash_attention = counting
            mx.eval(b(x))
            assert calls == [], "an unpatched model ran flash_attention"
            mx.eval(a(x))
            assert len(calls) == COMMON["num_hidden_layers"]
        finally:
            mk.flash_attention = orig
            mk.unpatch(a)
    assert qwen3.scaled_dot_product_attention is mlx_lm.models.base.scaled_dot_product_attention


def test_report_skips_and_reasons():
    # Quantize the MLP down projections with bits MLX has and we do not.
    _, config = ARCHS["llama"]
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mnn.quantize(model, class_predicate=lambda p, m: (
        hasattr(m, "to_quantized")
        and ({"group_size": 64, "bits": 3} if p.endswith("down_proj")
             else {"group_size": 64, "bits": 4})))
    report = mk.patch(model)
    try:
        assert report.num_swapped == expected_layers("llama") - 2
        assert sorted(p for p, _ in report.skipped) == [
            f"model.layers.{i}.mlp.down_proj" for i in range(2)]
        assert {r for _, r in report.skipped} == {"bits=3 is not supported (only 4 and 8)"}
        assert "bits=3 is not supported" in str(report)
    finally:
        mk.unpatch(model)


def test_unsupported_attention_is_reported_or_raises(device):
    # head_dim 32: flash_attention has no kernel, the modules are left on MLX.
    _, config = ARCHS["qwen3"]
    model = qwen3.Model(qwen3.ModelArgs.from_dict(dict(config, head_dim=32)))
    mnn.quantize(model, group_size=64, bits=4)
    report = mk.patch(model, attention=True)
    try:
        assert report.attention == []
        assert len(report.attention_skipped) == COMMON["num_hidden_layers"]
        assert all("head_dim=32" in why for _, why in report.attention_skipped)
    finally:
        mk.unpatch(model)
    # A quantized KV cache at run time: an error, not a silent fallback.
    model = build("qwen3", mx.float32, 64, 4)
    mk.patch(model, attention=True)
    try:
        cache = [lm_cache.QuantizedKVCache(group_size=64, bits=8) for _ in model.layers]
        with mx.stream(device), pytest.raises(NotImplementedError, match="quantized"):
            model(mx.array([[1, 2, 3]]), cache=cache)
    finally:
        mk.unpatch(model)


def test_moe_and_sinks_are_reported_not_patched(device):
    """gpt-oss: mixture-of-experts layers (QuantizedSwitchLinear, gather_qmm)
    and attention with sinks are left on MLX, with the reasons; the rest is
    patched and the logits still match."""
    from mlx_lm.models import gpt_oss

    args = gpt_oss.ModelArgs(
        num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=512,
        hidden_size=128, intermediate_size=128, head_dim=64, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=16,
    )
    model = gpt_oss.Model(args)
    mnn.quantize(model, group_size=64, bits=4)
    x = mx.random.randint(0, args.vocab_size, (2, 9))
    with mx.stream(device):
        ref = model(x)
        report = mk.patch(model, attention=True)
        try:
            # per layer q, k, v, o and the router; embed_tokens and lm_head
            assert report.num_swapped == 5 * 2 + 2, str(report)
            assert len(report.skipped) == 3 * 2
            assert all("QuantizedSwitchLinear" in why for _, why in report.skipped)
            assert report.attention == []
            assert [why for _, why in report.attention_skipped] == [
                "uses attention sinks (flash_attention has none)"] * 2
            err = rel_err(to_np64(model(x)), to_np64(ref))
            assert err <= MODEL_LOGITS[mx.float32], err
        finally:
            mk.unpatch(model)
