"""The Lab facade on a tiny model: typed requests in, the library written only through it, under the model lock."""

from __future__ import annotations

import threading
import time

import pytest

from app.domain.requests import ExtractRequest, SteerRequest, SweepRequest
from app.errors import InputError
from app.service.lab import Lab
from app.types import GenerationParams
from test_service_judges import tiny_service


def test_requests_check_themselves_once_naming_the_field():
    with pytest.raises(InputError, match="positions"):
        SteerRequest(prompt="p", concept="c", positions="everywhere")
    with pytest.raises(InputError, match="schedule"):
        SteerRequest(prompt="p", concept="c", schedule="sometimes")
    with pytest.raises(InputError, match="op_param"):
        SteerRequest(prompt="p", concept="c", op="ablate", op_param=2.0)
    with pytest.raises(InputError, match="too many"):
        SweepRequest("p", "c", tuple(range(9)), tuple(0.1 * i for i in range(8)))
    with pytest.raises(InputError, match="strengths"):
        SweepRequest("p", "c", (1,), (float("nan"),))
    req = SteerRequest(prompt="p", concept="c", op="rotate", op_param=30, op_layers=[2, 1])
    assert req.op_param == 30.0 and req.op_layers == (2, 1)
    with pytest.raises(AttributeError):
        req.op = "add"  # frozen: what was checked stays checked


def test_extract_sweep_and_save_go_through_the_lab(tmp_path):
    lab = Lab(tiny_service(tmp_path))
    cv = lab.extract(ExtractRequest("wordy", save=False))
    assert lab.concepts.vector_status("wordy") == "missing"  # save=False stored nothing
    concept = lab.concepts.get("wordy")
    stored, kept = lab.concepts.save(concept, cv, overwrite=True)
    assert kept and lab.concepts.vector_status("wordy") == "ready"
    assert lab.concepts.stored_vectors("wordy").vectors.tobytes() == cv.vectors.tobytes()
    edited = concept.__class__(**{**concept.__dict__, "slug": "wordy-2", "pairs": concept.pairs[:4]})
    _, kept = lab.concepts.save(edited, cv)  # other pairs than the vectors were extracted from: not kept
    assert not kept and lab.concepts.vector_status("wordy-2") == "missing"
    res = lab.sweep(SweepRequest("w3 w4", "wordy", (1,), (0.0, 0.5), GenerationParams(max_tokens=4), judge=False))
    assert len(res.cells) == 2


def test_library_writes_wait_for_the_model_lock(tmp_path):
    svc = tiny_service(tmp_path)
    lab = Lab(svc)
    done = threading.Event()
    with svc.jobs.lock:  # a run holds the model
        t = threading.Thread(target=lambda: (lab.concepts.rename("plain", "plainer"), done.set()))
        t.start()
        time.sleep(0.3)
        assert not done.is_set() and lab.concepts.exists("plain")
    t.join(10)
    assert done.is_set() and lab.concepts.exists("plainer") and not lab.concepts.exists("plain")
