"""What keeps a session's caches honest when weights change behind its back (issue 20, items 1 and 7).

``Session`` inherits these: the keys its caches are checked against (the weights' bytes, see
``fingerprint``), the per-operation fingerprint scope, and ``editing()`` / ``lock`` for weight edits made
under the session's lock. They use the session's ``model``, ``_lock``, ``_lenses`` and ``_fp_*`` fields.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch

from resid_widgets.session import fingerprint


class WeightsGuard:
    """Mixin of ``Session``: weight keys, the fingerprint scope, ``editing()`` and ``lock``."""

    def _model_key(self) -> tuple:
        """Changes when any parameter or buffer of the model is replaced or edited in place by any path
        (``.data``, numpy views, ``copy_``): each one's view and its storage's content fingerprint. Buffers
        count: a compatibility-mode bridge keeps b_U as one (``unembed._original_component.bias``), and rotary
        tables are buffers too."""
        params = _weights(self.model)
        fp = fingerprint.digests(params, self._fp_now)
        return tuple((_view_key(p), fp[fingerprint.storage_key(p)]) for p in params)

    def _lens_key(self, lens: Any) -> Any:
        """The content fingerprint of a lens's tensors (None for the logit lens)."""
        if lens is None:
            return None
        found = [t for v in vars(lens).values() for t in (v.values() if isinstance(v, dict) else [v])
                 if isinstance(t, torch.Tensor) and t.device.type != "meta"]
        found.sort(key=lambda t: fingerprint.storage_key(t))
        return (id(lens), tuple((_view_key(t), fingerprint.digest(t)) for t in found))

    def _lens_epoch(self) -> int:
        """A count that grows when a lens the session holds is replaced or edited in place (a lens loaded for
        a kind not held before does not count: nothing computed earlier used it)."""
        for kind, lens in self._lenses.items():
            fp = self._lens_key(lens)
            if self._lens_fps.get(kind, fp) != fp:
                self._lens_epoch_n += 1
            self._lens_fps[kind] = fp
        return self._lens_epoch_n

    def _params_key(self) -> tuple:
        """Changes when the model's weights or a lens the session holds change, by any path: what a cache
        of analyses (the widget's) is keyed on. Reads every weight's bytes (see ``fingerprint``)."""
        with self._lock, self._fingerprint_scope(fresh=True):
            key = self._model_key(), self._lens_epoch()
            # the widget asks for this key and then (on a cache miss) streams on the same thread: hand the
            # digests to that very next locked operation instead of reading every weight twice
            self._fp_handoff = (threading.get_ident(), dict(self._fp_now))
            return key

    @contextlib.contextmanager
    def _fingerprint_scope(self, *, fresh: bool = False) -> Iterator[None]:
        """Within the scope (the lock held), every weight's storage is fingerprinted once. The digests that
        ``_params_key()`` just computed are reused when the next locked operation runs on the same thread."""
        nested = self._fp_now is not None
        if not nested:
            handoff, self._fp_handoff = self._fp_handoff, None
            same_thread = not fresh and handoff is not None and handoff[0] == threading.get_ident()
            self._fp_now = handoff[1] if same_thread else fingerprint.digests(_weights(self.model))
        try:
            yield
        finally:
            if not nested:
                self._fp_now = None

    @contextlib.contextmanager
    def editing(self) -> Iterator[Any]:
        """Edit the model's weights under the session's lock: an analysis running in another thread (a
        widget's) finishes before the edit starts, and the next one sees the whole edit::

            with session.editing() as model:
                model.W_U[:, 17] *= 2        # gradients off inside the block

        Edits made without it are still noticed (the caches are keyed on the weights' bytes), but an edit
        from another thread while an analysis runs can mix old and new weights in that one analysis.
        """
        with self._lock:
            self._fp_now = self._fp_handoff = None
            try:
                with torch.no_grad():
                    yield self.model
            finally:
                self._fp_now = self._fp_handoff = None

    @property
    def lock(self) -> threading.RLock:
        """The session's lock (reentrant): held by every analysis and by ``editing()``."""
        return self._lock


def _weights(model: Any) -> list[torch.Tensor]:
    """Every tensor an analysis reads from the model: its parameters and its buffers (a backend's model
    that is no ``nn.Module`` may have parameters only)."""
    buffers = getattr(model, "buffers", None)
    return [*model.parameters(), *(buffers() if callable(buffers) else ())]


def _view_key(t: torch.Tensor) -> tuple:
    """Which part of its storage a tensor views, and as what."""
    return (fingerprint.storage_key(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()), str(t.dtype))
