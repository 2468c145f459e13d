"""The widget's typed contract, checked in ONE place for both ways in: a trait set from Python and a
value or message from the browser. The limits live in ``protocol.json`` (``traits``, ``messages``).

``check(name, value)`` returns the value in its canonical type or raises ``ContractError`` (a
``TraitError`` so traitlets rolls a browser ``update`` back, and a ``ValueError`` for callers that
catch those) with a message that names the trait, the limits and the value::

    >>> check("top_k", 101)
    Traceback (most recent call last):
    ContractError: top_k must be a whole number from 1 to 100, got 101
    >>> check("tau", 0.5)
    0.5
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from traitlets import TraitError, TraitType

from resid_widgets.payload.protocol import LENSES, MESSAGES, METRIC_SPECS, TRAITS


class ContractError(TraitError, ValueError):
    """A value or message outside the widget's contract (protocol.json)."""


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _whole(name: str, value: Any, what: str) -> int:
    """An integer (bool and non-integral numbers refused; 5.0 accepted as 5)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ContractError(f"{name} must be {what}, got {type(value).__name__} {_short(value)}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(float(value)) or float(value) != int(value):
        raise ContractError(f"{name} must be {what}, got {_short(value)}")
    return int(value)


def _int(name: str, spec: dict, value: Any, rows: int | None) -> int:
    lo = spec.get("min", -math.inf)
    hi = spec.get("max", math.inf)
    if spec.get("max_from") == "n_rows":
        hi = math.inf if rows is None else rows - 1
        what = "a residual row 0..%s (0 = embeddings)" % ("R-1" if rows is None else rows - 1)
    else:
        what = f"a whole number from {lo} to {hi}"
    v = _whole(name, value, what)
    if not lo <= v <= hi:
        raise ContractError(f"{name} must be {what}, got {v}")
    return v


def _float(name: str, spec: dict, value: Any) -> float:
    lo, hi = spec.get("min_exclusive"), spec.get("max")
    what = f"a number in ({lo}, {hi}]" if lo is not None else f"a number up to {hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ContractError(f"{name} must be {what}, got {type(value).__name__} {_short(value)}")
    v = float(value)
    if not math.isfinite(v) or (lo is not None and v <= lo) or (hi is not None and v > hi):
        raise ContractError(f"{name} must be {what}, got {v}")
    return v


def _str(name: str, spec: dict, value: Any) -> str:
    if not isinstance(value, str):
        raise ContractError(f"{name} must be text, got {type(value).__name__} {_short(value)}")
    if len(value) > spec.get("max_length", math.inf):
        raise ContractError(f"{name} is too long: {len(value):,} characters (at most {spec['max_length']:,})")
    if len(value.strip()) < spec.get("min_length", 0):
        raise ContractError(f"{name} is empty: type some text to analyse")
    return value


def _targets(name: str, spec: dict, value: Any) -> list:
    """A list of target tokens (text, or token ids); a comma-separated string is split."""
    if isinstance(value, str):
        value = [x for x in value.split(",") if x != ""]
    if not isinstance(value, (list, tuple)):
        raise ContractError(f"{name} must be a list of tokens, got {type(value).__name__} {_short(value)}")
    if len(value) > spec["max_items"]:
        raise ContractError(f"{name}: at most {spec['max_items']} targets, got {len(value):,}")
    out = []
    for t in value:
        if isinstance(t, numbers.Integral) and not isinstance(t, bool):
            out.append(int(t))
        elif isinstance(t, str) and len(t) <= spec["max_length"]:
            out.append(t)
        else:
            raise ContractError(f"{name} must hold token texts (at most {spec['max_length']} characters) or token ids, got {_short(t)}")
    return out


def _enum(name: str, spec: dict, value: Any) -> str:
    values = spec["values"]
    choices = {"lenses": LENSES, "metrics": tuple(METRIC_SPECS)}.get(values, values) if isinstance(values, str) else values
    if not isinstance(value, str) or value not in choices:
        raise ContractError(f"{name} must be one of {', '.join(choices)}, got {_short(value)}")
    return value


def _cell(name: str, value: Any, rows: int | None, tokens: int | None) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) not in (0, 2):
        raise ContractError(f"{name} must be [] or [row, pos], got {_short(value)}")
    if not value:
        return []
    row = _whole(name, value[0], "[] or [row, pos]")
    pos = _whole(name, value[1], "[] or [row, pos]")
    if rows is not None and not (0 <= row < rows and 0 <= pos < (tokens or 0)):
        raise ContractError(
            f"{name} must be [] or [row, pos] with row in 0..{rows - 1} and pos in 0..{(tokens or 0) - 1}, got {[row, pos]}"
        )
    return [row, pos]


def _field(name: str, spec: dict, value: Any) -> Any:
    """One field of an object trait (protocol.json ``fields``): bool, enum, str, int, float (``abs_max``), int_list."""
    kind = spec["type"]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ContractError(f"{name} must be true or false, got {_short(value)}")
        return value
    if kind == "float" and "abs_max" in spec:
        m = spec["abs_max"]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or abs(float(value)) > m:
            raise ContractError(f"{name} must be a finite number from -{m} to {m}, got {_short(value)}")
        return float(value)
    if kind == "int_list":
        if not isinstance(value, (list, tuple)) or not value or len(value) > spec["max_items"]:
            raise ContractError(f"{name} must be a list of 1 to {spec['max_items']} whole numbers, got {_short(value)}")
        return [_int(name, spec, v, None) for v in value]
    return check_spec(name, spec, value)


def _object(name: str, spec: dict, value: Any) -> dict:
    """An object trait with ``fields``: {} stays {}; otherwise every field checked, missing ones defaulted."""
    if not isinstance(value, dict):
        raise ContractError(f"{name} must be an object, got {type(value).__name__} {_short(value)}")
    if not value:
        return {}
    fields = spec["fields"]
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise ContractError(f"{name} has unknown fields {', '.join(_short(k, 30) for k in unknown)} (fields: {', '.join(fields)})")
    return {k: _field(f"{name}.{k}", f, value[k]) if k in value else f["default"] for k, f in fields.items()}


def check_spec(name: str, spec: dict, value: Any, *, rows: int | None = None, tokens: int | None = None) -> Any:
    """``value`` checked against a protocol.json trait or field entry ``spec``."""
    kind = spec["type"]
    if kind == "int":
        return _int(name, spec, value, rows)
    if kind == "float":
        return _float(name, spec, value)
    if kind == "str":
        return _str(name, spec, value)
    if kind == "str_list":
        return _targets(name, spec, value)
    if kind == "enum":
        return _enum(name, spec, value)
    if kind == "cell":
        return _cell(name, value, rows, tokens)
    if kind == "object" and "fields" in spec:
        return _object(name, spec, value)
    return value


def check(name: str, value: Any, *, rows: int | None = None, tokens: int | None = None) -> Any:
    """``value`` as trait ``name`` holds it, or ``ContractError``. ``rows`` / ``tokens``: the shown
    analysis' shape (limits of ``layer`` and ``selected``)."""
    spec = TRAITS.get(name)
    if spec is None:
        raise ContractError(f"unknown setting {_short(name)}; the widget has {', '.join(k for k in TRAITS if not k.startswith('_'))}")
    return check_spec(name, spec, value, rows=rows, tokens=tokens)


class Checked(TraitType):
    """A synced trait whose values are checked by ``check`` (the contract), so a value set from
    Python gets the same message as the same value sent by the browser. The owner may provide
    ``_rows()`` / ``_tokens()`` (the shown analysis' shape) for ``layer`` and ``selected``."""

    def __init__(self, name: str, **kwargs: Any):
        self.contract_name = name
        kwargs.setdefault("help", TRAITS[name].get("about", ""))
        super().__init__(default_value=TRAITS[name]["default"], **kwargs)

    def validate(self, obj: Any, value: Any) -> Any:
        rows = obj._rows() if hasattr(obj, "_rows") else None
        tokens = obj._tokens() if hasattr(obj, "_tokens") else None
        return check(self.contract_name, value, rows=rows, tokens=tokens)


def check_changes(changes: Any, *, way: str = "edit", values: bool = True) -> dict[str, Any]:
    """An edit's ``changes``: a dict of traits the browser may edit (``from_browser == way``), each
    checked (``values=False``: the names only; the values are checked when the edit runs, in order)."""
    if not isinstance(changes, dict):
        raise ContractError(f"an edit's changes must be an object, got {type(changes).__name__} {_short(changes)}")
    editable = [k for k, s in TRAITS.items() if s["from_browser"] == way]
    unknown = sorted(str(k) for k in changes if k not in editable)
    if unknown:
        raise ContractError(f"cannot edit {', '.join(_short(k, 30) for k in unknown)} from the browser (editable: {', '.join(editable)})")
    return {k: check(k, v) for k, v in changes.items()} if values else dict(changes)


def browser_may_set(name: str) -> bool:
    """Whether the browser may set trait ``name`` by a state update (``from_browser == "sync"``)."""
    return TRAITS.get(name, {}).get("from_browser") == "sync"


@dataclass(frozen=True)
class Edit:
    view: str
    seq: int
    changes: dict[str, Any]
    window: tuple[int, int] | None = None


@dataclass(frozen=True)
class Details:
    req: str | int
    seq: int
    pos: int
    run: str = "plain"  # "after": the steering panel's steered run (resid_steering.py)
    after_seq: int = 0  # run "after": the after payload asked about (its _steer_meta.after_seq; 0: the one shown)


def _too_big(content: Any) -> bool:
    try:
        return len(json.dumps(content, default=str)) > MESSAGES["limits"]["max_message_chars"]
    except (TypeError, ValueError, RecursionError):
        return True


def reply_address(content: Any) -> tuple[str, int]:
    """(view, seq) to acknowledge a message with, as far as it can be read (malformed: "", 0)."""
    if not isinstance(content, dict):
        return "", 0
    view, seq = content.get("view", ""), content.get("seq", 0)
    view = view if isinstance(view, str) and len(view) <= 64 else ""
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
    return view, seq


def parse_edit(content: Any) -> Edit:
    """An ``edit`` message (protocol.json ``messages.to_python.edit``): every field checked, the
    changes' names too; their values are checked when the edit runs (``check``), in arrival order."""
    if _too_big(content):
        raise ContractError(f"the edit message is too large (over {MESSAGES['limits']['max_message_chars']:,} characters)")
    fields = MESSAGES["to_python"]["edit"]
    unknown = sorted(str(k) for k in content if k != "type" and k not in fields)
    if unknown:
        raise ContractError(f"the edit message has unknown fields {', '.join(_short(k, 30) for k in unknown)}")
    view = content.get("view", "")
    if not isinstance(view, str) or len(view) > 64:
        raise ContractError(f"the edit message's view must be a short text id, got {_short(view)}")
    seq = _whole("the edit message's seq", content.get("seq", 0), "a whole number")
    changes = check_changes(content.get("changes", {}), values=False)
    window = content.get("window")
    if window is not None:
        ok = isinstance(window, (list, tuple)) and len(window) == 2
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in window) and window[0] <= window[1]
        if not ok:
            raise ContractError(f"the edit message's window must be [first, last] positions, got {_short(window)}")
        window = (int(window[0]), int(window[1]))
    return Edit(view=view, seq=seq, changes=changes, window=window)


#: the runs a details request may ask about (protocol.json ``messages.details_runs``)
DETAILS_RUNS = tuple(MESSAGES["details_runs"])


def parse_details(content: Any) -> Details:
    """A ``details`` request, every field checked."""
    req = content.get("req")
    if not isinstance(req, (str, int)) or isinstance(req, bool) or len(str(req)) > 128:
        raise ContractError(f"the details request's req must be a short text id, got {_short(req)}")
    seq = _whole("the details request's seq", content.get("seq", 0), "a whole number")
    pos = _whole("the details request's pos", content.get("pos", -1), "a position")
    run = content.get("run", "plain")
    if run not in DETAILS_RUNS:
        raise ContractError(f"the details request's run must be {' or '.join(DETAILS_RUNS)}, got {_short(run)}")
    after_seq = _whole("the details request's after_seq", content.get("after_seq", 0), "a whole number")
    return Details(req=req, seq=seq, pos=pos, run=run, after_seq=after_seq)


@dataclass(frozen=True)
class WritersAsk:
    req: str
    seq: int
    row: int
    pos: int
    writer: int | None = None
    labels: bool = False


def parse_writers(content: Any, *, rows: int, tokens: int, writers: int | None = None) -> WritersAsk:
    """A ``writers`` request (protocol.json ``messages.to_python.writers``): every field checked, the
    cell inside the analysis shown (``rows`` x ``tokens``), ``writer`` an index into the labels."""
    fields = MESSAGES["to_python"]["writers"]
    unknown = sorted(str(k) for k in content if k != "type" and k not in fields)
    if unknown:
        raise ContractError(f"the writers request has unknown fields {', '.join(_short(k, 30) for k in unknown[:5])}")
    req = content.get("req")
    if not isinstance(req, str) or len(req) > 128:
        raise ContractError(f"the writers request's req must be a short text id, got {_short(req)}")
    seq = _whole("the writers request's seq", content.get("seq"), "a whole number")
    row = _whole("the writers request's row", content.get("row"), "a residual row")
    pos = _whole("the writers request's pos", content.get("pos"), "a position")
    if not 0 <= row < rows:
        raise ContractError(f"the writers request's row must be a residual row 0..{rows - 1} (0 = embeddings), got {row}")
    if not 0 <= pos < tokens:
        raise ContractError(f"the writers request's pos must be a position 0..{tokens - 1}, got {pos}")
    writer = content.get("writer")
    if writer is not None:
        top = "W-1" if writers is None else writers - 1
        writer = _whole("the writers request's writer", writer, f"a writer index 0..{top}")
        if writer < 0 or (writers is not None and writer >= writers):
            raise ContractError(f"the writers request's writer must be a writer index 0..{top}, got {writer}")
    labels = content.get("labels", False)
    if not isinstance(labels, bool):
        raise ContractError(f"the writers request's labels must be true or false, got {_short(labels)}")
    return WritersAsk(req=req, seq=seq, row=row, pos=pos, writer=writer, labels=labels)


__all__ = [
    "Checked", "ContractError", "Details", "Edit", "WritersAsk", "browser_may_set", "check", "check_changes", "parse_details",
    "parse_edit", "parse_writers", "reply_address",
]
