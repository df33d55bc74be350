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
"""
