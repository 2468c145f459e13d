"""Content fingerprints of weights: the key the session's caches are checked against.

A tensor's ``_version`` counter is not a safe cache key: ``p.data.mul_(3)``, a numpy view of
``p.numpy()`` or ``p.data[:] = ...`` change the values without bumping it. So the session keys what
it reuses (the previous prompt's key/value cache, the SVD of W_U, the model facts, the widget's
analyses) on the *bytes* of the weights:

* CPU tensors: xxHash3 (64 bit) of each distinct storage's bytes, zero-copy (memory bound: about
  0.1 s for GPT-2 small's 737 MB of float32 on the 2-core CI machine; README "What is guarded").
* CUDA: on the device, each storage's bytes read as int16 words, in rows of
  4,096, times 4,096 distinct random integer weights < 2^20, summed in float64 per row (exact: every
  partial sum stays below 2^53), then the row sums hashed on the CPU. A change of any word changes
  its row's sum; a swap of two words changes it unless they are equal. Other devices (MPS, which has no
  float64): the bytes are copied to the CPU and hashed there.
* a tensor whose bytes cannot be read (``meta``, offloaded) gets a fresh ``object()``: never equal to
  anything, so nothing keyed on it is reused ("refuse to reuse when unsure").

Storages are hashed once each, whatever number of parameters view them (tied embeddings, W_U as a
transposed view of a parameter).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch

_ROW = 4096
_PARALLEL_BYTES = 64 << 20  # below this one thread hashes everything
_THREADS = max(1, min(8, (os.cpu_count() or 1)))
_WEIGHTS: dict[str, torch.Tensor] = {}


def storage_key(t: torch.Tensor) -> tuple:
    """Which storage a tensor views (its device and address)."""
    return (str(t.device), t.untyped_storage().data_ptr())


def digest(t: torch.Tensor) -> Any:
    """A fingerprint of the bytes of ``t``'s whole storage (an int, or a fresh object when unreadable)."""
    t = t.detach()
    if t.device.type == "meta" or t.untyped_storage().nbytes() == 0 and t.numel() > 0:
        return object()
    raw = torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())
    if raw.device.type == "cpu":
        return _xxh(raw.numpy())
    if raw.device.type != "cuda":  # MPS and others lack float64: copy the bytes (unified memory on MPS)
        return _xxh(raw.cpu().numpy())
    return _device_digest(raw)


def digests(tensors: Iterable[torch.Tensor], known: dict[tuple, Any] | None = None) -> dict[tuple, Any]:
    """``storage_key -> digest`` for every distinct storage among ``tensors`` (``known`` entries are kept).
    CPU storages are hashed by a few threads (xxHash releases the GIL; the work is memory bound)."""
    out = dict(known or {})
    todo: dict[tuple, torch.Tensor] = {}
    for t in tensors:
        key = storage_key(t)
        if key not in out and key not in todo:
            todo[key] = t
    cpu = [k for k, t in todo.items() if t.device.type == "cpu"]
    big = sum(todo[k].untyped_storage().nbytes() for k in cpu) > _PARALLEL_BYTES
    if big and len(cpu) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(_THREADS, len(cpu))) as pool:
            out.update(zip(cpu, pool.map(lambda k: digest(todo[k]), cpu)))
    for k, t in todo.items():
        if k not in out:
            out[k] = digest(t)
    return out


def _xxh(buf) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(buf)


def _device_digest(raw: torch.Tensor) -> int:
    """The on-device fingerprint described in the module docstring, for a uint8 tensor [n]."""
    n = raw.numel()
    words = raw[: n - n % 2].view(torch.int16)
    w = _weights(raw.device)
    full = words.numel() - words.numel() % _ROW
    sums = []
    step = _ROW * 1024  # 4 M words per chunk: 32 MB of float64 at a time
    for i in range(0, full, step):
        block = words[i : min(i + step, full)].view(-1, _ROW).to(torch.float64)
        sums.append(block @ w)
    tail = words[full:]
    extra = raw[n - n % 2 :]
    sums.append(torch.stack([(tail.to(torch.float64) * w[: tail.numel()]).sum(), extra.to(torch.float64).sum(),
                             torch.tensor(float(n), dtype=torch.float64, device=raw.device)]))
    return _xxh(torch.cat(sums).cpu().numpy().tobytes())


def _weights(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _WEIGHTS:
        g = torch.Generator().manual_seed(20)
        _WEIGHTS[key] = (torch.randperm(1 << 20, generator=g)[:_ROW] + 1).to(torch.float64).to(device)
    return _WEIGHTS[key]
