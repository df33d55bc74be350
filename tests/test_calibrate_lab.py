"""The calibration search through the Lab on a tiny model: the CLI's request is checked once, the search runs
as a job, and its choice is written into the library by the lab (never by the command line)."""

from __future__ import annotations

import argparse

import pytest

from app.cli_calibrate import calibrate_request, register
from app.domain.requests import CalibrateRequest
from app.errors import InputError
from app.library.slugs import model_key
from app.service.lab import Lab
from test_service_judges import tiny_service

SMALL = dict(methods=("mean_diff",), layers=(1,), strengths=(0.2, 0.5), coarse_strengths=(0.2,), coarse_prompts=1,
             coarse_tokens=2, max_tokens=2, val_tokens=2)


def test_a_saved_calibration_stores_the_chosen_setting_and_vectors(tmp_path):
    lab = Lab(tiny_service(tmp_path))
    assert lab.concepts.vector_status("wordy") == "missing"
    lines: list[str] = []
    report = lab.calibrate(CalibrateRequest(("wordy",), save=True, **SMALL), lines.append)
    r = report["wordy"]
    assert r["method"] == "mean_diff" and r["layer"] == 1 and r["strength"] in (0.2, 0.5)
    assert r["judge"] and "validation" in r
    rec = lab.concepts.get("wordy").recommended[model_key("tiny-qwen2")]
    assert (rec.layer, rec.strength, rec.source) == (1, r["strength"], "calibration")
    assert lab.concepts.get("wordy").method == "mean_diff"
    assert lab.concepts.vector_status("wordy") == "ready"
    assert any(line.startswith("wordy: mean_diff layer 1 strength") for line in lines)
    assert any("vectors ready" in line for line in lines)


def test_without_save_nothing_is_written(tmp_path):
    lab = Lab(tiny_service(tmp_path))
    report = lab.calibrate(CalibrateRequest(("wordy",), **SMALL), lambda line: None)
    assert "wordy" in report
    assert lab.concepts.vector_status("wordy") == "missing" and not lab.concepts.get("wordy").recommended


@pytest.mark.parametrize("change, words", [
    (dict(methods=("no_such_method",)), "unknown extraction method"),
    (dict(methods=("bipolar",)), "must include mean_diff"),
    (dict(ship=True), "not a shipped concept"),
])
def test_bad_requests_are_refused_before_any_model_work(tmp_path, change, words):
    lab = Lab(tiny_service(tmp_path))
    with pytest.raises(InputError, match=words):
        lab.calibrate(CalibrateRequest(("wordy",), **{**SMALL, **change}), lambda line: None)
    assert lab.concepts.vector_status("wordy") == "missing"


def test_the_cli_turns_argv_into_a_checked_request():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub, lambda name, help, fn: sub.add_parser(name))
    args = parser.parse_args(["calibrate", "happy", "sad", "--layers", "2-4", "--strengths", "0.1,0.3",
                              "--methods", "mean_diff,bipolar", "--save"])
    req = calibrate_request(args, num_layers=30)
    assert req.concepts == ("happy", "sad") and req.layers == (2, 3, 4) and req.strengths == (0.1, 0.3)
    assert req.methods == ("mean_diff", "bipolar") and req.save and not req.ship
    with pytest.raises(InputError, match="--coarse-prompts must be at least 1"):
        calibrate_request(parser.parse_args(["calibrate", "happy", "--coarse-prompts", "0"]), 30)
    with pytest.raises(InputError, match="layers"):
        calibrate_request(parser.parse_args(["calibrate", "happy", "--layers", "40"]), 30)


def test_reusing_vectors_skips_a_concept_whose_stored_method_is_not_mean_diff(tmp_path):
    """`calibrate all --reuse-vectors` used to end with a KeyError after the whole search when a stored vector
    was bipolar or no_shared (the depth scan needs mean_diff): now that concept is skipped and said so."""
    import dataclasses

    from app.domain.requests import ExtractRequest

    lab = Lab(tiny_service(tmp_path))
    for slug, method in (("wordy", "mean_diff"), ("plain", "bipolar")):
        cv = lab.extract(ExtractRequest(slug, save=False))
        lab.concepts.save(lab.concepts.get(slug), dataclasses.replace(cv, method=method), overwrite=True)
    lines: list[str] = []
    report = lab.calibrate(CalibrateRequest(("wordy", "plain"), reuse_vectors=True, **SMALL), lines.append)
    assert set(report) == {"wordy"}
    assert any(line.startswith("plain: skipped: --reuse-vectors") for line in lines), lines
