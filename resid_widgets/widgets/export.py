"""Write a widget view as ONE self-contained, offline HTML file.

The page inlines the frontend bundle (``static/widget.js``), its CSS, the payload header (``meta``)
and the binary payload (``blob``, base64), and drives the *same* ``render({model, el})`` that runs
in Jupyter with a tiny in-page model object implementing anywidget's model interface (``get``,
``set``, ``on``, ``off``, ``save_changes``, ``send``). Nothing is fetched: the bundle is imported
from a ``blob:`` URL made from inlined text (with a ``data:`` URL as fallback), so hover, layer
and τ scrubbing work from ``file://`` with no network. Editing (prompt, targets, top-k) is
disabled: the page has no kernel. The in-page model and boot code are js/src/export.ts (the
bundle's second entry, static/export.js).

Every inlined text goes into a ``<script type="application/json">`` element as JSON with ``<``,
``>`` and ``&`` escaped as ``\\u003c`` etc., so no content can close the element (``</script>``)
or be parsed as markup.

For the hover tooltip's full top-k list without a kernel, include the optional arrays ``top_ids``
int32 [R, T, k] and ``top_probs`` float16 [R, T, k] in ``blob`` (and their strings in
``meta["strings"]``); without them the tooltip says the list is not included.
"""

from __future__ import annotations

import base64
import html
import json
import math
import pathlib
from typing import Any, Mapping

__all__ = ["export_html", "json_for_script"]


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: map non-finite floats to None (recursively)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return _finite(obj.item())
    return obj


def json_for_script(obj: Any) -> str:
    """JSON safe to place verbatim inside ``<script type="application/json">...</script>``."""
    text = json.dumps(_finite(obj), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    # '<', '>' and '&' only ever occur inside JSON strings, where \\uXXXX escapes are equivalent.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


#: the boot script (anywidget's model interface in memory, then ``render``): js/src/export.ts, built
#: into static/export.js beside the widget bundle
BOOT_FILE = pathlib.Path(__file__).resolve().parent.parent / "static" / "export.js"


def _boot() -> str:
    if not BOOT_FILE.is_file():
        raise FileNotFoundError(
            f"The export's boot script {BOOT_FILE} is missing. Install the package with `pip install .` "
            "(which builds it) or run `npm --prefix js install && npm --prefix js run build`."
        )
    # a module script's text may not contain "</script": escape the slash (same code in JS)
    return BOOT_FILE.read_text(encoding="utf-8").replace("</script", "<\\/script")

_PAGE_CSS = """
body { margin: 16px; font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
       background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #222); }
.rw-export-note { margin: 0 0 10px; font-size: 12px; color: var(--jp-ui-font-color2, #666); }
.rw-export-error { color: var(--jp-error-color1, #d32f2f); white-space: pre-wrap; }
@media (prefers-color-scheme: dark) {
  :root { --jp-layout-color0: #111; --jp-layout-color1: #1e1e1e; --jp-layout-color2: #2c2c2c;
          --jp-layout-color3: #474747; --jp-ui-font-color1: rgba(255,255,255,0.87);
          --jp-ui-font-color2: rgba(255,255,255,0.54); --jp-ui-inverse-font-color1: #000;
          --jp-border-color1: #616161; --jp-border-color2: #424242; --jp-brand-color1: #64b5f6;
          --jp-error-color1: #ef5350; --jp-warn-color1: #ffa726; }
}
"""


def export_html(
    path: str | pathlib.Path,
    *,
    esm: str,
    css: str,
    state: dict,
    meta: dict,
    blob: bytes,
    title: str = "resid_widgets",
) -> pathlib.Path:
    """Write a self-contained HTML file showing the widget offline; return its path.

    ``esm``/``css``: the frontend bundle texts (``static/widget.js``/``widget.css``).
    ``state``: the synced traits (prompt, targets, top_k, tau, metric, layer, selected, status,
    error); ``_static`` is forced on. ``meta``/``blob``: the payload header and bytes.
    """
    path = pathlib.Path(path)
    st = {k: v for k, v in dict(state).items() if k not in ("_meta", "_payload")}
    st["_static"] = True
    st.setdefault("status", "idle")
    st.setdefault("error", "")
    b64 = base64.b64encode(bytes(blob)).decode("ascii")
    model_name = str(meta.get("model_name", "")) if isinstance(meta, Mapping) else ""
    note = "Static export of a resid_widgets view — editing is disabled; hover, layer and τ work offline."
    if model_name:
        note = f"{note} Model: {model_name}."

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # no network at all: forbid every fetch except inline code, blob:/data: modules and images
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline' blob: data:; style-src 'unsafe-inline'; img-src blob: data:; "
        "connect-src 'none'\">",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_PAGE_CSS}</style>",
        "</head>",
        "<body>",
        f'<p class="rw-export-note">{html.escape(note)}</p>',
        '<div id="rw-app"></div>',
        '<noscript>This page needs JavaScript to show the widget.</noscript>',
        f'<script type="application/json" id="rw-esm">{json_for_script(esm)}</script>',
        f'<script type="application/json" id="rw-css">{json_for_script(css)}</script>',
        f'<script type="application/json" id="rw-state">{json_for_script(st)}</script>',
        f'<script type="application/json" id="rw-meta">{json_for_script(meta)}</script>',
        f'<script type="application/json" id="rw-blob">{json_for_script(b64)}</script>',
        f'<script type="module">{_boot()}</script>',
        "</body>",
        "</html>",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
