"""``ResidWidget``: the live logit-lens / projection / norms view of one prompt.

Python owns the session and the analysis; the browser gets a binary payload (``_meta`` +
``_payload``) and draws everything else itself (layer scrubbing, the tau grid, hover). Traits are
the small UI state, synced both ways. The browser sends back exactly two custom messages:

* ``{"type": "edit", "seq": n, "changes": {prompt?, targets?, top_k?}}``: recompute in a worker
  thread (the kernel keeps handling messages); a reply whose seq is no longer the latest is dropped;
* ``{"type": "details", "req": id, "seq": s, "pos": p}``: the full top-k list of every row at p.

Changes made from Python (``w.prompt = "..."``) compute synchronously, so ``w.analysis`` is current
when the assignment returns, and an invalid value raises and leaves the widget as it was.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from resid_widgets.analyses.result import Analysis
from resid_widgets.payload.encode import cell_details, encode_analysis
from resid_widgets.payload.protocol import METRICS
from resid_widgets.session import Session

STATIC = Path(__file__).resolve().parent.parent / "static"
#: a prompt on which the embedded demo model's lens is telling (family names fill it from layer 1 on).
DEMO_PROMPT = "Mr. and Mrs."
DEFAULT_PROMPT = "The capital of France is"


def _bundle_file(name: str) -> Path:
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(
            f"The widget's JavaScript bundle {path} is missing. Install the package with `pip install .` "
            "(which builds it) or run `npm --prefix js install && npm --prefix js run build`."
        )
    return path


def as_session(model_or_session: Any = None, *, device: str | None = None) -> Session:
    if isinstance(model_or_session, Session):
        return model_or_session
    return Session(model_or_session, device=device)


class ResidWidget(anywidget.AnyWidget):
    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    prompt = t.Unicode("").tag(sync=True)
    targets = t.List(t.Unicode()).tag(sync=True)
    top_k = t.Int(10).tag(sync=True)
    tau = t.Float(0.9).tag(sync=True)
    metric = t.Enum(METRICS, default_value="projection").tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    selected = t.List(t.Int(), maxlen=2).tag(sync=True)
    status = t.Unicode("idle").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    _static = t.Bool(False).tag(sync=True)
    _meta = t.Dict().tag(sync=True)
    _payload = t.Bytes(b"").tag(sync=True)

    def __init__(
        self,
        model_or_session: Any = None,
        prompt: str | None = None,
        *,
        targets: list[str] | None = None,
        top_k: int = 10,
        tau: float = 0.9,
        metric: str = "projection",
        device: str | None = None,
        **kwargs: Any,
    ):
        self.session = as_session(model_or_session, device=device)
        if prompt is None:
            prompt = DEMO_PROMPT if self.session.is_demo else DEFAULT_PROMPT
        self._applying = False
        self._pending: Analysis | None = None
        self._seq = 0
        self._latest_edit = 0
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resid-widget")
        self._last_job: Future | None = None
        self._state_lock = threading.RLock()
        self.analysis: Analysis = self._compute(prompt, list(targets or []), top_k, tau)
        self._applying = True
        try:
            super().__init__(prompt=prompt, targets=list(targets or []), top_k=top_k, tau=tau, metric=metric, **kwargs)
        finally:
            self._applying = False
        self.layer = self.analysis.n_layers
        self._publish(self.analysis, client_seq=0)
        self.on_msg(self._on_frontend_msg)

    # ---- computing ------------------------------------------------------------------------------
    def _compute(self, prompt, targets, top_k, tau, progress=None) -> Analysis:
        return self.session.analyze(prompt, top_k=top_k, targets=targets or None, tau=tau, progress=progress)

    def _publish(self, analysis: Analysis, *, client_seq: int) -> None:
        with self._state_lock:
            self._seq += 1
            meta, blob = encode_analysis(analysis, seq=self._seq, client_seq=client_seq, is_demo=self.session.is_demo)
            self.analysis = analysis
            with self.hold_sync():
                self._payload = blob
                self._meta = meta
                self.error = ""
                self.layer = min(self.layer, analysis.n_layers)
                if self.selected and (self.selected[1] >= analysis.n_tokens):
                    self.selected = []

    @t.validate("prompt", "targets", "top_k")
    def _validate_inputs(self, proposal):
        value = proposal["value"]
        if self._applying:
            return value
        params = {"prompt": self.prompt, "targets": list(self.targets), "top_k": self.top_k}
        params[proposal["trait"].name] = value
        try:
            self._pending = self._compute(params["prompt"], params["targets"], params["top_k"], self.tau)
        except (ValueError, TypeError) as exc:
            self.error = str(exc)
            raise
        return value

    @t.observe("prompt", "targets", "top_k")
    def _inputs_changed(self, change) -> None:
        if self._applying or self._pending is None:
            return
        analysis, self._pending = self._pending, None
        self._publish(analysis, client_seq=0)

    @t.validate("tau")
    def _validate_tau(self, proposal):
        from resid_widgets.analyses.projection import check_tau

        return check_tau(proposal["value"])

    @t.observe("tau")
    def _tau_changed(self, change) -> None:
        if self._applying or not hasattr(self, "analysis"):
            return
        # re-threshold the stored cumulative curves: no forward pass
        self._publish(self.analysis.with_tau(change["new"]), client_seq=0)

    # ---- messages from the browser --------------------------------------------------------------
    def _on_frontend_msg(self, _widget, content: dict, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "edit":
            self._submit_edit(int(content.get("seq", 0)), dict(content.get("changes") or {}))
        elif kind == "details":
            self._send_details(content)

    def _submit_edit(self, seq: int, changes: dict) -> None:
        with self._state_lock:
            self._latest_edit = max(self._latest_edit, seq)
            self.status = "computing"
            self.progress = 0.0
            params = {"prompt": self.prompt, "targets": list(self.targets), "top_k": self.top_k}
            unknown = set(changes) - params.keys()
            params.update({k: v for k, v in changes.items() if k in params})
            self._last_job = self._jobs.submit(self._run_edit, seq, params, sorted(unknown))

    def _is_latest(self, seq: int) -> bool:
        return seq == self._latest_edit

    def _run_edit(self, seq: int, params: dict, unknown: list[str]) -> None:
        if not self._is_latest(seq):
            return  # a newer edit is queued: skip the stale one entirely
        try:
            if unknown:
                raise ValueError(f"cannot edit {', '.join(unknown)} from the browser")
            targets = params["targets"]
            if isinstance(targets, str):
                targets = [x for x in targets.split(",") if x != ""]
            analysis = self._compute(
                params["prompt"], list(targets), int(params["top_k"]), self.tau, progress=self._progress_for(seq)
            )
        except Exception as exc:  # shown in the widget; the last good view stays
            with self._state_lock:
                if self._is_latest(seq):
                    self.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ValueError, TypeError)) else str(exc)
                    self.status = "idle"
            return
        with self._state_lock:
            if not self._is_latest(seq):
                return  # stale: a newer edit arrived while computing
            self._applying = True
            try:
                with self.hold_trait_notifications():
                    self.prompt = params["prompt"]
                    self.targets = list(analysis.targets)
                    self.top_k = analysis.top_k
            finally:
                self._applying = False
            self._publish(analysis, client_seq=seq)
            self.status = "idle"
            self.progress = 1.0

    def _progress_for(self, seq: int):
        def report(fraction: float, stage: str) -> None:
            if self._is_latest(seq) and (fraction >= 1.0 or abs(fraction - self.progress) >= 0.05):
                self.progress = fraction

        return report

    def _send_details(self, content: dict) -> None:
        req = content.get("req")
        try:
            reply = cell_details(self.analysis, int(content.get("pos", -1)))
            reply.update(type="details", req=req, seq=self._meta.get("seq", 0))
        except (IndexError, TypeError, ValueError) as exc:
            reply = {"type": "details", "req": req, "error": str(exc)}
        self.send(reply)

    # ---- Python API -----------------------------------------------------------------------------
    def wait(self, timeout: float | None = 30.0) -> "ResidWidget":
        """Block until edits sent from the browser have been computed (for scripts and tests)."""
        job = self._last_job
        if job is not None:
            job.result(timeout=timeout)
        return self

    def set_prompt(self, prompt: str) -> Analysis:
        self.prompt = prompt
        return self.analysis

    def save_html(self, path, *, title: str | None = None) -> Path:
        """Write one self-contained offline HTML file (data and code inline; hover and scrubbing work)."""
        from resid_widgets.widgets.export import export_html

        meta, blob = encode_analysis(self.analysis, seq=self._seq, is_demo=self.session.is_demo, full=True)
        state = {
            "prompt": self.prompt,
            "targets": list(self.targets),
            "top_k": self.top_k,
            "tau": self.tau,
            "metric": self.metric,
            "layer": self.layer,
            "selected": list(self.selected),
            "status": "idle",
            "progress": 1.0,
            "error": "",
            "_static": True,
        }
        return export_html(
            path,
            esm=_bundle_file("widget.js").read_text(encoding="utf-8"),
            css=_bundle_file("widget.css").read_text(encoding="utf-8"),
            state=state,
            meta=meta,
            blob=blob,
            title=title or f"resid_widgets: {self.prompt[:60]}",
        )

    def close(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)
        super().close()
