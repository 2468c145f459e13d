"""ResidWidget's steering panel, Python side: the ``steer`` trait turned into a ``Steer`` intervention, the
steered ("after") analysis next to the plain ("before") one, and greedy continuations before | after.

The ``steer`` trait (limits: protocol.json ``traits.steer.fields``, checked by payload/contract.py on both ways
in) is an edit trait: set from Python or sent by the browser as ``{"type": "edit", "changes": {"steer": ...}}``,
it goes through the widget's ONE edit path (ordering, debouncing in the view, cancellation, per-lens cache).
An edit computes the plain analysis as before (cached, streamed) and, when ``steer.on``, the steered one
with ``Session.stream(prompt, intervention=Steer(...))`` (the session reuses the key/value prefix before the
first steered position of its previous run, so moving α recomputes only from there). Both reach the view:
``_meta``/``_payload`` (before) and ``_steer_meta``/``_steer_payload`` (after, the same codec; its header's
``pair_seq`` names the ``_meta`` seq it belongs to), so with steering on the payload synced is twice the size.

Direction sources (``steer.source``), v [d_model]:

* ``unembed``  ``W_U[:, token]``;
* ``jacobian`` ``J_rᵀ W_U[:, token]`` at r = first steered layer + 1 (the widget's lens must be ``jacobian``);
* ``writer``   an attribution writer's output on the widget's prompt (``writer_direction``: ``L{l}H{h}`` or
  ``{l}_mlp_out``, at ``writer_pos`` or its mean over positions when ``writer_pos`` is -1);
* ``named``    a vector registered with ``w.add_direction(name, v)`` (a task vector, a contrast pair, any tensor).

Positions: ``all`` (None: every position, the continuation's new tokens too), ``from`` (``position``..T-1 of
the prompt) or ``at`` (``[position]``, the pinned cell's). α: raw ``h + α v`` or norm-matched
``h + α · median_pos ‖h‖ · v/‖v‖`` (``norm_match``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import traitlets as t

from resid_widgets.analyses.result import Analysis, trim_cache
from resid_widgets.interventions.core import Steer
from resid_widgets.interventions.directions import Direction, as_direction, jacobian_direction, unembed_direction, writer_direction
from resid_widgets.payload.contract import Checked, check
from resid_widgets.payload.encode import cell_details, encode_delta

FORMULAS = {False: "h ← h + α·v", True: "h ← h + α·median‖h‖·v/‖v‖"}
#: steering results kept (moving α back and forth, switching off and on again: no recomputation)
STEER_CACHE_SIZE = 3


@dataclass(frozen=True)
class Steered:
    """What one steering edit computed: the spec it ran, the intervention, the after analysis, continuations."""

    spec: dict
    key: tuple
    steer: Steer
    after: Analysis
    continuation: dict

    @property
    def nbytes(self) -> int:
        return int(getattr(self.after, "nbytes", 0))


def _positions(spec: dict, n_tokens: int) -> list[int] | None:
    kind, p = spec["positions"], int(spec["position"])
    if kind == "all":
        return None
    if not 0 <= p < n_tokens:
        raise ValueError(f"steer.position {p} is out of range for a prompt of {n_tokens} tokens (0..{n_tokens - 1})")
    return list(range(p, n_tokens)) if kind == "from" else [p]


class SteerPanel(t.HasTraits):
    """Mixed into ResidWidget: the steering traits and what computes and publishes the after payload."""

    steer = Checked("steer").tag(sync=True)
    _steer_meta = t.Dict().tag(sync=True)
    _steer_payload = t.Bytes(b"").tag(sync=True)
    _steer_info = t.Dict().tag(sync=True)

    # ---- directions ------------------------------------------------------------------------------
    def add_direction(self, name: str, direction: Any) -> Direction:
        """Register ``direction`` (a Direction, tensor, array or list [d_model]) as ``name`` for the panel's
        "named" source; a steering spec using that name is recomputed."""
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ValueError(f"a direction's name is text of 1 to 100 characters, got {name!r}")
        try:  # a wrong width, NaN / inf, norm 0, not numbers: raised here and shown in the banner, nothing else changes
            d = as_direction(direction, name).check_width(self.session.d_model)
        except (TypeError, ValueError) as exc:
            self._show_trait_error(str(exc))
            raise
        self._named()[name] = d
        self._steer_info = {**self._steer_info, "directions": sorted(self._named())}
        spec = self.steer
        if spec and spec.get("on") and spec.get("source") == "named" and spec.get("name") == name:
            self._steer_refresh()
        return d

    def _named(self) -> dict[str, Direction]:
        if "_directions" not in self.__dict__:
            self.__dict__["_directions"] = {}
        return self.__dict__["_directions"]

    def _steer_refresh(self) -> None:
        analysis = self._edit({"steer": self.steer}, sync=True)
        if analysis is not None:
            self._publish(analysis, client_seq=0)

    def direction_for(self, spec: dict, prompt: str, lens: str) -> Direction:
        """The direction ``spec`` names (see the module docstring)."""
        s, source = self.session, spec["source"]
        if source in ("unembed", "jacobian") and not spec["token"]:
            raise ValueError(f"steer.token is empty: type the token whose {'unembedding' if source == 'unembed' else 'Jacobian-lens vector'} to steer along")
        if source == "jacobian" and lens != "jacobian":
            raise ValueError("the jacobian direction source needs the widget's lens to be the Jacobian lens (lens = 'jacobian'): "
                             "choose another direction source, or the Jacobian lens")
        if source in ("unembed", "jacobian"):
            try:
                return unembed_direction(s, spec["token"]) if source == "unembed" else jacobian_direction(s, spec["token"], min(spec["layers"]))
            except ValueError as exc:  # the token resolver speaks of targets
                raise ValueError(str(exc).replace("targets must be single tokens", "the steering token must be a single token")) from exc
        if source == "writer":
            pos = None if spec["writer_pos"] < 0 else spec["writer_pos"]
            return writer_direction(s, prompt, spec["writer"], pos)
        named = self._named()
        if spec["name"] not in named:
            have = ", ".join(sorted(named)) or "none yet: w.add_direction(name, vector)"
            raise ValueError(f"unknown direction {spec['name']!r}; registered directions: {have}")
        return named[spec["name"]]

    # ---- computing -------------------------------------------------------------------------------
    def _steer_lookup(self, key: tuple) -> Steered | None:
        return self.__dict__.get("_steer_cache", {}).get(key)

    def _steer_store(self, key: tuple, res: Steered) -> None:
        """Steering results have their own cache (not the edit queue's, whose few places hold the plain analyses:
        α moves would evict the plain one and recompute it)."""
        cache = self.__dict__.setdefault("_steer_cache", {})
        cache[key] = res
        trim_cache(cache, STEER_CACHE_SIZE)  # and at most CACHE_BYTES (Steered.nbytes: its after analysis)

    def _steer_key(self, spec: dict, params: dict) -> tuple:
        named = self._named().get(spec.get("name", "")) if spec.get("source") == "named" else None
        return (json.dumps(spec, sort_keys=True), named.key() if named is not None else None,
                params["prompt"], tuple(params["targets"] or ()), int(params["top_k"]), params["lens"], self.session._params_key())

    def _steer_cached(self, params: dict) -> bool:
        """Nothing to compute for the steering part of an edit with these parameters."""
        try:
            spec = check("steer", params.get("steer", {}))
        except ValueError:
            return False
        if not spec or not spec["on"]:
            return True
        return self._steer_lookup(self._steer_key(spec, params)) is not None

    def _steered(self, params: dict, plain: Analysis, cancelled=None) -> Steered | None:
        """The after analysis of checked edit parameters ``params`` (None when steering is off); raises a
        clear ValueError / TypeError on a bad direction, layer, position or token."""
        spec = params.get("steer") or {}
        if not spec or not spec["on"]:
            return None
        key = self._steer_key(spec, params)
        hit = self._steer_lookup(key)
        if hit is not None:
            return hit
        prompt = params["prompt"]
        direction = self.direction_for(spec, prompt, params["lens"])
        steer = Steer(direction, spec["layers"], spec["alpha"], positions=_positions(spec, plain.n_tokens),
                      norm_match=spec["norm_match"])
        steer.check(self.session, plain.n_tokens)
        # α = 0 installs no hook: the after analysis IS the plain one (bit for bit, no second pass)
        after = plain if not steer.key() else self._after_run(params, plain, steer, cancelled)
        continuation = {}
        if spec["n_continue"]:
            n = spec["n_continue"]
            continuation = {"n": n, "before": self.session.continue_text(prompt, n).text,
                            "after": self.session.continue_text(prompt, n, intervention=steer).text}
        out = Steered(spec, key, steer, after, continuation)
        self._steer_store(key, out)
        return out

    def _after_run(self, params: dict, plain: Analysis, steer: Steer, cancelled=None) -> Analysis:
        """The steered analysis, streamed to the views like the lens (``_after_delta``) and its progress shown
        meanwhile: ``_steer_info.computing`` (true) and ``_steer_info.progress`` (0..1, steps of ≥ 5 %); the next
        publish (or a failure) clears them. A newer edit cancels it between lens blocks (``cancelled``)."""
        updates = self.session.stream(params["prompt"], top_k=params["top_k"], targets=params["targets"] or None, tau=plain.tau,
                                      lens=params["lens"], cancelled=cancelled, intervention=steer)
        self._steer_info = {**self._steer_info, "computing": True, "progress": 0.0}
        last, shown, pair_seq = None, 0.0, self._queue.seq_of(plain) or self._meta.get("seq", 0)
        try:
            for last in updates:
                self._after_delta(last, pair_seq, steer)
                if last.fraction - shown >= 0.05 and last.stage != "done":
                    shown = last.fraction
                    self._steer_info = {**self._steer_info, "progress": round(float(shown), 3)}
        except BaseException:
            self._steer_info = {k: v for k, v in self._steer_info.items() if k not in ("computing", "progress")}
            raise
        assert last is not None and last.stage == "done"
        return last.analysis

    def _after_delta(self, update, pair_seq: int, steer: Steer) -> None:
        """One stage of the after run to the views: a ``delta`` (stream.ts) with ``run: "after"``, numbered in the
        after payloads' own sequence (``seq`` / ``base_seq`` are after_seq numbers, the final ``_steer_meta`` keeps the
        stream's), paired with the plain payload ``pair_seq``. Positions kept from an after run the views were sent
        (α moved: the session reused the prefix before the first steered position) do not travel again."""
        if getattr(self, "comm", None) is None:
            return
        if update.stage == "begin":
            base_seq = self._after_seq_of(update.base) if update.base is not None else 0
            if not base_seq:  # the views never saw that analysis as an after payload: send every position
                update = dataclasses.replace(update, keep=0, positions=(0, update.analysis.n_tokens))
            after_seq = self._after_sent(update.analysis)
            self.__dict__["_after_live"] = (after_seq, pair_seq, update.analysis, steer)
        else:
            after_seq, base_seq = self._after_seq_of(update.analysis), 0
        content, blob = encode_delta(update, seq=after_seq, base_seq=base_seq, is_demo=self.session.is_demo)
        content.update(run="after", pair_seq=pair_seq)
        if update.stage == "begin":
            content["meta"].update(self._header_extras(update.analysis), pair_seq=pair_seq, after_seq=after_seq, steer=steer.describe())
        try:
            self.send(content, buffers=[blob])
        except Exception:  # the widget was closed meanwhile
            pass

    def _after_seq_of(self, analysis: Analysis | None) -> int:
        """The after_seq ``analysis`` was sent as (streamed or published), 0 if none of the last few."""
        return next((n for a, n in self.__dict__.get("_after_sent_list", []) if a is analysis), 0)

    def _after_sent(self, analysis: Analysis) -> int:
        """The after_seq of ``analysis``: the one it was streamed or published as, else a new one (remembered)."""
        known = self._after_seq_of(analysis)
        if known:
            return known
        n = self.__dict__.get("_after_count", 0) + 1
        self.__dict__["_after_count"] = n
        self.__dict__["_after_sent_list"] = [*self.__dict__.get("_after_sent_list", [])[-7:], (analysis, n)]
        return n

    # ---- publishing ------------------------------------------------------------------------------
    def _steer_publish(self, analysis: Analysis, seq: int) -> None:
        """Inside ``_publish``'s hold_sync: the after payload paired with ``analysis`` (sent as ``seq``), or none."""
        res: Steered | None = self.__dict__.get("_steer_result")
        if res is None or res.after.n_tokens != analysis.n_tokens or res.after.prompt != analysis.prompt:
            self.__dict__.pop("_after_shown", None)
            if self._steer_meta:
                self._steer_payload, self._steer_meta = b"", {}
            self._steer_info = {k: v for k, v in self._steer_info.items() if k == "directions"}
            return
        after = res.after if res.after.tau == analysis.tau else res.after.with_tau(analysis.tau)
        after_seq = self._after_sent(res.after)  # names this after payload (details of its cells); a streamed one keeps its number
        meta, blob = self._encode(after, seq=seq)
        meta.update(pair_seq=seq, after_seq=after_seq, steer=res.steer.describe())
        self.__dict__["_after_shown"] = (after_seq, seq, after, res.steer)
        self._steer_payload, self._steer_meta = blob, meta
        self._steer_info = {"directions": sorted(self._named()), "direction": self._describe(res),
                            "continuation": res.continuation}

    def _describe(self, res: Steered) -> dict:
        d = res.steer.direction
        return {**res.steer.describe(), "formula": FORMULAS[res.steer.norm_match], "source": d.source, "name": d.name,
                "vector": [float(x) for x in np.asarray(d.vector, dtype=np.float64)]}

    def _steer_done(self, params: dict, res: Steered | None) -> None:
        """An edit succeeded: its steering result is what the next publish pairs with the plain payload."""
        self.__dict__["_steer_result"] = res

    def _after_details(self, ask) -> dict:
        """A ``details`` request with ``run: "after"`` (contract.parse_details): the full top-k of every row at
        ``ask.pos`` of the steered run shown (the after payload ``ask.after_seq``, paired with ``ask.seq``)."""
        shown, live = self.__dict__.get("_after_shown"), self.__dict__.get("_after_live")
        if live is not None and ask.after_seq == live[0] and (shown is None or shown[0] != live[0]):
            shown = live  # the after run being streamed (its cells not read yet come back as -1)
        if shown is None:
            raise ValueError("no steered run is shown (steering is off): there is no after top-k to list")
        after_seq, pair_seq, after, _ = shown
        if ask.seq != pair_seq or (ask.after_seq and ask.after_seq != after_seq):
            raise ValueError(f"the steered run asked about (payload {ask.seq}, after {ask.after_seq}) is no longer shown; "
                             f"the one shown is payload {pair_seq}, after {after_seq}")
        reply = cell_details(after, ask.pos)
        reply.update(seq=pair_seq, run="after", after_seq=after_seq)
        return reply

    @property
    def steered(self) -> Analysis | None:
        """The after analysis shown (None when steering is off)."""
        res = self.__dict__.get("_steer_result")
        return None if res is None else res.after

    def _steer_export(self) -> dict:
        """The steering traits for save_html's offline page (the after payload as base64 text)."""
        import base64

        shown = self.__dict__.get("_after_shown")
        if not self._steer_meta or shown is None:
            return {"steer": dict(self.steer)}
        # the after payload with its full top-k (like the plain one), so the offline tooltip lists the steered run's
        after_seq, pair_seq, after, steer = shown
        meta, blob = self._encode(after, seq=pair_seq, full=True)
        meta.update(pair_seq=pair_seq, after_seq=after_seq, steer=steer.describe())
        return {"steer": dict(self.steer), "_steer_meta": meta, "_steer_info": self._steer_info,
                "_steer_payload_b64": base64.b64encode(blob).decode("ascii")}


__all__ = ["FORMULAS", "SteerPanel", "Steered"]
