"""What a learner's browser feels while a side-by-side answer streams (headless Chromium).

    .venv/bin/python -m benchmarks.bench_ui_stream [--tokens 512] [--short 128] [--stop-at 60] [--busy N]
                                                   [--trace] [--stop-only] [--json]

Serves the lab (default model, throwaway library) on a free port and drives the playground:
1. a ``--short``-token and a ``--tokens``-token stream to their end: bytes the page received
   over the network while streaming (Chrome DevTools Network events: SSE/fetch data and
   websocket frames), per generated token, and the longest main-thread task
   (PerformanceObserver ``longtask``);
2. a ``--tokens``-token stream stopped after ``--stop-at`` tokens: the delay from the Stop click
   to the last change of either answer pane.
Targets (issue 13): Stop within 1 s; no main-thread task over 200 ms; bytes grow linearly with
the length (bytes per token of the long run / of the short run near 1, not near tokens/short).
``--busy N`` starts N busy-loop processes (at the benchmark's own priority) for the whole run, so
the machine is saturated the way a shared one is; ``--trace`` records a Chromium performance trace
of the long stream and names what the longest main-thread tasks spent their time on;
``--stop-only`` measures only the stopped stream (part 2).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import emit, load_note, stderr_log  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
RUN_TIMEOUT_S = 600

# Installed before the page's own scripts: the longest main-thread task and the last time a pane changed.
INIT_JS = """
window.__bench = {longest: 0, tasks: 0, lastChange: 0};
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__bench.tasks += 1;
      window.__bench.longest = Math.max(window.__bench.longest, e.duration);
    }
  }).observe({type: 'longtask', buffered: true});
} catch (e) { window.__bench.noLongtask = String(e); }
const watch = () => {
  const panes = document.querySelectorAll('#pg-baseline, #pg-steered');
  if (panes.length < 2) { setTimeout(watch, 200); return; }
  const mo = new MutationObserver(() => { window.__bench.lastChange = performance.now(); });
  panes.forEach((p) => mo.observe(p, {childList: true, subtree: true, characterData: true}));
};
document.addEventListener('DOMContentLoaded', watch);
"""

STATUS_JS = """() => {
  const s = document.querySelector('#pg-status');
  const badge = document.querySelector('#pg-status .badge');
  const m = s ? /token (\\d+)/.exec(s.textContent) : null;
  return {step: m ? parseInt(m[1]) : 0, badge: badge ? badge.textContent : '',
          toks: document.querySelectorAll('#pg-steered .tok').length};
}"""


TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "blink"]


def longest_tasks(trace_bytes: bytes, top: int = 3, min_ms: float = 50.0) -> list[dict]:
    """The longest main-thread tasks of a Chromium trace, each with the events that filled it
    (summed self-inclusive durations by event name, and the scripts' function names)."""
    import json as _json

    raw = _json.loads(trace_bytes)["traceEvents"]
    events = [e for e in raw if e.get("ph") == "X" and "dur" in e]
    main = {(e["pid"], e["tid"]) for e in raw if e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"}
    tasks = sorted((e for e in events if e["name"] == "RunTask" and (e["pid"], e["tid"]) in main),
                   key=lambda e: -e["dur"])[:top]
    out = []
    for t in tasks:
        if t["dur"] / 1000.0 < min_ms:
            break
        inside = [e for e in events if (e["pid"], e["tid"]) == (t["pid"], t["tid"]) and e is not t
                  and t["ts"] <= e["ts"] and e["ts"] + e["dur"] <= t["ts"] + t["dur"]]
        by_name: dict[str, float] = {}
        for e in inside:
            name = e["name"]
            data = e.get("args", {}).get("data", {}) or {}
            if name == "FunctionCall" and data.get("functionName"):
                name = f"FunctionCall {data.get('functionName')} ({str(data.get('url', '')).rsplit('/', 1)[-1]})"
            by_name[name] = by_name.get(name, 0.0) + e["dur"] / 1000.0
        parts = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
        out.append({"ms": round(t["dur"] / 1000.0, 1), "inside_ms": {k: round(v, 1) for k, v in parts}})
    return out


def start_busy(n: int) -> list:
    """``n`` processes that spin until killed: a saturated machine, reproducibly."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(0, n))]


class ByteCounter:
    """Bytes received by the page (response bodies as they stream, websocket frames), via CDP."""

    def __init__(self, page):
        self.total = 0
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Network.enable")
        self.cdp.on("Network.dataReceived", lambda e: self._add(e.get("encodedDataLength") or e.get("dataLength", 0)))
        self.cdp.on("Network.webSocketFrameReceived", lambda e: self._add(len(e["response"].get("payloadData", ""))))

    def _add(self, n: int) -> None:
        self.total += int(n or 0)


def open_page(browser, url: str, tokens: int):
    from urllib.parse import quote

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.add_init_script(INIT_JS)
    page.set_default_timeout(RUN_TIMEOUT_S * 1000)
    page.goto(f"{url}?tab=playground&concept=happy&layer=12&strength=0.3&max_tokens={tokens}&prompt={quote(PROMPT)}")
    page.wait_for_selector("#pg-generate", state="visible")
    page.wait_for_function(f"() => document.querySelector('#pg-max-tokens input[type=number]').value === '{tokens}'")
    page.wait_for_timeout(500)
    return page


def _finished(status: dict) -> bool:
    return status["toks"] > 0 and not re.search(r"generating|preparing", status["badge"])


def full_stream(browser, url: str, tokens: int, trace: bool = False) -> dict:
    page = open_page(browser, url, tokens)
    counter = ByteCounter(page)
    if trace:
        browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    page.evaluate("() => { window.__bench.longest = 0; window.__bench.tasks = 0; }")
    before = counter.total
    t0 = time.perf_counter()
    page.click("#pg-generate")
    page.wait_for_function(f"() => ({STATUS_JS})().toks > 0 && !/generating|preparing/.test(({STATUS_JS})().badge)",
                           polling=250)
    wall = time.perf_counter() - t0
    page.wait_for_timeout(300)
    status = page.evaluate(STATUS_JS)
    bench = page.evaluate("() => window.__bench")
    n = max(status["toks"], status["step"])
    received = counter.total - before
    longest = longest_tasks(browser.stop_tracing()) if trace else None
    page.context.close()
    return {**({"trace": longest} if trace else {}), "tokens_requested": tokens, "tokens_generated": n, "seconds": round(wall, 2), "bytes": received,
            "bytes_per_token": round(received / max(n, 1), 1), "longest_task_ms": round(bench["longest"], 1),
            "long_tasks": bench["tasks"]}


def stopped_stream(browser, url: str, tokens: int, stop_at: int) -> dict:
    page = open_page(browser, url, tokens)
    page.click("#pg-generate")
    page.wait_for_function(f"() => ({STATUS_JS})().step >= {stop_at}", polling=50)
    clicked = page.evaluate("() => { const t = performance.now(); document.querySelector('#pg-stop').click(); return t; }")
    step_at_click = page.evaluate(STATUS_JS)["step"]
    # the run has ended once the panes show the final (coloured) view; then wait for quiet
    page.wait_for_function(f"() => ({STATUS_JS})().toks > 0 && !/generating|preparing/.test(({STATUS_JS})().badge)",
                           polling=100)
    page.wait_for_timeout(2000)
    bench = page.evaluate("() => window.__bench")
    status = page.evaluate(STATUS_JS)
    page.context.close()
    return {"stop_clicked_at_token": step_at_click, "tokens_shown": status["toks"], "badge": status["badge"],
            "stop_to_last_change_s": round((bench["lastChange"] - clicked) / 1000.0, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--short", type=int, default=128)
    ap.add_argument("--stop-at", type=int, default=60)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes to run alongside (a loaded machine)")
    ap.add_argument("--trace", action="store_true", help="name what the long stream's longest tasks did")
    ap.add_argument("--stop-only", action="store_true", help="only the stopped stream (part 2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        emit({"skipped": f"no Chromium at {CHROMIUM} (apt-get install chromium)"}, args.json,
             [f"skipped: no Chromium at {CHROMIUM}"])
        return 0
    import os

    from playwright.sync_api import sync_playwright

    note = load_note()
    out = sys.stdout
    sys.stdout = sys.stderr  # the server's own prints must not mix with the JSON
    os.environ["STEERING_LAB_LIBRARY"] = tempfile.mkdtemp(prefix="steering-lab-bench-library-")
    from app.ui.server import serve
    from tests.lab_server import free_port

    port = free_port()
    demo = serve(port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    busy = start_busy(args.busy)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                short = long = None
                if not args.stop_only:
                    stderr_log("short stream ...")
                    short = full_stream(browser, url, args.short)
                    stderr_log(f"  {short}\nlong stream ...")
                    long = full_stream(browser, url, args.tokens, trace=args.trace)
                stderr_log("stopped stream ...")
                stop = stopped_stream(browser, url, args.tokens, args.stop_at)
                stderr_log(f"  {stop}")
            finally:
                browser.close()
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
        demo.close()
        sys.stdout = out
    if long is None or short is None:
        result = {**note, "busy_processes": args.busy, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "stop": stop,
                  "targets": {"stop within 1 s": "OK" if stop["stop_to_last_change_s"] <= 1.0 else "MISSED"}}
        emit(result, args.json, [f"{k}: {v}" for k, v in result.items()])
        return 0
    growth = long["bytes_per_token"] / max(short["bytes_per_token"], 1e-9)
    longest = max(short["longest_task_ms"], long["longest_task_ms"])
    result = {
        **note, "busy_processes": args.busy, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "short": short, "long": long, "stop": stop,
        "bytes_per_token_long_over_short": round(growth, 3),
        "length_ratio": round(long["tokens_generated"] / max(short["tokens_generated"], 1), 2),
        "longest_main_thread_task_ms": longest,
        "targets": {
            "stop within 1 s": "OK" if stop["stop_to_last_change_s"] <= 1.0 else "MISSED",
            "no main-thread task over 200 ms": "OK" if longest <= 200 else "MISSED",
            "bytes grow linearly (per-token ratio <= 1.5)": "OK" if growth <= 1.5 else "MISSED",
        },
    }
    emit(result, args.json, [f"{k}: {v}" for k, v in result.items()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
