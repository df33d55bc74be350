"""Bounded streaming to the browser: every streaming handler sends its updates through here.

A model step takes ~50-100 ms, and each update the page receives costs a diff on the server, a
websocket/SSE message and a re-render on the page's main thread. Re-rendering every step's full
token-coloured HTML made the work per update grow with the length and the whole stream's with
its square; on a busy machine the page stopped answering. So handlers pass what they stream
through ``Coalesced`` (at most ``MAX_UPDATES_PER_S`` updates reach the page; the newest item is
always the one sent) and send plain text while streaming, which only grows at its end (Gradio
then sends just the appended text), and the expensive view once, at the end. A Stop acts at once
(``until_stopped``): the view is finished from what has arrived, without waiting for the model
step under way, and what arrives after the Stop is dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

import gradio as gr

from app.ui.downloads import out_dir
from app.ui.errors import message_of
from app.ui.present import generation as present
from app.ui.present import insight as fx
from app.ui.widgets import file_stem

T = TypeVar("T")

MAX_UPDATES_PER_S = 10.0


class Throttle:
    """``ready()`` is true at most once per ``interval`` seconds (the first call always)."""

    def __init__(self, interval: float = 1.0 / MAX_UPDATES_PER_S, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self._sent: Optional[float] = None

    def ready(self) -> bool:
        now = self.clock()
        if self._sent is not None and now - self._sent < self.interval:
            return False
        self._sent = now
        return True


class Coalesced(Generic[T]):
    """Iterate ``items`` fully but pass on only those a ``Throttle`` lets through.

    ``last`` is the newest item seen (sent or not), ``seen`` / ``sent`` count them: after the loop,
    render ``last`` as the final view, since it may have been held back.
    """

    def __init__(self, items: Iterable[T], interval: float = 1.0 / MAX_UPDATES_PER_S,
                 clock: Callable[[], float] = time.monotonic):
        self.items = items
        self.throttle = Throttle(interval, clock)
        self.last: Optional[T] = None
        self.seen = 0
        self.sent = 0

    def __iter__(self) -> Iterator[T]:
        for item in self.items:
            self.last = item
            self.seen += 1
            if self.throttle.ready():
                self.sent += 1
                yield item


_END = object()


def until_stopped(items: Iterable[T], token: Any, poll_s: float = 0.05) -> Iterator[T]:
    """Iterate ``items`` (on a helper thread) until they end or ``token`` is cancelled.

    A cancel is noticed within ``poll_s`` even while the next item is still being computed (one
    model step: up to a second on a busy machine), and nothing that arrives after it is passed
    on; the producer stops at its own next check. Errors from ``items`` are raised here. Leaving
    early (the page went away) cancels ``token``."""
    q: "queue.Queue[Any]" = queue.Queue()

    def pump() -> None:
        try:
            for item in items:
                q.put((True, item))
                if token.cancelled:
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((False, exc))
        finally:
            q.put(_END)

    threading.Thread(target=pump, name="steering-lab-until-stopped", daemon=True).start()
    ended = False
    try:
        while not token.cancelled:
            try:
                got = q.get(timeout=poll_s)
            except queue.Empty:
                continue
            if got is _END:
                break
            ok, value = got
            if not ok:
                raise value
            if token.cancelled:
                break
            yield value
        ended = True
    finally:
        if not ended:
            token.cancel()


def throttled(report: Callable[..., Any], interval: float = 1.0 / MAX_UPDATES_PER_S,
              clock: Callable[[], float] = time.monotonic) -> Callable[[int, int, str], None]:
    """Wrap a ``progress(done, total, desc)`` callback: at most ``interval``-spaced calls, and the last step."""
    throttle = Throttle(interval, clock)

    def call(done: int, total: int, desc: str) -> None:
        if done >= total or throttle.ready():
            report(done, total, desc)

    return call


# ---- per-browser-session runs and the side-by-side stream (playground, mixer, sweeps) ------
# The tokens live in the lab's one JobRunner, keyed by the page's session id; the playground, the
# mixer and the sweeps share one scope (a page's Stop reaches whichever of them runs), the
# creator's extraction has its own.
RUN_SCOPE = "run"


def session_id(request: Optional[gr.Request], scope: str = RUN_SCOPE) -> str:
    """The key of this page's runs in the lab: its Gradio session and a scope."""
    return f"{getattr(request, 'session_hash', None) or ''}/{scope}"


def write_downloads(record: dict, stem: str) -> tuple[str, str]:
    folder = out_dir("generation")
    md = folder / f"{stem}.md"
    js = folder / f"{stem}.json"
    md.write_text(present.comparison_markdown(record), encoding="utf-8")
    js.write_text(present.comparison_json(record), encoding="utf-8")
    return str(md), str(js)


def stream_comparison(service: Any, req: Any, request: Optional[gr.Request], insight: bool = False) -> Iterator[tuple]:
    """Yield (baseline_html, steered_html, status_html, md_file, json_file) while both answers grow.

    With ``insight`` two more outputs come before the downloads: the effect map and "where it applies"."""
    for out in _stream_comparison(service, req, request):
        if not insight:
            yield out[:3] + out[5:]
        else:
            yield out


def _stream_comparison(service: Any, req: Any, request: Optional[gr.Request]) -> Iterator[tuple]:
    session = session_id(request)
    token = service.start(session)
    keep = (gr.update(), gr.update())
    max_tokens = req.params.max_tokens
    waiting = present.empty_panes("Waiting for the model…")
    yield (*waiting, present.badge_html("warn", "preparing the concept and the prompt…"),
           fx.effect_map_html([], "Computing the effect map after the run…"), fx.applied_html([]),
           gr.DownloadButton(value=None, interactive=False), gr.DownloadButton(value=None, interactive=False))
    # <= 10 updates/s, plain text until done; a Stop ends the stream at once
    stream = Coalesced(until_stopped(service.steer(req, token=token), token))
    try:
        for chunk, settings in stream:
            view = present.streaming_view(chunk, settings, max_tokens)
            yield view.baseline_html, view.steered_html, view.status_html, *keep, gr.update(), gr.update()
    except Exception as exc:  # leave no "preparing…" behind; @guarded turns exc into the message toast
        yield (*present.empty_panes("Nothing was generated."), present.badge_html("bad", message_of(exc)),
               *keep, gr.update(), gr.update())
        raise
    finally:
        service.finish(session, token)
    last = stream.last
    if last is None:
        yield (*present.empty_panes("Stopped before the first token."), present.badge_html("warn", "stopped"),
               *keep, gr.update(), gr.update())
        return
    chunk, settings = last
    if token.cancelled and not chunk.done:
        chunk.stats = {**(chunk.stats or {}), "steered_finish": "cancelled"}
        chunk.done = True
    view = present.render_comparison(chunk, settings, max_tokens)
    record = present.comparison_record(chunk, settings, req.prompt, req.system)
    stem = f"steering-{file_stem(str(settings.get('concept', 'concept')))}"
    md, js = write_downloads(record, stem)
    guidance = settings.get("guidance") if settings.get("mode") == "logits" else None
    yield (view.baseline_html, view.steered_html, view.status_html,
           fx.effect_map_html(chunk.effects, "", guidance), fx.applied_html(chunk.applied, settings),
           gr.DownloadButton(value=md, interactive=True), gr.DownloadButton(value=js, interactive=True))


def arm_session(service: Any, scope: str = RUN_SCOPE) -> Callable[[gr.Request], None]:
    """The click's first, unqueued handler: arms this page's token, so Stop reaches the run even while it waits."""

    def arm_session(request: gr.Request) -> None:  # the outer name: Gradio names the event after it
        service.arm(session_id(request, scope))

    return arm_session


def stop_session(service: Any, scope: str = RUN_SCOPE) -> Callable[[gr.Request], None]:
    """The Stop handler: stops this page's run; the run itself then shows 'stopped' with the partial answers."""

    def stop_session(request: gr.Request) -> None:
        service.stop(session_id(request, scope))

    return stop_session
