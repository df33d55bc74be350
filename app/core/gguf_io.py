"""llama.cpp control vectors (GGUF): the format repeng writes and ``llama-cli --control-vector`` reads.

A file has architecture ``controlvector``, metadata ``controlvector.model_hint`` (the model
type, e.g. "llama") and ``controlvector.layer_count``, and one F32 tensor ``direction.N`` of
length n_embd per steered layer. llama.cpp adds ``direction.N`` to the OUTPUT of its block N
(counted from 0), which is the output of mlx-lm's ``model.layers[N]``, i.e. exactly our
``ConceptVectors.vectors[N]`` (checked against llama.cpp, see PLATFORM.md). llama.cpp's loader
rejects ``direction.0``, so layer 0 is never exported. It adds every direction in the file at
once (and sums several files), so export only the layers you mean to steer.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from app.errors import InputError
from app.library.atomic import atomic_write_bytes
from app.library.vectors import MAX_ABS_VALUE
from app.types import ConceptVectors

ARCH = "controlvector"
MAX_HINT_LEN = 64
_DIRECTION = re.compile(r"direction\.(\d+)")


class GGUFError(InputError):
    """A control-vector file cannot be written or read (says why and what to do)."""


@dataclass
class ExportResult:
    path: str
    layers: list[int]
    strength: Optional[float]
    relative: bool
    notes: list[str] = field(default_factory=list)


def _layers_to_write(cv: ConceptVectors, layers: Optional[Sequence[int]]) -> tuple[list[int], list[str]]:
    notes: list[str] = []
    L = cv.num_layers
    if layers is None:
        chosen = list(range(L))
    else:
        chosen = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < L:
                raise GGUFError(f"layer {layer!r} does not exist: these vectors have layers 0-{L - 1}")
            if int(layer) not in chosen:
                chosen.append(int(layer))
        chosen.sort()
        if not chosen:
            raise GGUFError("no layers chosen for export")
    if 0 in chosen:
        if chosen == [0]:
            raise GGUFError("layer 0 cannot be exported: llama.cpp rejects direction.0 (the output of "
                            "block 0 cannot be steered through a control vector); choose layers 1 or later")
        chosen.remove(0)
        notes.append("layer 0 skipped: llama.cpp rejects direction.0")
    return chosen, notes


def export_control_vector(
    cv: ConceptVectors,
    path: str | os.PathLike,
    layers: Optional[Sequence[int]] = None,
    strength: Optional[float] = 1.0,
    relative: bool = True,
    model_hint: str = "llama",
) -> ExportResult:
    """Write ``cv`` as a llama.cpp control vector; returns which layers were written and notes.

    ``strength`` is baked in: each ``direction.N`` is ``absolute_vector(cv, N, strength,
    relative)``, so ``--control-vector FILE`` (scale 1) steers like the lab does. With
    ``strength=None`` the raw vectors are written (scale them in llama.cpp instead).
    ``layers=None`` means every layer except 0. The file appears atomically.
    """
    import gguf

    from app.core.extraction import absolute_vector

    chosen, notes = _layers_to_write(cv, layers)
    if strength is not None:
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise GGUFError(f"strength must be a number, got {strength!r}") from None
        if not np.isfinite(strength):
            raise GGUFError(f"strength must be a finite number, got {strength!r}")
    arrays = {}
    for layer in chosen:
        vec = cv.vectors[layer] if strength is None else absolute_vector(cv, layer, strength, relative)
        vec = np.ascontiguousarray(vec, dtype=np.float32)
        if not np.all(np.isfinite(vec)):
            raise GGUFError(f"layer {layer} of the vectors contains NaN or infinite values; re-extract the concept")
        arrays[layer] = vec
    if strength is not None and len(chosen) > 3:
        notes.append(f"{len(chosen)} layers written with strength {strength:g} baked in: llama.cpp adds all of "
                     "them at once, which is much stronger than steering one layer; pick a narrow range")
    target = Path(path)
    if target.is_dir():
        raise GGUFError(f"{target} is a folder; give a file name such as happy.gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    # GGUFWriter needs a path: write into a private temp folder, then publish atomically.
    with tempfile.TemporaryDirectory(prefix="steering-lab-gguf-") as tmpdir:
        tmp = os.path.join(tmpdir, "out.gguf")
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", str(model_hint or "llama"))
        writer.add_uint32(f"{ARCH}.layer_count", len(chosen))
        for layer, vec in arrays.items():
            writer.add_tensor(f"direction.{layer}", vec)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as fh:
            data = fh.read()
    atomic_write_bytes(target, data)
    return ExportResult(path=str(target), layers=chosen, strength=strength, relative=relative, notes=notes)


def _field_value(reader: Any, key: str) -> Any:
    f = reader.get_field(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:
        return None


def _text_field(reader: Any, key: str, name: str) -> Optional[str]:
    """A metadata string, refused unless it is short, valid UTF-8 text (it ends up in the library)."""
    f = reader.get_field(key)
    if f is None:
        return None
    try:
        value = f.contents()
    except UnicodeDecodeError:
        raise GGUFError(f"{name}: metadata {key!r} is not valid UTF-8 text") from None
    except Exception:
        return None
    if not isinstance(value, str) or len(value) > MAX_HINT_LEN or not value.isprintable():
        raise GGUFError(f"{name}: metadata {key!r} must be a short line of text (at most {MAX_HINT_LEN} "
                        "printable characters)")
    return value


def _peek_architecture(path: Path) -> Optional[str]:
    """``general.architecture`` when it is the file's first key (writers put it first), else None.

    Lets a model GGUF (tens of thousands of vocabulary strings in its header) be refused
    without parsing its whole header; anything unusual falls back to the full reader.
    """
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(4 + 4 + 8 + 8 + 8)
            if len(head) < 32 or head[:4] != b"GGUF":
                return None
            (key_len,) = struct.unpack("<Q", head[24:32])
            if key_len != len("general.architecture"):
                return None
            key = fh.read(key_len)
            vtype, str_len = struct.unpack("<IQ", fh.read(12))
            if key != b"general.architecture" or vtype != 8 or str_len > 256:  # 8 = GGUF string
                return None
            return fh.read(str_len).decode("utf-8")
    except (OSError, struct.error, UnicodeDecodeError):
        return None


def _refuse_architecture(name: str, arch: Any) -> None:
    hint = " (this looks like a model's weights, not a control vector)" if arch else ""
    raise GGUFError(f"{name} has architecture {arch!r}, not {ARCH!r}{hint}; import a control vector "
                    "file such as one written by export-gguf or repeng")


def _open_control_vector(p: Path) -> Any:
    """A ``gguf.GGUFReader`` over ``p``, after the cheap refusals (no file, no GGUF magic, a model's weights)."""
    import gguf

    name = p.name
    if not p.is_file():
        raise GGUFError(f"{name} does not exist or is not a file")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise GGUFError(f"{name} is not a GGUF file (it does not start with 'GGUF'); expected a llama.cpp control vector")
    peeked = _peek_architecture(p)
    if peeked is not None and peeked != ARCH:
        _refuse_architecture(name, peeked)
    try:
        return gguf.GGUFReader(str(p))
    except Exception as exc:
        raise GGUFError(f"{name} is not a readable GGUF file ({exc}); it may be truncated or corrupt") from None


def _direction(name: str, t: Any, present: list[int], num_layers: int, hidden_size: int) -> tuple[int, np.ndarray]:
    """(layer, float32 values) of one ``direction.N`` tensor, refused unless it fits the model once."""
    m = _DIRECTION.fullmatch(t.name)
    if m is None:
        raise GGUFError(f"{name}: unexpected tensor {t.name!r}; a control vector holds only direction.N tensors")
    layer = int(m.group(1))
    if layer in present:  # "direction.12" twice, or aliased as "direction.012"
        raise GGUFError(f"{name}: layer {layer} appears more than once ({t.name}); a control vector holds "
                        "one direction per layer, so the file is ambiguous and was refused")
    if layer >= num_layers:
        raise GGUFError(f"{name}: {t.name} is for layer {layer}, but the loaded model has layers 0-{num_layers - 1}; "
                        "it was made for a deeper model")
    type_name = getattr(t.tensor_type, "name", str(t.tensor_type))
    if type_name not in ("F32", "F16"):
        raise GGUFError(f"{name}: {t.name} has type {type_name}; control vectors must be F32 (or F16)")
    data = np.asarray(t.data).astype(np.float32).reshape(-1)
    if data.shape[0] != hidden_size:
        raise GGUFError(f"{name}: {t.name} has {data.shape[0]} values, but the loaded model's hidden size is "
                        f"{hidden_size}; it was made for another model")
    if not np.all(np.isfinite(data)):
        raise GGUFError(f"{name}: {t.name} contains NaN or infinite values")
    biggest = float(np.max(np.abs(data))) if data.size else 0.0
    if biggest > MAX_ABS_VALUE:
        raise GGUFError(f"{name}: {t.name} holds a value of {biggest:.3g}, far beyond any residual stream "
                        f"(at most {MAX_ABS_VALUE:g}); steering with it cannot work, so it was refused")
    return layer, data


def import_control_vector(path: str | os.PathLike, num_layers: int, hidden_size: int) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """Read a control vector for a model with ``num_layers`` x ``hidden_size``.

    Returns ``(vectors [num_layers, hidden_size] float32 with zeros at absent layers,
    present_layers, metadata)``. Every problem raises ``GGUFError`` with a clear message.
    """
    p = Path(path)
    name = p.name
    reader = _open_control_vector(p)
    arch = _field_value(reader, "general.architecture")
    if arch != ARCH:
        _refuse_architecture(name, arch)
    vectors = np.zeros((num_layers, hidden_size), dtype=np.float32)
    present: list[int] = []
    for t in reader.tensors:
        layer, data = _direction(name, t, present, num_layers, hidden_size)
        vectors[layer] = data
        present.append(layer)
    if not present:
        raise GGUFError(f"{name} holds no direction.N tensors")
    present.sort()
    meta = {
        "architecture": arch,
        "model_hint": _text_field(reader, f"{ARCH}.model_hint", name),
        "layer_count": _field_value(reader, f"{ARCH}.layer_count"),
        "file": name,
        "layers": present,
    }
    return vectors, present, meta
