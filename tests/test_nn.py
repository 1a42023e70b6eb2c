"""mlx_kernels.nn.QuantizedLinear / QuantizedEmbedding against the mlx.nn layers.

Same constructor, parameters, attributes, loading and output (within the
quantized_matmul tolerances); clear errors for what our kernels lack.
"""

import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlx_kernels as mk
from qmm_cases import mlx_layer_reference
from tolerances import MLX_FLOOR, rel_err, to_np64


def flat(tree):
    return {k: (v.shape, v.dtype) for k, v in tree_flatten(tree)}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bits,group_size", [(4, 64), (4, 32), (8, 128), (8, 64)])
def test_constructor_matches_mlx(bits, group_size, bias):
    ours = mk.nn.QuantizedLinear(256, 96, bias=bias, group_size=group_size, bits=bits)
    theirs = mnn.QuantizedLinear(256, 96, bias=bias, group_size=group_size, bits=bits)
    assert isinstance(ours, mnn.QuantizedLinear)
    assert flat(ours.parameters()) == flat(theirs.parameters())
    assert flat(ours.trainable_parameters()) == flat(theirs.trainable_parameters()) == {}
    for attr in ("group_size", "bits", "mode"):
        assert getattr(ours, attr) == getattr(theirs, attr)
    assert ("bias" in ours) == bias
    assert repr(ours) == repr(theirs)


def test_defaults_match_mlx():
    ours, theirs = mk.nn.QuantizedLinear(128, 64), mnn.QuantizedLinear(128, 64)
    assert (ours.group_size, ours.bits, ours.mode) == (theirs.group_size, theirs.bits, theirs.mode)
    assert flat(ours.parameters()) == flat(theirs.parameters())


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("bits", [4, 8])
def test_from_linear_forward_matches_mlx(bits, dtype, device):
    lin = mnn.Linear(256, 192, bias=True)
    lin.set_dtype(dtype)
    ours = mk.nn.QuantizedLinear.from_linear(lin, group_size=64, bits=bits)
    theirs = mnn.QuantizedLinear.from_linear(lin, group_size=64, bits=bits)
    assert type(ours) is mk.nn.QuantizedLinear
    assert flat(ours.parameters()) == flat(theirs.parameters())
    for (k, a), (_, b) in zip(tree_flatten(ours.parameters()), tree_flatten(theirs.parameters())):
        assert mx.array_equal(a, b), k
    for shape in [(1, 256), (3, 256), (2, 5, 256), (256,)]:
        x = mx.random.normal(shape).astype(dtype)
        with mx.stream(device):
            y = ours(x)
        ref = mlx_layer_reference(theirs, x, device)
        assert y.shape == ref.shape and y.dtype == ref.dtype
        assert rel_err(to_np64(y), to_np64(ref)) <= 2 * MLX_FLOOR[dtype], shape


def test_load_weights_and_update_roundtrip(device):
    src = mnn.QuantizedLinear(128, 64, bias=True, group_size=32, bits=8)
    src.bias = mx.random.normal((64,))
    ours = mk.nn.QuantizedLinear(128, 64, bias=True, group_size=32, bits=8)
    ours.load_weights(list(tree_flatten(src.parameters())))  # strict: names and shapes
    for (k, a), (_, b) in zip(tree_flatten(ours.parameters()), tree_flatten(src.parameters())):
        assert mx.array_equal(a, b), k
    x = mx.random.normal((4, 128))
    with mx.stream(device):
        assert rel_err(to_np64(ours(x)), to_np64(src(x))) <= MLX_FLOOR[mx.float32]
    # ... and back into an MLX layer
    back = mnn.QuantizedLinear(128, 64, bias=True, group_size=32, bits=8)
    back.update(ours.parameters())
    assert all(mx.array_equal(a, b) for (_, a), (_, b)
               in zip(tree_flatten(back.parameters()), tree_flatten(src.parameters())))
    # a mismatching checkpoint is refused as by MLX
    with pytest.raises(ValueError):
        ours.load_weights([("weight", mx.zeros((64, 8), mx.uint32))])


def test_from_quantized_shares_arrays():
    q = mnn.QuantizedLinear(128, 64, bias=False, group_size=128, bits=4)
    ours = mk.nn.QuantizedLinear.from_quantized(q)
    assert ours["weight"] is q["weight"] and ours["scales"] is q["scales"]
    assert flat(ours.parameters()) == flat(q.parameters())
    assert flat(ours.trainable_parameters()) == {}


def test_embedding_as_linear_matches_mlx(device):
    emb = mnn.Embedding(320, 128)
    ours = mk.nn.QuantizedEmbedding.from_embedding(emb, group_size=64, bits=4)
    theirs = mnn.QuantizedEmbedding.from_embedding(emb, group_size=64, bits=4)
    assert flat(ours.parameters()) == flat(theirs.parameters())
    ids = mx.array([[1, 5, 319]])
    assert mx.array_equal(ours(ids), theirs(ids))
    h = mx.random.normal((2, 3, 128))
    with mx.stream(device):
        assert rel_err(to_np64(ours.as_linear(h)), to_np64(theirs.as_linear(h))) <= MLX_FLOOR[mx.float32]


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=3), "bits=3"),
    (dict(bits=2, group_size=64), "bits=2"),
    (dict(group_size=16), "group_size=16"),
    (dict(mode="mxfp4"), "mode 'mxfp4'"),
    (dict(mode="nvfp4"), "mode 'nvfp4'"),
])
def test_unsupported_configurations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mk.nn.QuantizedLinear(128, 64, **kwargs)
    with pytest.raises(ValueError, match=match):
        mk.nn.QuantizedLinear.from_linear(mnn.Linear(128, 64), **kwargs)
    with pytest.raises(ValueError, match=match):
        mk.nn.QuantizedEmbedding(64, 128, **kwargs)


def test_from_quantized_refuses_unsupported():
    with pytest.raises(ValueError, match="bits=3"):
        mk.nn.QuantizedLinear.from_quantized(mnn.QuantizedLinear(128, 64, bits=3))
    with pytest.raises(TypeError):
        mk.nn.QuantizedLinear.from_quantized(mnn.Linear(128, 64))


def test_patch_plain_mlx_model_and_report(device):
    model = mnn.Sequential(
        mnn.Linear(128, 256), mnn.ReLU(), mnn.Linear(256, 128), mnn.Linear(128, 64),
        mnn.Linear(64, 64),
    )
    mnn.quantize(model, group_size=64, bits=4, class_predicate=lambda p, m: (
        isinstance(m, mnn.Linear)
        and ({"group_size": 64, "bits": 3} if p == "layers.3"
             else {"group_size": 32, "bits": 4, "mode": "mxfp4"} if p == "layers.4" else True)))
    x = mx.random.normal((3, 128))
    with mx.stream(device):
        ref = model(x)
        before = [type(m) for _, m in model.named_modules()]
        ids = [id(m) for _, m in model.named_modules()]
        report = mk.patch(model)
        assert report.num_swapped == 2 and sorted(report.swapped) == ["layers.0", "layers.2"]
        assert dict(report.skipped) == {
            "layers.3": "bits=3 is not supported (only 4 and 8)",
            "layers.4": "mode 'mxfp4' is not supported (only 'affine')",
        }
        text = str(report)
        assert "2 quantized layer(s) swapped, 2 skipped" in text and "bits=3" in text
        assert type(model.layers[0]) is mk.nn.QuantizedLinear
        assert [id(m) for _, m in model.named_modules()] == ids  # in place, same objects
        out = model(x)
        assert rel_err(to_np64(out), to_np64(ref)) <= MLX_FLOOR[mx.float32]
        again = mk.patch(model)
        assert again.num_swapped == 0 and len(again.already) == 2
        assert mk.unpatch(model) == 2
        assert [type(m) for _, m in model.named_modules()] == before
        assert mx.array_equal(model(x), ref)
        assert mk.unpatch(model) == 0


def test_patch_rejects_non_module():
    with pytest.raises(TypeError, match="mlx.nn.Module"):
        mk.patch({"weight": mx.zeros((2, 2))})
