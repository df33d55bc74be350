"""What the page tells the user about their own inputs: clamped values and errors that stay in place.

Clamped values: a typed 100000 in "Max tokens" runs with 512, and the page says so.

Gradio's slider clamps a typed number to its range in the browser when the box loses focus, so
the server never sees the typed value and cannot announce it. This script (run once on page
load, ``launch(js=...)``) watches every slider's number box: while a typed value is outside the
slider's range, a note under the slider says which value is used instead; it goes when an
in-range value is typed or the slider is set to another value (a Try it, a link, a model switch).

Errors: handlers wrapped in ``app.ui.errors.shows_error`` write the message where their result
goes; components with ``KEPT_ERROR`` in their classes then hide Gradio's "Error" overlay, which
would otherwise sit on top of that message (progress while running is still shown).
"""

from __future__ import annotations

NOTE_CLASS = "clamp-note"
KEPT_ERROR = "kept-error"

CLAMP_JS = """
() => {
  const NOTE = "%(cls)s";
  const fmt = (x) => (Math.abs(x) >= 1e6 || (x !== 0 && Math.abs(x) < 1e-3)) ? x.toExponential(2) : String(+x.toFixed(6));
  const noteOf = (wrap, make) => {
    let n = wrap.querySelector(":scope > ." + NOTE);
    if (!n && make) { n = document.createElement("div"); n.className = NOTE; n.setAttribute("role", "status"); wrap.appendChild(n); }
    return n;
  };
  const check = (box) => {
    const wrap = box.closest(".head") && box.closest(".head").parentElement;
    if (!wrap) return;
    const v = parseFloat(box.value), lo = parseFloat(box.min), hi = parseFloat(box.max);
    if (!isFinite(v) || !(isFinite(lo) || isFinite(hi)) || (!(v > hi) && !(v < lo))) {
      const old = noteOf(wrap, false); if (old) old.remove(); return;
    }
    const used = v > hi ? hi : lo;
    const n = noteOf(wrap, true);
    n.dataset.used = String(used);
    n.textContent = `${box.value.trim()} is ${v > hi ? "above the maximum" : "below the minimum"} of this setting: ` +
                    `${fmt(used)} is used.`;
  };
  const boxSel = "input[data-testid=number-input]";
  const isSliderBox = (t) => t && t.matches && t.matches(boxSel) && t.closest(".head");
  document.addEventListener("input", (e) => { if (isSliderBox(e.target)) check(e.target); }, true);
  // the slider was set to something else (by the lab, or by dragging it): the note no longer applies
  setInterval(() => {
    document.querySelectorAll("." + NOTE).forEach((n) => {
      const box = n.parentElement && n.parentElement.querySelector(boxSel);
      const range = n.parentElement && n.parentElement.querySelector("input[type=range]");
      if (!box || document.activeElement === box) return;
      const v = parseFloat(box.value), used = parseFloat(n.dataset.used);
      const r = range ? parseFloat(range.value) : v;
      if (!(v === used || isNaN(v)) || r !== used) n.remove();
    });
  }, 1000);
}
""" % {"cls": NOTE_CLASS}

FEEDBACK_CSS = f"""
.{NOTE_CLASS} {{font-size:0.8rem; color:#854d0e; background:#fef9c3; border-radius:6px; padding:0.15rem 0.5rem;
               margin-top:0.3rem}}
.{KEPT_ERROR} [data-testid=status-tracker]:has(> span.error) {{display:none !important}}
"""
