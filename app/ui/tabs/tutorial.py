"""The guided path: short steps, each with a "Try it" that fills another tab and opens it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.ui.errors import guarded

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
  layer "would predict". Early layers echo the input; the real answer appears in the last third.""",
        "explorer",
        {"explorer.prompt": "What is the capital of France?", "explorer.concept": ""},
        "Press **Explore**, then find the layer where the lens first predicts the answer's first word.",
    ),
    Step(
        "What a steering vector is",
        """Take pairs of texts that differ **only** in one concept, e.g. *“I got the job! I'm so thrilled!”* vs
*“I got the job. I start next month.”* Run them all through the model and, at each layer, average the residual
vectors over the tokens of each text (skipping position 0, the attention sink, which is ~10× longer than other
tokens and would swamp everything). The **mean of the positives minus the mean of the negatives** is a direction
that points from “neutral” toward “happy”: the **steering vector** for that layer, one per layer.

In the explorer, choose a concept and the last chart shows how far each token of your prompt points along it.""",
        "explorer",
        {"explorer.prompt": "I lost my keys this morning, but then my best friend surprised me with a party!",
         "explorer.concept": "happy"},
        "Press **Explore** and scroll to the projection chart: happy words turn red in the middle layers.",
    ),
    Step(
        "Making your own concept",
        """In the **Concept creator**, write 4–20 contrast pairs. Keep each negative as close to its positive as
you can, changing only the concept (same topic, same length): whatever else differs leaks into the vector.
Press **Extract**: the lab reads all the texts in one batch and shows a **quality card** per layer:
- **d′**: how far apart positives and negatives lie along the vector (above ~2 = clearly separated);
- **held-out accuracy**: build the vector without one pair and check that pair still comes out the right way round;
- the **recommended layers** (shaded), where both are high.
Then **Save to library** to use the concept everywhere.""",
        "creator",
        {"creator.name": "Sleepy", "creator.slug": "sleepy",
         "creator.description": "Drowsy, tired, yawning (positive) versus neutral everyday statements (negative).",
         "creator.pairs": SLEEPY_PAIRS},
        "Press **Extract vectors**, read the card, then **Save to library**.",
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
        {"playground.prompt": "Tell me about your weekend.", "playground.concept": "happy",
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

A **sweep** runs the same prompt at many layers (and strengths) so you can see this for yourself.""",
        "sweeps",
        {"sweeps.prompt": "Tell me about your weekend.", "sweeps.concept": "happy",
         "sweeps.layers": "4, 8, 12, 16, 20, 24, 28", "sweeps.strengths": "0.3"},
        "Run the sweep and compare the rows: where does the text get happier without breaking?",
    ),
    Step(
        "Why too much strength breaks text",
        """Later layers were trained on residual vectors of a certain size and shape. Push too far and the
stream leaves that range: the model starts **repeating itself** (“happy happy happy…”), loops on one phrase,
or emits gibberish. On the default model this typically starts around relative strength **0.5** and is
certain by ~1.0.

The sweep scores every cell for **coherence** (how varied and non-repetitive the text is) next to how strongly
the concept shows. Good settings sit just below where coherence drops: the strongest push that still reads well.""",
        "sweeps",
        {"sweeps.prompt": "Tell me about your weekend.", "sweeps.concept": "happy",
         "sweeps.layers": "12", "sweeps.strengths": "0.1, 0.3, 0.6, 0.8, 1.0"},
        "Run the sweep and watch the coherence score fall as the strength grows.",
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
(red = where the steered model's next-token guess differs most from the unsteered one) and at **Where it applied**
in the advanced section.""",
        "playground",
        {"playground.prompt": "Tell me about your weekend.", "playground.concept": "happy",
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
        "Run the mix and compare it with each concept alone.",
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


def build(service: Any, ctx: Any) -> None:
    gr.Markdown(INTRO, elem_id="tutorial-intro")
    buttons = []
    for i, step in enumerate(STEPS, start=1):
        with gr.Accordion(f"Step {i}. {step.title}", open=(i == 1), elem_id=f"tutorial-step-{i}",
                          elem_classes=["tutorial-step"]):
            gr.Markdown(step.body)
            btn = gr.Button(f"Try it in the {TAB_LABELS.get(step.tab, step.tab)} →", variant="primary", size="sm",
                            elem_id=f"tutorial-try-{i}", elem_classes=["try-it"])
            gr.Markdown(f"**Then:** {step.after}", elem_classes=["howto", "try-after"])
            buttons.append(btn)
    gr.Markdown("That's the whole loop: **look** (explorer) → **define** (creator) → **steer** (playground) → "
                "**tune** (sweeps) → **combine** (mixer). Your concepts are kept in the **Library** tab, where you "
                "can also export them for llama.cpp.", elem_classes=["howto"])
    ctx.register("tutorial", **{f"try_{i}": b for i, b in enumerate(buttons, start=1)})


def wire(service: Any, ctx: Any) -> None:
    """Each "Try it" writes its example into the target tab's components and switches to that tab."""
    for i, step in enumerate(STEPS, start=1):
        btn = ctx.get(f"tutorial.try_{i}")
        present = [k for k in step.fill if k in ctx.components]
        missing = [k for k in step.fill if k not in ctx.components]
        if missing:
            log.warning("tutorial step %d: skipping components that are not registered: %s", i, ", ".join(missing))
        outputs = [ctx.components[k] for k in present]
        switch = ctx.tabs is not None
        if switch:
            outputs.append(ctx.tabs)

        def fill(example=step.fill, present=present, tab=step.tab, switch=switch):
            depth = service.info().num_layers if getattr(service, "is_loaded", False) else EXAMPLE_LAYERS
            fitted = fit_example(example, depth)
            out = [fitted[k] for k in present]
            if switch:
                out.append(gr.Tabs(selected=tab))
            return out if len(out) != 1 else out[0]

        btn.click(guarded(fill), None, outputs, api_visibility="private", queue=False, show_progress="hidden")
