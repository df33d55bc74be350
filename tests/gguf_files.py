"""Write small GGUF files for tests (control vectors, wrong architectures, aliased names)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def write_gguf(path, tensors: dict[str, np.ndarray], arch: str = "controlvector", hint: str = "llama",
               layer_count: Optional[int] = None, metadata: bool = True) -> Path:
    """``tensors`` as a GGUF file of ``arch``; with ``metadata``, ``<arch>.model_hint`` and
    ``<arch>.layer_count`` (default: the number of tensors) as llama.cpp's control vectors carry."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if metadata:
        w.add_string(f"{arch}.model_hint", hint)
        w.add_uint32(f"{arch}.layer_count", len(tensors) if layer_count is None else layer_count)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
