"""The guided path: short steps, each with a "Try it" that fills another tab and opens it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import gradio as gr

from app.ui.errors import guarded
from app.ui.tabs.operations import op_param_props

LABEL = "Tutorial"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 10  # ... and its place on the page

log = logging.getLogger("steering_lab.ui")

SLEEPY_PAIRS = [
    ["After lunch I felt so drowsy that I kept nodding off at my desk, yawning.",
     "After lunch I went back to my desk and answered my emails."],
    ["The lecture went on and on, and I was so sleepy my eyes kept closing.",
     "The lecture covered the history of the printing press."],
    ["I'm exhausted… I could fall asleep right here on the couch. Zzz.",
     "I'm sitting on the couch and watching the evening news."],
    ["Yawn. It's late and I'm so tired I can barely think straight.",
     "It's eight o'clock and I'm making a cup of tea."],
    ["The warm sun made me so drowsy that I dozed off on the train.",
     "The sun was shining while I rode the train to work."],
    ["My eyelids are heavy and all I want is to crawl into bed and sleep.",
     "My room has a bed, a desk and a small bookshelf."],
]

# Steps 4-7 steer towards happy on a prompt whose unsteered answer is neutral (VADER 0.0 on the default model):
# on "Tell me about your weekend." the baseline already scores +0.97 of at most 1, so the judge could not show the
# change the reader sees and the sweeps found "no recommended setting".
RAINY = "Write a few lines about a rainy Monday."


@dataclass
class Step:
    title: str
    body: str
    tab: str  # tab id the "Try it" opens
    fill: dict[str, Any] = field(default_factory=dict)  # "tab.component" -> value
    after: str = ""  # what to do once the tab is open


STEPS = [
    Step(
        "What the residual stream is",
        """A language model reads your prompt as **tokens** (word pieces). Each token becomes a vector of numbers
(576 of them for the default model), and that vector travels up through the model's **layers** (30 in the default model).
Every layer reads it and *adds* its own contribution, so the vector is a running sum: the **residual stream**,
the model's working memory for that token.

The layer explorer records this vector after every layer. Two things to look at:
- its **norm** (length), which grows with depth; the very first token (position 0) is enormous, an
  *attention sink* the model uses as a resting place for attention. It carries no meaning, so the lab ignores it.
- the **logit lens**: run any layer's vector through the model's output head and see which next token that
  layer "would predict". Early layers echo the input; the real answer appears in the last third.

Tokens usually carry the space in front of a word: "The" written after a space and "The" at the start of a line
are two different tokens. The lab draws that leading space as a dot, so `·The` is the token the model writes after
a space and `The` the one without; a lens cell that says `·The` already predicts the same word as one that says `The`.""",
        "explorer",
        {"explorer.prompt": "What is the capital of France?", "explorer.concept": ""},
        "Press **Explore**, then find the layer where the lens first predicts the answer's first word (with or "
        "without its leading space `·`); the summary above the charts names it too.",
    ),
    Step(
        "What a steering vector is",
        """Take pairs of texts that differ **only** in one concept, e.g. *“I got the job! I'm so thrilled!”* vs
*“I got the job. I start next month.”* Run them all through the model and, at each layer, average the residual
vectors over the tokens of each text, skipping position 0: the attention sink is far longer than other tokens
({SINK}) and would swamp everything. The **mean of the positives minus the mean of the negatives** is a direction
that points from “neutral” toward “happy”: the **steering vector** for that layer, one per layer.

In the explorer, choose a concept and the last chart shows how far each token of your prompt points along it.""",
        "explorer",
        {"explorer.prompt": "Lost my keys, then a surprise party!", "explorer.concept": "happy"},
        "Press **Explore** and scroll to the projection chart (the last one): from the middle layers up, the tokens of "
        "your message turn red, more than the chat template's system prompt before it (which reddens too in the "
        "last layers, where every position mixes in what came before), and the summary names "
        "the layer where they point most toward happy. The red covers the whole message, not only its happy words: "
        "each token's vector also carries the words before it.",
    ),
    Step(
        "Making your own concept",
        """In the **Concept creator**, write 4–20 contrast pairs. Keep each negative as close to its positive as
you can, changing only the concept (same topic, same length): whatever else differs leaks into the vector.
Press **Extract vectors**: the lab reads all the texts in one batch and shows a **quality card** per layer:
- **d′**: how far apart positives and negatives lie along the vector (above ~2 = clearly separated);
- **held-out accuracy**: build the vector without one pair and check that pair still comes out the right way round;
- the **recommended layers** (shaded), where both are high.

The card also warns when the numbers can mislead. On the default model the sleepy pairs of this example get a
warning, *layer 0 already separates them*, because sleepy texts use sleepy words (yawn, drowsy), and that early
the model sees little more than which words a text uses. Good separation then does not prove that the vector
carries the meaning, so judge it by how it steers. Then **Save to library** to use the concept everywhere;
**Try it in the playground** under the card opens it at its recommended layer and a starting strength (a new
concept has no calibrated strength yet: if its answer loops, lower the strength, e.g. to 0.2).""",
        "creator",
        {"creator.name": "Sleepy", "creator.slug": "sleepy",
         "creator.description": "Drowsy, tired, yawning (positive) versus neutral everyday statements (negative).",
         "creator.pairs": SLEEPY_PAIRS},
        "Press **Extract vectors**, read the card and its warning, then **Save to library**.",
    ),
    Step(
        "Steering: adding the vector",
        """Steering adds the concept's vector to the residual stream at **one layer**, for every token, while the
model writes. How much is set by the **relative strength** *s*: the lab adds
*s × (typical residual norm at that layer) × (unit vector)*, so **1.0 is a step as long as a typical token's whole
residual vector** there. Residual norms differ ~10× between layers, so this makes strengths comparable across layers.

On the default model, **0.15–0.4 at middle layers** changes the tone clearly and keeps the text fluent. The
playground writes the unsteered (baseline) and steered answers side by side with the same seed, so every
difference comes from the vector.""",
        "playground",
        {"playground.prompt": RAINY, "playground.concept": "happy",
         "playground.layer": 12, "playground.strength": 0.3, "playground.max_tokens": 48},
        "Press **Generate** and compare the two answers.",
    ),
    Step(
        "Why the layer matters",
        """- **Early layers** (about 0–6 of 30) still hold surface features: which token, spelling, position. A vector
  added there mostly pushes particular words and is unreliable (on this model a “sad” vector at layer 4 even
  made text happier).
- **Middle layers** (about 8–20) hold abstract features such as mood, style and topic: steering works best here,
  which is also where the quality card usually recommends.
- **Late layers** (25+) are already committed to the next token: there is little room left to act, and
  a push mainly changes a few word choices.

A **sweep** runs the same prompt at many layers (and strengths) so you can see this for yourself. How sharp the
difference is depends on the concept and the prompt: a strong, simple concept like happy can move the judge at
many layers at once, so read each row's judge change *and* its verdict rather than expecting one pattern.""",
        "sweeps",
        {"sweeps.prompt": RAINY, "sweeps.concept": "happy",
         "sweeps.kind": "layer sweep", "sweeps.layers": "4, 8, 12, 16, 20, 24, 28", "sweeps.strengths": "0.3"},
        "Press **Run sweep** and compare the rows: where does the text get happier without breaking?",
    ),
    Step(
        "Why too much strength breaks text",
        """Later layers were trained on residual vectors of a certain size and shape. Push too far and the
stream leaves that range: the model starts **repeating itself** (“happy happy happy…”), loops on one phrase,
or emits gibberish. On the default model this typically starts around relative strength **0.5** and is
certain by ~1.0.

The sweep judges every cell **coherent or not** (✕) next to how strongly the concept shows: still plausible to
the unsteered model (perplexity ratio), varied (distinct-2) and not repeating a phrase over much of the text.
Click a cell to read its verdict: it names the rule that decided. Good settings sit below where cells turn
incoherent. The ★ marks the coherent cell whose text the **judge** scores furthest toward the concept; that is
often not the strongest coherent push — a gentler one can read *more* happy, and then the ★ goes to it.
(The largest relative strength the lab accepts is 1.0.)""",
        "sweeps",
        {"sweeps.prompt": RAINY, "sweeps.concept": "happy", "sweeps.kind": "strength sweep",
         "sweeps.layers": "12", "sweeps.strengths": "0.1, 0.3, 0.6, 0.8, 1.0"},
        "Press **Run sweep** and watch the cells turn incoherent (✕) as the strength grows; click one to read why.",
    ),
    Step(
        "Beyond adding: ablate and rotate",
        """Adding is one thing you can do with a concept direction *u*. Two others change the residual stream *h*
in other ways:
- **ablate** removes the concept's component, *h − (h·u) u*: the model can no longer read how much "happy" the
  text has at that layer (the parameter *a* in 0–1 removes part of it);
- **rotate** turns *h* towards *u* by an angle θ while keeping its length, so the layer sees a vector of the
  size it was trained on (adding makes it longer).

The Try-it fills the playground with **rotate** happy by 15° at layer 12. Press **Generate**, then open
**Advanced**, set **Operation** to *add* (strength 0.3) and then to *ablate*, and generate each time.
**Which one changed the text least while still changing its tone?** Look at the **effect map** under the answers
(**Where steering acts**: red = where the steered model's next-token guess differs most from the unsteered one)
and at **Where it applied** at the end of the advanced section.""",
        "playground",
        {"playground.prompt": RAINY, "playground.concept": "happy",
         "playground.layer": 12, "playground.strength": 0.3, "playground.max_tokens": 48,
         "playground.op": "rotate", "playground.op_param": "15", "playground.op_layers": "",
         "playground.condition": ""},
        "Generate with rotate, then with add and with ablate, and compare the three steered answers.",
    ),
    Step(
        "Mixing concepts",
        """Steering vectors live in the same space, so they can be **added**: *0.6 × happy + 0.4 × pirate* pushes
toward both at once. Related concepts overlap: happy and excited share an “emotional vs neutral” part (compare
them in the explorer's cosine chart), so mixing them mostly strengthens that shared part. Unrelated concepts
(a mood and a style) combine more cleanly. Keep the total strength in the same range as for one concept.""",
        "mixer",
        {"mixer.text": "happy:0.6, pirate:0.4", "mixer.prompt": "Describe your favourite food."},
        "Press **Generate with the mix**, then **Compare with each concept alone** to see what each part adds.",
    ),
]

EXAMPLE_LAYERS = 30  # the examples' layers are written for the default model's 30 layers


def fit_example(fill: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """The example mapped onto the loaded model's depth (layer 12 of 30 -> layer 7 of 18), so
    every "Try it" also runs on models with fewer layers, such as Gemma 3 270M (18)."""
    if num_layers == EXAMPLE_LAYERS or num_layers < 2:
        return dict(fill)

    def fit(layer: int) -> int:
        return min(num_layers - 1, round(layer * (num_layers - 1) / (EXAMPLE_LAYERS - 1)))

    out = dict(fill)
    for key, value in fill.items():
        if key.endswith(".layer") and isinstance(value, int):
            out[key] = fit(value)
        elif key.endswith(".layers") and isinstance(value, str):
            layers = dict.fromkeys(fit(int(p)) for p in value.split(",") if p.strip())
            out[key] = ", ".join(str(l) for l in layers)
    return out


TAB_LABELS = {"explorer": "Layer explorer", "creator": "Concept creator", "playground": "Steering playground",
              "sweeps": "Sweeps", "mixer": "Concept mixer"}

INTRO = """## Learn activation steering in about 15 minutes
Open the steps in order. Each explains one idea in a minute of reading, then **Try it** fills another tab with a
worked example and takes you there; come back here for the next step. Nothing you do can harm the model:
steering only changes this run's activations, never the weights."""


SINK_UNKNOWN = "the explorer's summary gives the exact factor for your prompt"
_SINK_CACHE: dict[str, str] = {}
SCROLL_TOP_JS = "() => { window.scrollTo({top: 0}); document.querySelectorAll('.tabitem').forEach(t => t.scrollTop = 0); }"


def step_body(step: Step, sink: str = SINK_UNKNOWN) -> str:
    return step.body.replace("{SINK}", sink)


def sink_phrase(service: Any) -> str:
    """The sink ratio the explorer shows for step 2's prompt, measured on the loaded model (cached per model)."""
    from app.ui.present.common import fmt
    from app.ui.present.explorer import sink_ratio

    if not getattr(service, "is_loaded", False):
        return SINK_UNKNOWN
    model = service.info().model_id
    if model not in _SINK_CACHE:
        ex = service.explore(STEPS[1].fill["explorer.prompt"], chat=True)
        sink = sink_ratio(ex)
        _SINK_CACHE[model] = SINK_UNKNOWN if sink is None else (
            f"on this step's prompt it is **{fmt(sink[1], 0)}×** longer than an average token at layer {sink[0]}, "
            "as the explorer's summary shows")
    return _SINK_CACHE[model]


def reset_values(tab: str) -> dict[str, Any]:
    """Results a "Try it" clears in its target tab, so no old answer sits under the new inputs."""
    from app.ui.present.generation import badge_html, empty_panes
    from app.ui.present.insight import effect_map_html

    base, steer = empty_panes("Press the button above to run this example.")
    ready = badge_html("ok", "ready: run the example")
    return {
        # extra layers too: picking a concept may have filled its calibrated band there, which the example lacks;
        # and the operation fields: step 7's rotate/ablate must not stay behind for step 4's plain addition
        "playground": {"playground.baseline": base, "playground.steered": steer, "playground.status": ready,
                       "playground.effects": effect_map_html([]), "playground.extra_layers": "",
                       "playground.op": "add", "playground.op_param": "", "playground.op_layers": "",
                       "playground.condition": "", "playground.threshold": 1.0},
        "mixer": {"mixer.baseline": base, "mixer.steered": steer, "mixer.status": ready, "mixer.alone_out": ""},
        "sweeps": {"sweeps.summary": "_Press **Run sweep** to run this example._", "sweeps.heatmap": None},
        "explorer": {"explorer.summary": "_Press **Explore** to run this example._"},
        "creator": {},
    }.get(tab, {})


def build(service: Any, ctx: Any) -> None:
    gr.Markdown(INTRO, elem_id="tutorial-intro")
    buttons = []
    bodies = []
    for i, step in enumerate(STEPS, start=1):
        with gr.Accordion(f"Step {i}. {step.title}", open=(i == 1), elem_id=f"tutorial-step-{i}",
                          elem_classes=["tutorial-step"]):
            bodies.append(gr.Markdown(step_body(step)))
            btn = gr.Button(f"Try it in the {TAB_LABELS.get(step.tab, step.tab)} →", variant="primary", size="sm",
                            elem_id=f"tutorial-try-{i}", elem_classes=["try-it"])
            gr.Markdown(f"**Then:** {step.after}", elem_classes=["howto", "try-after"])
            buttons.append(btn)
    gr.Markdown("That's the whole loop: **look** (explorer) → **define** (creator) → **steer** (playground) → "
                "**tune** (sweeps) → **combine** (mixer). Your concepts are kept in the **Library** tab, where you "
                "can also export them for llama.cpp.", elem_classes=["howto"])
    ctx.register("tutorial", **{f"try_{i}": b for i, b in enumerate(buttons, start=1)})

    def fill_sink():
        try:
            return step_body(STEPS[1], sink_phrase(service))
        except Exception:  # the number is a nicety; never break the page for it
            log.exception("could not measure the sink ratio for the tutorial")
            return step_body(STEPS[1])

    ctx.on_load.append((fill_sink, [], [bodies[1]]))


# sliders whose info line may still describe an earlier setting ("★ recommended for sleepy")
_INFO_KEYS = {"playground.layer": "layer", "playground.strength": "strength"}


def _fill_value(key: str, value: Any, step: int, op_props: Optional[dict] = None) -> Any:
    """``op_props``: the filled operation's parameter label and info (the box must not say "add uses the strength
    slider" under rotate: a programmatic change fires no ``.input`` event to update it)."""
    if key in _INFO_KEYS:
        return gr.update(value=value, info=f"set by tutorial step {step}")
    if key == "playground.op_param" and op_props:
        return gr.update(value=value, label=op_props["label"], info=op_props["info"])
    return value


def wire(service: Any, ctx: Any) -> None:
    """Each "Try it" writes its example into the target tab, clears its old results, opens it at the top."""
    for i, step in enumerate(STEPS, start=1):
        btn = ctx.get(f"tutorial.try_{i}")
        wanted = {**reset_values(step.tab), **step.fill}
        present = [k for k in wanted if k in ctx.components]
        missing = [k for k in step.fill if k not in ctx.components]
        if missing:
            log.warning("tutorial step %d: skipping components that are not registered: %s", i, ", ".join(missing))
        outputs = [ctx.components[k] for k in present]
        switch = ctx.tabs is not None
        if switch:
            outputs.append(ctx.tabs)

        def fill(example=wanted, present=present, tab=step.tab, switch=switch, step_no=i):
            depth = service.info().num_layers if getattr(service, "is_loaded", False) else EXAMPLE_LAYERS
            fitted = fit_example(example, depth)
            props = op_param_props(service, fitted.get("playground.op") or "add") if "playground.op" in fitted else None
            out = [_fill_value(k, fitted[k], step_no, props) for k in present]
            if switch:
                out.append(gr.Tabs(selected=tab))
            return out if len(out) != 1 else out[0]

        btn.click(guarded(fill), None, outputs, api_visibility="private", queue=False, show_progress="hidden",
                  js=SCROLL_TOP_JS)
