"""Loading models from disk: tiny MLX folders, bad inputs with one clear error, HF cache links."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from app.core import registry
from app.core.convert import ConversionError, convert_gguf_to_mlx
from app.core.models import LoadedModel, from_memory, load_model
from app.errors import ModelLoadError
from app.service.model_service import ModelService
from tiny_models import build, prompt_tokens, tiny_tokenizer, write_model_folder

DISK_FAMILIES = ("llama", "qwen2", "gemma3_text")


def _logits(model, tokens) -> mx.array:
    out = model(mx.array([tokens]))
    mx.eval(out)
    return out


def _assert_float32_unquantized(model) -> None:
    params = tree_flatten(model.parameters())
    assert params
    for name, p in params:
        assert p.dtype == mx.float32, f"{name} is {p.dtype}"
        assert not name.endswith((".scales", ".biases")), f"{name}: still quantized"
    for _, m in model.named_modules():
        assert not isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)), type(m).__name__


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


@pytest.fixture
def tiny_folder(tmp_path):
    model, config = build("llama")
    return write_model_folder(model, config, tmp_path / "tiny-llama"), model


# ---- good folders ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", DISK_FAMILIES)
def test_load_model_from_disk_matches_in_memory(tmp_path, family):
    model, config = build(family)
    folder = write_model_folder(model, config, tmp_path / family)
    loaded = load_model(f"tiny-{family}", folder)
    assert isinstance(loaded, LoadedModel)
    assert loaded.model_id == f"tiny-{family}" and loaded.path == str(folder)
    _assert_float32_unquantized(loaded.model)
    assert loaded.dtype == mx.float32
    assert loaded.num_layers == config["num_hidden_layers"] and loaded.hidden_size == 64
    info = loaded.info()
    assert info.family == family and info.dtype == "float32" and info.has_chat_template
    toks = prompt_tokens(9)
    assert mx.array_equal(_logits(loaded.model, toks), _logits(model, toks)), family
    # The tokenizer came along. (transformers 5 picks a family-specific tokenizer class for
    # qwen2/gemma from config.json, which re-reads this word-level vocab; so round-trip llama.)
    assert loaded.tokenizer.eos_token_id == 1
    if family == "llama":
        text = "what is the capital of France ?"
        assert loaded.tokenizer.decode(loaded.tokenizer.encode(text)) == text


def test_quantized_folder_is_dequantized_to_float32(tmp_path):
    model, config = build("llama")
    folder = write_model_folder(model, config, tmp_path / "q4", quantization={"group_size": 32, "bits": 4})
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())  # quantized in place
    assert "quantization" in json.loads((folder / "config.json").read_text())
    loaded = load_model("tiny-q4", folder)
    _assert_float32_unquantized(loaded.model)
    toks = prompt_tokens(9)
    want = np.array(_logits(model, toks))
    got = np.array(_logits(loaded.model, toks))
    np.testing.assert_allclose(got, want, atol=1e-3 * max(1.0, float(np.abs(want).max())))
    # Same greedy choices as the quantized original.
    assert np.array_equal(got.argmax(-1), want.argmax(-1))


def test_resolve_a_local_path(tiny_folder):
    folder, _ = tiny_folder
    entry = registry.resolve(str(folder))
    assert entry.source == "local"
    assert entry.path == str(folder.resolve())
    assert entry.model_type == "llama"
    assert entry.size_mb >= 0.0
    assert registry.is_loadable_folder(folder)


# ---- bad inputs: one clear error each -------------------------------------------------------
def test_unknown_model_id_is_one_clear_error():
    with pytest.raises(FileNotFoundError) as err:
        registry.resolve("no-such-model")
    assert "no-such-model" in _one_line(err.value)
    svc = ModelService()
    with pytest.raises(ModelLoadError) as err:
        svc.load("no-such-model")
    msg = _one_line(err.value)
    assert "no-such-model" in msg and "Available:" in msg


def test_unknown_hub_id_is_one_clear_error():
    with pytest.raises(ModelLoadError) as err:
        load_model("nobody-xyz/no-such-model-42", "nobody-xyz/no-such-model-42")
    assert "nobody-xyz/no-such-model-42" in _one_line(err.value)


def test_missing_folder_is_one_clear_error(tmp_path):
    missing = tmp_path / "not-there"
    with pytest.raises(FileNotFoundError) as err:
        registry.resolve(str(missing))
    assert str(missing) in _one_line(err.value)
    with pytest.raises(ModelLoadError) as err:
        load_model("missing", missing)
    msg = _one_line(err.value)
    assert str(missing) in msg and "Repo id" not in msg  # a path, not a hub lookup


def test_folder_without_weights_or_config(tmp_path, tiny_folder):
    src, _ = tiny_folder
    no_weights = tmp_path / "no-weights"
    shutil.copytree(src, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model("no-weights", no_weights)
    msg = _one_line(err.value)
    assert str(no_weights) in msg and "safetensors" in msg

    no_config = tmp_path / "no-config"
    shutil.copytree(src, no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model("no-config", no_config)
    assert str(no_config) in _one_line(err.value) and "config.json" in str(err.value)


def test_corrupt_safetensors_is_one_clear_error(tmp_path, tiny_folder):
    src, _ = tiny_folder
    bad = tmp_path / "corrupt"
    shutil.copytree(src, bad)
    (bad / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError) as err:
        load_model("corrupt", bad)
    assert str(bad) in _one_line(err.value)

    # Valid safetensors, wrong tensors (another model's weights): also one ModelLoadError.
    other, _ = build("qwen2")
    mx.save_safetensors(str(bad / "model.safetensors"), dict(tree_flatten(other.parameters())))
    with pytest.raises(ModelLoadError) as err:
        load_model("mismatch", bad)
    assert "mismatch" in _one_line(err.value)


def test_gguf_that_is_not_a_model_gives_conversion_error(tmp_path):
    import gguf

    cv = tmp_path / "happy.gguf"
    w = gguf.GGUFWriter(str(cv), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_uint32("controlvector.layer_count", 1)
    w.add_tensor("direction.1", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as err:
        convert_gguf_to_mlx(cv, out)
    msg = _one_line(err.value)
    assert str(cv) in msg and "controlvector" in msg
    assert not out.exists()

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + os.urandom(1000))
    with pytest.raises(ConversionError) as err:
        convert_gguf_to_mlx(garbage, out)
    assert str(garbage) in _one_line(err.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-convert-")]


def test_failed_load_keeps_the_previous_model(tmp_path, tiny_folder):
    folder, model = tiny_folder
    svc = ModelService()
    info = svc.load(str(folder))
    first = svc.loaded
    assert info.family == "llama" and info.num_layers == 5
    bad = tmp_path / "corrupt"
    shutil.copytree(folder, bad)
    (bad / "model.safetensors").write_bytes(b"\0" * 100)
    for attempt in (str(bad), str(tmp_path / "missing"), "no-such-model"):
        with pytest.raises(ModelLoadError):
            svc.load(attempt)
        assert svc.loaded is first
    toks = prompt_tokens(5)
    assert mx.array_equal(_logits(svc.loaded.model, toks), _logits(model, toks))
    # The lock was released after each failure: a new job runs at once.
    assert svc.jobs.run(lambda token: "ran") == "ran"


def test_service_can_wrap_an_in_memory_model():
    model, config = build("gemma2")
    svc = ModelService(loaded=from_memory(model, tiny_tokenizer(), config, "tiny-gemma2"))
    assert svc.info().family == "gemma2" and svc.info().num_layers == 4


# ---- linking models from a Hugging Face cache ------------------------------------------------
def _fake_hf_repo(cache: Path, repo: str, snapshot: str, model_type: str = "llama", weights: bool = True) -> Path:
    """models--org--name/{blobs,snapshots/<hash>} with the snapshot files symlinked to blobs."""
    root = cache / f"models--{repo.replace('/', '--')}"
    blobs, snap = root / "blobs", root / "snapshots" / snapshot
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    files = {"config.json": json.dumps({"model_type": model_type, "hidden_size": 64}).encode()}
    if weights:
        tmp = blobs / "tmp.safetensors"
        mx.save_safetensors(str(tmp), {"w": mx.zeros((300_000,))})  # 1.2 MB
        files["model.safetensors"] = tmp.read_bytes()
        tmp.unlink()
    for name, data in files.items():
        blob = blobs / f"{snapshot}-{name}"
        blob.write_bytes(data)
        (snap / name).symlink_to(blob)
    return snap


def test_link_hf_cache_symlinks_idempotently_and_drops_dead_links(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STEERING_LAB_HOME", str(home))
    cache = tmp_path / "hf" / "hub"
    good = _fake_hf_repo(cache, "org/tiny", "aaa111")
    old = cache / "models--org--two" / "snapshots"
    old_snap = _fake_hf_repo(cache, "org/two", "old000")
    new_snap = _fake_hf_repo(cache, "org/two", "new999")
    os.utime(old_snap, (1_000_000, 1_000_000))  # the older snapshot must lose
    _fake_hf_repo(cache, "org/alien", "bbb222", model_type="not_an_mlx_arch")
    _fake_hf_repo(cache, "org/noweights", "ccc333", weights=False)
    assert old.is_dir()

    found = dict(registry.scan_hf_cache(cache))
    assert found == {"org/tiny": good, "org/two": new_snap}

    linked = registry.link_hf_cache(cache)
    assert sorted(linked) == ["org/tiny", "org/two"]
    ld = home / "models" / "linked"
    links = sorted(ld.iterdir())
    assert [p.name for p in links] == ["org--tiny", "org--two"]
    for link in links:
        assert link.is_symlink()  # a link, not a copy
    assert Path(os.readlink(ld / "org--tiny")) == good
    assert Path(os.readlink(ld / "org--two")) == new_snap
    # No bytes were copied: the weights seen through the link are the blob itself.
    assert os.stat(ld / "org--tiny" / "model.safetensors").st_ino == os.stat(good / "model.safetensors").st_ino

    # The lab lists and resolves them.
    entries = {e.model_id: e for e in registry.list_models()}
    assert entries["org/tiny"].source == "linked" and entries["org/tiny"].model_type == "llama"
    assert entries["org/tiny"].size_mb > 0
    assert registry.resolve("org/two").path == str(ld / "org--two")

    # Idempotent: a second run changes nothing.
    before = {p.name: (os.lstat(p).st_ino, os.readlink(p)) for p in ld.iterdir()}
    assert sorted(registry.link_hf_cache(cache)) == ["org/tiny", "org/two"]
    assert {p.name: (os.lstat(p).st_ino, os.readlink(p)) for p in ld.iterdir()} == before

    # A model deleted from the cache: its dead link disappears on the next run.
    shutil.rmtree(cache / "models--org--tiny")
    assert registry.link_hf_cache(cache) == ["org/two"]
    assert [p.name for p in ld.iterdir()] == ["org--two"]
    assert "org/tiny" not in {e.model_id for e in registry.list_models()}


def test_a_linked_model_loads_through_the_service(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_LAB_HOME", str(tmp_path / "home"))
    cache = tmp_path / "hf"
    model, config = build("qwen2")
    snap = cache / "models--tiny--qwen" / "snapshots" / "abc"
    write_model_folder(model, config, snap)
    assert registry.link_hf_cache(cache) == ["tiny/qwen"]
    svc = ModelService()
    info = svc.load("tiny/qwen")
    assert info.family == "qwen2" and info.model_id == "tiny/qwen"
    toks = prompt_tokens(6)
    assert mx.array_equal(_logits(svc.loaded.model, toks), _logits(model, toks))
