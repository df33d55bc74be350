"""The playground, sweep and mixer events through the HTTP API (gradio_client against a launched app).

One app for the module, on a free port, with the user library in a temp folder. Runs are tiny
(8-16 tokens, 2x2 sweeps) because the machine has two shared CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_model

PROMPT = "Tell me about your weekend."


@pytest.fixture(scope="module")
def app_url(running_lab):
    return running_lab


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def _generate(client, **kw):
    args = dict(prompt=PROMPT, concept="happy", layer=12, strength=0.3, max_tokens=12, api_name="/generate")
    args.update(kw)
    return client.predict(**args)


def _record(result) -> dict:
    """The JSON download of a run (last output)."""
    path = result[-1]
    path = path.get("value") if isinstance(path, dict) else path
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _val(x):
    """A component update comes back as {'value': ..., '__type__': 'update'}; plain values as they are."""
    return x.get("value") if isinstance(x, dict) and "__type__" in x else x


def _tokens(pane_html: str) -> int:
    return len(re.findall(r'class="tok[ "]', pane_html))


def _expect_error(fn, *words):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        fn()
    msg = str(info.value).lower()
    assert "traceback" not in msg
    for w in words:
        assert w.lower() in msg, msg
    return msg


def test_generate_fills_both_panes(client):
    result = _generate(client)
    base, steer, status = result[0], result[1], result[2]
    assert _tokens(base) > 0 and _tokens(steer) > 0
    assert "badge" in status and "tok/s" in status
    rec = _record(result)
    assert rec["baseline"].strip() and rec["steered"].strip()
    assert rec["settings"]["layers"][0]["layer"] == 12
    md_path = result[-2].get("value") if isinstance(result[-2], dict) else result[-2]
    md = Path(md_path).read_text(encoding="utf-8")
    assert rec["baseline"].splitlines()[0] in md and rec["steered"].splitlines()[0] in md


def test_strength_zero_gives_identical_panes(client):
    rec = _record(_generate(client, strength=0.0, max_tokens=10))
    assert rec["baseline"] == rec["steered"]
    assert rec["divergence"] is None


def test_multi_layer_plan_and_logits_mode(client):
    rec = _record(_generate(client, extra_layers="16:0.2", mode="logits", guidance=1.5, max_tokens=8))
    assert [e["layer"] for e in rec["settings"]["layers"]] == [12, 16]
    assert rec["settings"]["mode"] == "logits"
    rec = _record(_generate(client, absolute=True, strength=2.0, max_tokens=6))
    assert rec["settings"]["strength_mode"] == "absolute" and rec["settings"]["layers"][0]["strength"] == 2.0
    _expect_error(lambda: _generate(client, strength=2.0, max_tokens=6), "between -1 and 1")  # relative range


def test_sweep_returns_a_figure_and_use_setting(client):
    out = client.predict(concept="happy", prompt=PROMPT, layers="8,12", strengths="0.2,0.4", max_tokens=12,
                         api_name="/sweep")
    summary, heat, table = out[0], out[1], out[3]
    assert "4 cells" in summary
    plot = heat.get("plot") if isinstance(heat, dict) else None
    assert plot, heat
    fig = json.loads(plot)
    z = [t for t in fig["data"] if t["type"] == "heatmap"][0]["z"]
    assert len(z) == 2 and len(z[0]) == 2
    rows = table["data"] if isinstance(table, dict) else table
    assert len(rows) == 4
    # send a cell to the playground: the same session keeps the sweep's result
    used = client.predict(cell="12|0.4", api_name="/use_setting")
    assert _val(used[1]) == "happy" and _val(used[2]) == 12 and _val(used[3]) == pytest.approx(0.4)
    # save a cell as the concept's recommendation: picking the concept then proposes it
    msg = client.predict(cell="8|0.2", concept="happy", absolute=False, api_name="/save_recommendation")
    assert "layer 8" in msg
    layer_up, strength_up, _ = client.predict(concept="happy", api_name="/recommended_setting")
    assert _val(layer_up) == 8 and _val(strength_up) == pytest.approx(0.2)
    assert "sweep" in layer_up["info"]


def test_mixer_cosine_generate_and_save(client):
    fig = client.predict(text="happy:0.6, sad:0.4", project_out="", layer=12, api_name="/cosine_matrix")
    data = json.loads(fig["plot"])["data"][0]
    assert data["x"] == ["happy", "sad"] and len(data["z"]) == 2
    assert data["z"][0][0] == pytest.approx(1.0, abs=1e-3)
    result = client.predict(text="happy:0.6, sad:0.4", normalize=True, project_out="", prompt=PROMPT,
                            layer=12, strength=0.3, max_tokens=10, api_name="/mix_generate")
    assert _tokens(result[0]) > 0 and _tokens(result[1]) > 0
    assert "(normalized)" in _record(result)["settings"]["label"]
    result = client.predict(text="happy:1", normalize=False, project_out="sad", prompt=PROMPT, layer=12, strength=0.3,
                            max_tokens=8, api_name="/mix_generate")
    assert "without sad" in _record(result)["settings"]["label"]
    msg = client.predict(slug="happy-sad-mix", name="Bittersweet", text="happy:0.6, sad:0.4", normalize=False,
                         project_out="", overwrite=False, api_name="/save_mix")
    assert "happy-sad-mix" in msg
    rec = _record(_generate(client, concept="happy-sad-mix", max_tokens=8))
    assert rec["steered"].strip()


def test_bad_inputs_give_clear_errors_and_the_server_keeps_answering(client):
    _expect_error(lambda: _generate(client, prompt="   "), "prompt")
    _expect_error(lambda: _generate(client, concept="nosuch:0.5"), "nosuch")
    _expect_error(lambda: _generate(client, concept="nosuch"), "nosuch")
    _expect_error(lambda: _generate(client, extra_layers="16:nan"), "finite")
    _expect_error(lambda: _generate(client, max_tokens=10**9), "max")
    _expect_error(lambda: _generate(client, layer=99), "99")
    _expect_error(lambda: client.predict(concept="happy", prompt=PROMPT, layers="8,99", strengths="0.2",
                                         max_tokens=8, api_name="/sweep"), "99")
    _expect_error(lambda: client.predict(concept="happy", prompt=PROMPT, layers="8", strengths="0.2,nan",
                                         max_tokens=8, api_name="/sweep"), "finite")
    _expect_error(lambda: client.predict(text="happy:abc", normalize=False, project_out="", prompt=PROMPT,
                                         layer=12, strength=0.3, max_tokens=8, api_name="/mix_generate"),
                  "weight")
    _expect_error(lambda: client.predict(slug="../x", name="x", text="happy:0.5", normalize=False,
                                         project_out="", overwrite=False, api_name="/save_mix"), "slug")
    result = _generate(client, max_tokens=8)
    assert _tokens(result[1]) > 0


def test_stop_ends_a_long_run_with_the_partial_answer(app_url):
    from gradio_client import Client

    c = Client(app_url, verbose=False)
    job = c.submit(prompt=PROMPT, concept="happy", max_tokens=300, api_name="/generate")
    deadline = time.monotonic() + 300
    while len(job.outputs()) < 4 and not job.done():  # the "waiting" update, then a few tokens
        assert time.monotonic() < deadline, "no tokens streamed"
        time.sleep(0.2)
    c.predict(api_name="/stop_generate")  # same client = same session
    result = job.result(timeout=120)
    assert "stopped" in result[2]
    rec = _record(result)
    assert 0 < len(rec["steered_tokens"]) < 300 and rec["stats"]["steered_finish"] == "cancelled"
    assert _tokens(_generate(c, max_tokens=6)[1]) > 0  # the model is free again


def test_two_clients_generating_at_once_both_complete(app_url):
    from gradio_client import Client

    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            c = Client(app_url, verbose=False)
            results[i] = _record(_generate(c, max_tokens=8, seed=i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert sorted(results) == [0, 1]
    assert all(r["steered"].strip() for r in results.values())


def test_operation_choice_runs_and_reports_where_it_applied(client):
    result = _generate(client, op="rotate", op_param=20, max_tokens=8)
    rec = _record(result)
    assert rec["settings"]["op"] == "rotate" and rec["settings"]["op_param"] == 20.0
    assert rec["applied"][0]["phase"] == "prefill" and rec["applied"][0]["coefficient"] == 20
    assert "Where it applied" in str(result[4]) and "KL" in str(result[3])
    assert len(rec["effects"]) == len(rec["steered_tokens"]) or rec["effects"]
    _expect_error(lambda: _generate(client, op="ablate", op_param=3, max_tokens=4), "op_param")
    _expect_error(lambda: _generate(client, op="shear", max_tokens=4), "shear")
