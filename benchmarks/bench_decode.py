"""Decode tokens per second of mlx-lm models, patched against unpatched, one run.

Models (random weights built from config dicts, nothing downloaded), 4-bit,
group size 64 (``nn.quantize``):

* ``qwen3-0.6b``: the Qwen3-0.6B architecture (28 layers, hidden 1024, 16
  query / 8 KV heads of 128, MLP 3072, vocab 151936, tied embeddings);
* ``llama3-8b``: the Llama-3-8B widths (hidden 4096, 32 query / 8 KV heads of
  128, MLP 14336, vocab 128256, untied lm_head). On a CPU its depth is cut to
  ``--llama-layers`` (default 2 of 32) so the unpatched baseline finishes;
  the output and the JSON say so. Per-layer numbers are unchanged by this;
  the lm_head (525 M weights) weighs more in the total than in the real model.

For each batch size B in {1, 2, 4, 8, 16}: B fixed synthetic prompts of
``--prompt`` tokens are prefilled once into a KV cache (mlx-lm's KVCache),
then each variant decodes greedily from its own copy of that cache:

* ``mlx``: the model as mlx-lm builds it (``mx.quantized_matmul``, MLX SDPA);
* ``ours``: ``mlx_kernels.patch(model)`` (quantized layers on our kernel);
* ``ours+attn``: ``mlx_kernels.patch(model, attention=True)`` (also
  ``flash_attention``).

Each decode run does ``--warmup`` untimed steps, then ``--steps`` timed
steps; tokens/s = B * steps / (time of the timed steps). Every step is
evaluated before the next (a plain synchronous loop; mlx-lm's generate
overlaps steps with ``mx.async_eval``). Prefill is not timed.

Dtype: float32 on the CPU (weights' scales/biases, activations, KV cache): MLX's
float16 CPU quantized matmul takes ~0.5 s per 4096x4096 call, which makes the
unpatched float16 baseline unmeasurable. float16 on a GPU.

    python benchmarks/bench_decode.py [--quick] [--models qwen3-0.6b llama3-8b]

Prints a table and writes benchmarks/results/decode_<device>.json and .png.
Needs mlx-lm (``pip install ".[models]"``).
"""

from __future__ import annotations

import argparse
import os
import time

import mlx.core as mx
import mlx.nn as nn

import mlx_kernels as mk
from _common import RESULTS, machine_info, print_table, progress, write_json

MODELS = {
    "qwen3-0.6b": dict(
        module="qwen3", model_type="qwen3", hidden_size=1024, num_hidden_layers=28,
        intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-6, vocab_size=151936, max_position_embeddings=40960,
        rope_theta=1000000.0, tie_word_embeddings=True,
    ),
    "llama3-8b": dict(
        module="llama", model_type="llama", hidden_size=4096, num_hidden_layers=32,
        intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-5, vocab_size=128256, max_position_embeddings=8192,
        rope_theta=500000.0, tie_word_embeddings=False,
    ),
}
BATCHES = [1, 2, 4, 8, 16]
VARIANTS = ["mlx", "ours", "ours+attn"]


def build(name, layers, dtype, group_size, bits):
    import importlib

    cfg = dict(MODELS[name])
    module = importlib.import_module(f"mlx_lm.models.{cfg.pop('module')}")
    if layers is not None:
        cfg["num_hidden_layers"] = layers
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict(cfg))
    model.set_dtype(dtype)
    nn.quantize(model, group_size=group_size, bits=bits)
    mx.eval(model.parameters())
    return model, cfg


def copy_cache(cache):
    from mlx_lm.models.cache import KVCache

    out = []
    for c in cache:
        k, v, off = c.state
        n = KVCache()
        # New array objects: KVCache updates its buffers in place.
        n.state = (mx.array(k), mx.array(v), off)
        out.append(n)
    mx.eval([c.state[:2] for c in out])
    return out


def decode(model, cache, last_logits, warmup, steps):
    tok = mx.argmax(last_logits[:, -1:, :], axis=-1)
    for _ in range(warmup):
        tok = mx.argmax(model(tok, cache=cache)[:, -1:, :], axis=-1)
        mx.eval(tok)
    t0 = time.perf_counter()
    for _ in range(steps):
        tok = mx.argmax(model(tok, cache=cache)[:, -1:, :], axis=-1)
        mx.eval(tok)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens per sequence")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed decode steps")
    ap.add_argument("--llama-layers", type=int, default=None,
                    help="depth of llama3-8b (default: 2 on a CPU, 32 on a GPU)")
    ap.add_argument("--quick", action="store_true", help="batches 1, 4, 16; 2 timed steps")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.steps = [1, 4, 16], 2

    from mlx_lm.models.cache import make_prompt_cache

    dev_name = "gpu" if mx.default_device().type == mx.gpu else "cpu"
    dtype = mx.float32 if dev_name == "cpu" else mx.float16
    dname = "float32" if dtype == mx.float32 else "float16"
    group_size, bits = 64, 4
    llama_layers = args.llama_layers or (2 if dev_name == "cpu" else 32)

    records, rows, notes = [], [], []
    for name in args.models:
        layers = llama_layers if name == "llama3-8b" else None
        model, cfg = build(name, layers, dtype, group_size, bits)
        full = MODELS[name]["num_hidden_layers"]
        depth = cfg["num_hidden_layers"]
        note = (f"{name}: {depth} of {full} layers (depth cut to fit the CPU baseline; "
                "real widths)" if depth != full else f"{name}: all {full} layers")
        notes.append(note)
        print(note, flush=True)
        wbytes = sum(v.nbytes for k, v in _flat(model.parameters()))
        cases = [(B, v) for B in args.batches for v in VARIANTS]
        prefilled = {}
        for B, variant in progress(cases, desc=name):
            if B not in prefilled:
                prefilled.clear()
                mk.patch(model)  # prefill fast; each variant decodes from a copy
                mx.random.seed(B)
                prompts = mx.random.randint(0, cfg["vocab_size"], (B, args.prompt))
                cache = make_prompt_cache(model)
                logits = model(prompts, cache=cache)
                mx.eval(logits)
                mk.unpatch(model)
                prefilled[B] = (cache, logits)
            cache, logits = prefilled[B]
            if variant == "ours":
                mk.patch(model)
            elif variant == "ours+attn":
                report = mk.patch(model, attention=True)
                assert report.attention, str(report)
            try:
                secs = decode(model, copy_cache(cache), logits, args.warmup, args.steps)
            finally:
                mk.unpatch(model)
            rec = {"model": name, "layers": depth, "layers_full_model": full, "batch": B,
                   "variant": variant, "decode_steps": args.steps, "seconds": secs,
                   "tokens_per_s": B * args.steps / secs, "ms_per_step": secs / args.steps * 1e3}
            records.append(rec)
        for B in args.batches:
            r = {v: next(x for x in records if x["model"] == name and x["batch"] == B
                         and x["variant"] == v) for v in VARIANTS}
            rows.append([name + ("" if depth == full else f" ({depth}/{full} layers)"), B,
                         f"{r['mlx']['tokens_per_s']:.2f}", f"{r['ours']['tokens_per_s']:.1f}",
                         f"{r['ours+attn']['tokens_per_s']:.1f}",
                         f"{r['ours']['tokens_per_s'] / r['mlx']['tokens_per_s']:.0f}x",
                         f"{r['ours']['ms_per_step']:.1f}"])
        print(f"{name}: {wbytes / 1e6:.0f} MB of parameters", flush=True)
        del model, prefilled

    print(f"\ndecode tokens/s, {dev_name}, {dname}, {bits}-bit group {group_size}, "
          f"prompt {args.prompt}, {args.steps} timed steps after {args.warmup} warm-up")
    print_table(["model", "batch", "MLX tok/s", "ours tok/s", "ours+attn tok/s",
                 "ours/MLX", "ours ms/step"], rows)
    for n in notes:
        print("note: " + n)
    print("load average (1/5/15 min): %.1f %.1f %.1f (%d cores)" % (*os.getloadavg(), os.cpu_count()))
    name = f"decode_{dev_name}"
    path = write_json(f"{name}.json", {
        "benchmark": "mlx-lm decode tokens/s, patched vs unpatched",
        "method": (f"random-weight mlx-lm models, {bits}-bit group {group_size} (nn.quantize), "
                   f"{dname}; B prompts of {args.prompt} random tokens prefilled once (not timed) "
                   f"into a KVCache; each variant greedy-decodes from a copy: {args.warmup} "
                   f"warm-up step(s), then {args.steps} timed steps, mx.eval after every step; "
                   "tokens/s = B * steps / seconds"
                   + ("; float32 on the CPU because MLX's float16 CPU quantized matmul "
                      "takes ~0.5 s per 4096x4096 call" if dev_name == "cpu" else "")),
        "notes": notes,
        "machine": machine_info(dev_name),
        # other processes share this machine: the load explains noisy runs
        "load_average_1_5_15_min_at_end": list(os.getloadavg()),
        "dtype": dname,
        "results": records,
    })
    print(f"\nwrote {path}")
    plot(records, args.models, dev_name, dname, RESULTS / f"{name}.png")


def _flat(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def plot(records, models, dev_name, dname, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    styles = {"mlx": "--x", "ours": "-o", "ours+attn": "-s"}
    labels = {"mlx": "MLX (unpatched)", "ours": "mlx_kernels.patch",
              "ours+attn": "patch(attention=True)"}
    for ax, name in zip(axes[0], models):
        rs = [r for r in records if r["model"] == name]
        for v in VARIANTS:
            pts = [(r["batch"], r["tokens_per_s"]) for r in rs if r["variant"] == v]
            ax.plot(*zip(*pts), styles[v], label=labels[v])
        depth, full = rs[0]["layers"], rs[0]["layers_full_model"]
        ax.set_title(name + ("" if depth == full else f" ({depth} of {full} layers)"), fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        bs = sorted({r["batch"] for r in rs})
        ax.set_xticks(bs)
        ax.set_xticklabels([str(b) for b in bs])
        ax.set_xlabel("batch (sequences decoded together)")
        ax.set_ylabel("decode tokens / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"4-bit decode, {dname}, {dev_name} (random weights)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
