"""Text judges on fixed, hand-written texts; every shipped concept's own judge, checked by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.judges import JUDGES, build_judge, default_spec, judge_scores, words_of
from app.errors import InputError
from app.library import parse_concept
from app.types import JUDGE_KINDS, Concept, ContrastPair, JudgeSpec

CONCEPTS = Path(__file__).resolve().parent.parent / "concepts"

HAPPY = "What a wonderful day! I am so happy and grateful, everything feels bright and joyful."
SAD = "I feel so alone and heartbroken. Everything is grey, and I cannot stop crying."
NEUTRAL = "The meeting is on Tuesday at ten. The room is on the second floor."

# For each shipped concept: a text that clearly has it, and one that does not (hand-written).
EXAMPLES = {
    "happy": (HAPPY, SAD),
    "sad": (SAD, HAPPY),
    "pessimistic": ("It will probably go wrong. Nothing ever works out, and it will only get worse.",
                    "It will probably go well. Things usually work out, and it will get better."),
    "angry": ("This is outrageous! I am furious, I hate this, and I am sick of your lies! I'm so mad.", NEUTRAL),
    "fearful": ("I am terrified. My hands are shaking and I am scared and anxious something awful will happen.", NEUTRAL),
    "calm": ("Breathe slowly. The lake is still, the evening is quiet and peaceful, and I feel relaxed.", NEUTRAL),
    "excited": ("I can't wait! Tomorrow is the big trip and I am so thrilled and excited, this is going to be amazing!",
                NEUTRAL),
    "enthusiastic": ("Absolutely! I LOVE this idea, it's fantastic, let's do it right now, it will be so much fun!",
                     "Sure. We can try this idea next week if there is time."),
    "formal": ("We would be most grateful if you could kindly forward the requested documentation at your "
               "earliest convenience.", "Hey, can you send me the papers when you get a sec?"),
    "casual": ("Hey, wanna grab pizza later? I'm kinda starving lol, gonna be awesome.",
               "Would you like to have pizza later? I am hungry."),
    "technical": ("The algorithm computes the eigenvalues of the covariance matrix; the server processes each "
                  "request through the programming interface of the database.", NEUTRAL),
    "poetic": ("The moon spilled silver across the sleeping sea, and the night wind sang of beauty.", NEUTRAL),
    "pirate": ("Arr, me hearty! Hoist the sails, ye scallywags, for there be treasure across the sea!",
               "Hello, friend! Raise the flag, everyone, because there is money across the lake."),
    "shakespeare": ("Good morrow, fair friend! Pray tell, how doth thy gentle heart fare this day? Methinks thou art weary.",
                    "Good morning, friend! How are you feeling today? I think you are tired."),
    "brief": ("Tuesday, ten.", NEUTRAL),
    "verbose": ("Well, to answer your question, after giving it a great deal of thought, I would have to say that "
                "the meeting will, in all likelihood, take place on Tuesday at roughly ten in the morning.", NEUTRAL),
}


def _score(spec: JudgeSpec, texts):
    return judge_scores(build_judge(spec), texts)


def test_registry_is_the_one_list_of_kinds():
    assert tuple(JUDGES) == JUDGE_KINDS


def test_sentiment_orders_happy_neutral_sad_and_sign_flips_it():
    up = _score(JudgeSpec("sentiment", 1), [HAPPY, NEUTRAL, SAD])
    assert up[0] > 0.5 and abs(up[1]) < 0.1 and up[2] < -0.5
    down = _score(JudgeSpec("sentiment", -1), [HAPPY, NEUTRAL, SAD])
    np.testing.assert_allclose(down, -up)
    assert build_judge(JudgeSpec("sentiment", 1)).raw([""])[0] == 0.0


def test_lexicon_counts_category_words_case_and_punctuation_blind():
    spec = JudgeSpec("lexicon", 1, categories=("anger", "rage"))
    s = _score(spec, ["I am FURIOUS, truly furious!", "I am calm today.", ""])
    assert s[0] > s[1] == 0.0 and s[2] == 0.0
    with pytest.raises(InputError, match="judge.categories"):
        build_judge(JudgeSpec("lexicon", 1, categories=("no_such_category",)))


def test_words_is_a_share_of_whole_words_and_phrases():
    j = build_judge(JudgeSpec("words", 1, words=("arr", "ye", "shiver me timbers")))
    raw = j.raw(["Arr, ye be late!", "Shiver me timbers, arr.", "The yeti barred the door.", ""])
    assert raw[0] == pytest.approx(2 / 4)  # arr, ye of 4 words
    assert raw[1] == pytest.approx(2 / 4)  # the phrase and arr of 4 words
    assert raw[2] == 0.0 and raw[3] == 0.0  # 'yeti' / 'barred' are not 'ye' / 'arr'
    with pytest.raises(InputError, match="judge.words"):
        build_judge(JudgeSpec("words", 1, words=("", "  ")))


def test_length_counts_words_with_its_sign():
    assert words_of("Don't stop, it's 9 o'clock.") == ["Don't", "stop", "it's", "9", "o'clock"]
    assert list(_score(JudgeSpec("length", -1), ["one two three", "one"])) == [-3.0, -1.0]


def test_readability_runs_offline_and_ranks_plain_above_dense():
    plain = "The cat sat on the mat. It was a sunny day."
    dense = "Notwithstanding institutional considerations, comprehensive organizational restructuring necessitates deliberation."
    s = _score(JudgeSpec("readability", 1, metric="flesch_reading_ease"), [plain, dense])
    assert s[0] > 80 and s[1] < 20
    g = _score(JudgeSpec("readability", 1, metric="flesch_kincaid_grade"), [plain, dense])
    assert g[1] > g[0]


def test_readability_needs_no_network():
    """textstat versions after 0.7.4 fetch nltk's cmudict at first use; the pinned one must not."""
    code = ("import socket\n"
            "def refuse(*a, **k): raise OSError('network used')\n"
            "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
            "from app.core.judges import build_judge\nfrom app.types import JudgeSpec\n"
            "print(build_judge(JudgeSpec('readability', 1, metric='smog_index')).raw(['The cat sat on the mat.'])[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(CONCEPTS.parent))
    assert out.returncode == 0, out.stderr[-2000:]


def test_probe_needs_the_model_and_enough_pairs():
    c = Concept(slug="x", name="X", pairs=[ContrastPair("a", "b")] * 3)
    with pytest.raises(InputError, match="probe"):
        build_judge(JudgeSpec("probe"), concept=c)
    assert default_spec(c) is None
    assert default_spec(Concept(slug="x", name="X", pairs=[ContrastPair("a", "b")] * 4)) == JudgeSpec("probe")


def test_bad_sign_refused_by_the_builder_too():
    with pytest.raises(InputError, match="judge.sign"):
        build_judge(JudgeSpec("sentiment", 0))


@pytest.mark.parametrize("slug", sorted(EXAMPLES))
def test_each_shipped_concept_judge_prefers_its_own_text(slug):
    concept = parse_concept((CONCEPTS / f"{slug}.yaml").read_text(encoding="utf-8"), slug)
    assert concept.judge is not None and concept.judge.kind != "probe"
    has, lacks = EXAMPLES[slug]
    s = judge_scores(build_judge(concept.judge), [has, lacks])
    assert s[0] > s[1], f"{slug}: {concept.judge} scored {s}"


def test_every_shipped_concept_declares_a_judge():
    files = sorted(CONCEPTS.glob("*.yaml"))
    assert len(files) == 16 and {f.stem for f in files} == set(EXAMPLES)
    for f in files:
        c = parse_concept(f.read_text(encoding="utf-8"), f.stem)
        assert c.judge is not None, f.stem
        assert build_judge(c.judge).label
