"""The lab's look: a calm theme and a few CSS rules for the side-by-side panes."""

import gradio as gr

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate")

CSS = """
.lab-header {display:flex; gap:1rem; align-items:center; flex-wrap:wrap}
.lab-header h1 {margin:0; font-size:1.35rem}
.howto {font-size:0.85rem; opacity:0.85; margin-top:-0.25rem}
.pane {min-height:12rem; border:1px solid var(--border-color-primary); border-radius:8px; padding:0.6rem 0.8rem;
       line-height:1.6; white-space:pre-wrap; font-size:0.95rem; overflow-wrap:anywhere}
.tok-diverge {outline:2px solid #e11d48; border-radius:3px}
.badge {display:inline-block; padding:0.1rem 0.55rem; border-radius:999px; font-size:0.8rem; font-weight:600}
.badge-ok {background:#dcfce7; color:#166534}
.badge-warn {background:#fef9c3; color:#854d0e}
.badge-bad {background:#fee2e2; color:#991b1b}
/* steering results (playground, mixer, sweeps) */
.pane-wrap {width:100%}
.pane-title {font-weight:600; font-size:0.85rem; opacity:0.8; margin:0 0 0.25rem 0.1rem}
.pane-empty {opacity:0.55; font-style:italic}
.stale {opacity:0.45; filter:grayscale(0.7); transition:opacity .2s}
.stale::before {content:'inputs changed since this result: run again'; display:block; font-size:0.75rem; font-style:italic}
.stale.stale-model::before {content:'made with the model loaded before: run again'}
.pane .tok {border-radius:3px}
.tok-gate-open {box-shadow:inset 0 -3px 0 #16a34a}
.tok-gate-shut {box-shadow:inset 0 -3px 0 #cbd5e1}
.fx-map .tok {border-radius:3px}
.fx-promoted {font-size:0.85em; color:#475569}
.applied-table td, .applied-table th {padding:1px 8px; font-size:0.85em}
.tok-after {text-decoration:underline dotted rgba(225,29,72,0.55); text-underline-offset:3px}
.run-status {display:flex; flex-wrap:wrap; gap:0.5rem; align-items:center}
.run-status .stat {font-size:0.8rem; opacity:0.8; font-variant-numeric:tabular-nums}
.settings-line, .diverge-line, .judge-detail {font-size:0.8rem; opacity:0.85; margin-top:0.2rem}
.tok-legend {font-size:0.75rem; opacity:0.8; margin-top:0.2rem}
.tok-legend .sw {padding:0 0.3rem; border-radius:3px}
#pg-results .pane, #mx-results .pane {min-height:18rem}
@media (max-width: 700px) {
  .panes-row {flex-direction:column !important}
  .panes-row > * {min-width:100% !important}
  #pg-results .pane, #mx-results .pane {min-height:6rem}
}
"""

# ---- header, tutorial, explorer, creator, library (appended) ----
CSS += """
.btn-end {align-self:flex-end !important; flex-grow:0 !important}
.picker-row {align-items:flex-end}
.lab-tagline p {margin:0.15rem 0 0.35rem; font-size:0.95rem}
.model-info p {margin:0; font-size:0.88rem}
.tutorial-step .try-it {max-width:22rem; margin-top:0.4rem}
.try-after {margin-top:0.1rem}
#lib-card table {font-size:0.85rem}
#cr-quality-summary details {margin-top:0.4rem; font-size:0.9rem}
@media (max-width: 640px) {
  .lab-header h1 {font-size:1.15rem}
  .tutorial-step .try-it {max-width:none}
}
"""
CSS += """
.run-status, #ex-summary, #ex-cosine-summary {min-height:2.6rem}
"""
CSS += """
.run-status, #ex-summary, #ex-cosine-summary {min-height:2.6rem}
"""
