"""Conformance over model families: random-weight Hugging Face directories (tests/families.py), each loaded by
path through ``resid_widgets.Session(dir)``, checked against independent computations:

- every lens row against Hugging Face's own readout of its residual rows (final norm -> lm_head -> soft-cap),
  the last row against HF's logits; compared as log-probabilities (compatibility mode centres W_U, which
  shifts every logit of a row by the same amount) and as logits after exactly that shift;
- the residual rows themselves against HF's (minus their per-position mean for LayerNorm models);
- the norms against TransformerLens's own cache (``session.model.run_with_cache``);
- the residual decomposition in the form that holds for the block (sequential: resid_pre + attn_out =
  resid_mid, resid_mid + mlp_out = resid_post; parallel: resid_pre + attn_out + mlp_out = resid_post);
- projection % against a numpy SVD of the session's W_U.

Every check records its largest error per family; the module prints the table at the end and writes it to
test-output/conformance.json (the README's "Model families" table comes from that file).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from families import FAMILIES, PROBE_IDS, Family, build_family_dir, hf_readout, logsumexp

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "test-output" / "conformance.json"

TOP_K = 10
TARGETS = [17, 256, 500]  # token ids read out at every cell
TAU = 0.9

# Tolerances (float32 model, float64 references). Logits and log-probabilities scale with the logits' size.
# Measured errors are 10-100x below these (test-output/conformance.json keeps each check's detail).
LOGIT_TOL = 2e-5  # |Δ| <= LOGIT_TOL * max(1, max |z_HF|): logits, log-probabilities, log-normaliser
PROB_TOL = 1e-5  # |Δ| of probabilities
RESID_TOL = 1e-5  # |Δ| / max |HF row|, per row: residual rows vs HF
NORM_TOL = 1e-5  # relative: norms vs TransformerLens's cache (the same float32 activations)
ADD_TOL = 1e-5  # relative (max |lhs - rhs| / max |rhs| per layer); the analysis' own check uses 1e-4
PCT_TOL = 1e-3  # percentage points: projection % vs numpy

#: family key -> {"family": ..., "checks": {check: {"max_err": float, "tol": float, "ok": bool} | {"error": str}}}
RESULTS: dict[str, dict] = {}

#: the table's columns: check name -> header
COLUMNS = {
    "lens_rows": "lens rows vs HF readout (Δ log p)",
    "last_row": "last row vs HF logits (Δ log p)",
    "logits": "logits, log_norm (Δ)",
    "ranks": "target ranks (Δ)",
    "resid_rows": "rows vs HF (rel)",
    "norms": "norms vs TL cache (rel)",
    "additivity": "additivity (rel)",
    "projection": "projection (Δ pct)",
}


class Run:
    """One family: its directory, HF's numbers, the session and its analysis of the probe prompt."""

    def __init__(self, family: Family, path: Path):
        from resid_widgets import Session

        self.family, self.path = family, path
        self.hf = hf_readout(path, PROBE_IDS)
        self.session = Session(str(path), device="cpu")
        with torch.no_grad():
            _, cache = self.session.model.run_with_cache(torch.tensor([PROBE_IDS]))
        used = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
        self.cache = {k: v[0].double().numpy() for k, v in cache.items() if k.endswith(used)}
        self.n_layers = self.session.n_layers
        try:
            self.analysis, self.error = self.session.analyze(PROBE_IDS, top_k=TOP_K, targets=TARGETS, tau=TAU), None
        except Exception as exc:  # recorded per check; the checks that need it fail with it
            self.analysis, self.error = None, exc

    def require_analysis(self, check: str):
        if self.error is not None:
            record(self.family, check, error=f"{type(self.error).__name__}: {self.error}")
            raise AssertionError(f"{self.family.name}: Session.analyze failed") from self.error
        return self.analysis


def record(
    family: Family,
    check: str,
    *,
    max_err: float | None = None,
    tol: float | None = None,
    ok: bool | None = None,
    error: str | None = None,
):
    entry = RESULTS.setdefault(
        family.key,
        {
            "family": family.name,
            "model_type": family.model_type,
            "block": family.block,
            "norm": family.norm,
            "softcap": family.softcap,
            "checks": {},
        },
    )
    if error is not None:
        entry["checks"][check] = {"error": error}
    else:
        ok = bool(max_err <= tol) if ok is None else ok
        entry["checks"][check] = {"max_err": float(max_err), "tol": float(tol), "ok": ok}


@pytest.fixture(scope="module", params=list(FAMILIES))
def run(request, tmp_path_factory):
    family = FAMILIES[request.param]
    path = build_family_dir(family, tmp_path_factory.mktemp(family.key))
    try:
        return Run(family, path)
    except Exception as exc:
        record(family, "boot", error=f"{type(exc).__name__}: {exc}")
        raise


@pytest.fixture(scope="module", autouse=True)
def _write_table(request):
    yield
    if not RESULTS:
        return
    OUT_JSON.parent.mkdir(exist_ok=True)
    meta = {"torch": torch.__version__, "transformers": _version("transformers"), "transformer_lens": _version("transformer-lens")}
    meta["machine"] = platform.machine()
    OUT_JSON.write_text(json.dumps({"meta": meta, "families": RESULTS}, indent=1))
    capture = request.config.pluginmanager.getplugin("capturemanager")  # print past pytest's capture, even with -q
    with capture.global_and_fixture_disabled():
        print("\n" + markdown_table(RESULTS) + f"\n(written to {OUT_JSON.relative_to(ROOT)})")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def markdown_table(results: dict) -> str:
    head = ["family", "HF model type", "block", "norm", "soft-cap", *COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in FAMILIES:
        if key not in results:
            continue
        r = results[key]
        cells = [r["family"], f"`{r['model_type']}`", r["block"], r["norm"], f"{r['softcap']:g}" if r["softcap"] else "—"]
        if "boot" in r["checks"]:
            cells += [f"does not boot: {r['checks']['boot']['error'][:80]}"] + [""] * (len(COLUMNS) - 1)
        for check in COLUMNS:
            if "boot" in r["checks"]:
                break
            c = r["checks"].get(check)
            if c is None:
                cells.append("—")
            elif "error" in c:
                cells.append(f"**FAILS** ({c['error'].split(':')[0]})")
            elif check == "ranks":
                cells.append(f"{c['max_err']:.0f}" + ("" if c["ok"] else " **FAILS**"))
            else:
                cells.append(f"{c['max_err']:.1e}" + ("" if c["ok"] else f" **FAILS** (tol {c['tol']:.0e})"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- helpers -------------------------------------------------------------------------------------------


def _take(z: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.take_along_axis(z, ids, -1)


def _lens_errors(a, rows: slice, z: np.ndarray) -> dict[str, float]:
    """Lens quantities of ``a`` at ``rows`` against HF logits ``z`` ([R', T, V], float64) as log-probabilities."""
    lp = z - logsumexp(z)[..., None]
    top_ids = a.top_ids[rows]
    targets = np.broadcast_to(np.asarray(a.target_ids), top_ids.shape[:-1] + (len(a.target_ids),))
    log_norm = a.log_norm[rows][..., None].astype(np.float64)
    hf_sorted = -np.sort(-lp, axis=-1)[..., :TOP_K]
    return {
        # the session's ids are HF's top-k in order (a near-tie may swap ids, never values)
        "topk_order": float(np.abs(_take(lp, top_ids) - hf_sorted).max()),
        "topk_logprob": float(np.abs(a.top_logits[rows] - log_norm - _take(lp, top_ids)).max()),
        "topk_prob": float(np.abs(a.top_probs[rows] - np.exp(_take(lp, top_ids))).max()),
        "target_logprob": float(np.abs(a.target_logits[rows] - log_norm - _take(lp, targets)).max()),
        "target_prob": float(np.abs(a.target_probs[rows] - np.exp(_take(lp, targets))).max()),
        "topk_id_mismatches": int((top_ids != np.argsort(-lp, axis=-1, kind="stable")[..., :TOP_K]).sum()),
    }


def _check_lens(run: Run, check: str, rows: slice, z: np.ndarray) -> None:
    a = run.require_analysis(check)
    errs = _lens_errors(a, rows, z)
    logit_tol = LOGIT_TOL * max(1.0, float(np.abs(z).max()))
    worst_logp = max(errs["topk_order"], errs["topk_logprob"], errs["target_logprob"])
    worst_prob = max(errs["topk_prob"], errs["target_prob"])
    record(run.family, check, max_err=worst_logp, tol=logit_tol)
    RESULTS[run.family.key]["checks"][check]["detail"] = errs
    assert worst_logp <= logit_tol, f"{run.family.name} {check}: log-probabilities off by {errs}"
    assert worst_prob <= PROB_TOL, f"{run.family.name} {check}: probabilities off by {errs}"


# ---- the checks ----------------------------------------------------------------------------------------


def test_family_boots_by_path(run):
    """Session(dir) loads the directory with TransformerBridge.boot_transformers, like a downloaded model."""
    s = run.session
    assert type(s.model).__name__ == "TransformerBridge"
    assert (s.n_layers, s.d_model, s.d_vocab) == (2, 64, 512)
    assert run.hf.self_check <= LOGIT_TOL * max(1.0, float(np.abs(run.hf.logits).max())), "HF readout disagrees with HF"
    if run.family.softcap:  # the cap must matter: the uncapped logits exceed it
        assert run.hf.uncapped_max > 2 * run.family.softcap
        assert np.abs(run.hf.logits).max() < run.family.softcap


def test_lens_rows_match_hf_readout(run):
    """Rows 0..L-1: top-k ids / probabilities and target log-probabilities vs HF's readout of its residual rows."""
    L = run.n_layers
    _check_lens(run, "lens_rows", slice(0, L), run.hf.row_logits[:L])


def test_last_row_matches_hf_logits(run):
    """Row L (after the last block) is the model's own output distribution: HF's logits."""
    L = run.n_layers
    _check_lens(run, "last_row", slice(L, L + 1), run.hf.logits[None])


def test_lens_logits_and_log_norm(run):
    """The logits themselves: HF's minus their mean over the vocabulary where W_U is centred, unshifted otherwise."""
    a = run.require_analysis("logits")
    z = run.hf.row_logits
    centred = a.info["unembed_centred"]
    zs = z - z.mean(-1, keepdims=True) if centred else z
    targets = np.broadcast_to(np.asarray(a.target_ids), zs.shape[:-1] + (len(a.target_ids),))
    errs = {
        "top_logits": float(np.abs(a.top_logits - _take(zs, a.top_ids)).max()),
        "target_logits": float(np.abs(a.target_logits - _take(zs, targets)).max()),
        "log_norm": float(np.abs(a.log_norm - logsumexp(zs)).max()),
    }
    tol = LOGIT_TOL * max(1.0, float(np.abs(z).max()))
    record(run.family, "logits", max_err=max(errs.values()), tol=tol)
    RESULTS[run.family.key]["checks"]["logits"]["detail"] = errs | {"unembed_centred": centred}
    assert max(errs.values()) <= tol, f"{run.family.name}: logits off by {errs} (centred W_U: {centred})"


def test_target_ranks(run):
    """Rank = number of tokens with a larger logit, counted on HF's logits (a near-tie may go either way)."""
    a = run.require_analysis("ranks")
    z = run.hf.row_logits
    eps = LOGIT_TOL * max(1.0, float(np.abs(z).max()))
    worst, outside = 0, 0
    for j, t in enumerate(a.target_ids):
        zt = z[..., t : t + 1]
        exact = (z > zt).sum(-1)
        lo, hi = (z > zt + eps).sum(-1), (z > zt - eps).sum(-1) - 1  # hi: every near-tie above, minus the target
        rank = a.target_ranks[..., j]
        worst = max(worst, int(np.abs(rank - exact).max()))
        outside += int(((rank < lo) | (rank > np.maximum(hi, lo))).sum())
    # the table shows the largest |Δ| from HF's exact rank; it passes when every rank lies in HF's tie interval
    record(run.family, "ranks", max_err=worst, tol=0, ok=outside == 0)
    assert outside == 0, f"{run.family.name}: {outside} target ranks outside HF's tie interval (max |Δ| {worst})"


def test_rows_match_hf_residual_stream(run):
    """Residual rows = HF's (LayerNorm models: minus the per-position mean, as compatibility mode centres writes)."""
    a = run.require_analysis("resid_rows")
    h = run.hf.resid
    if run.family.norm == "LayerNorm":
        h = h - h.mean(-1, keepdims=True)
    per_row = np.abs(a.resid - h).reshape(len(h), -1).max(1) / np.abs(h).reshape(len(h), -1).max(1)
    record(run.family, "resid_rows", max_err=per_row.max(), tol=RESID_TOL)
    assert per_row.max() <= RESID_TOL, f"{run.family.name}: residual rows differ from HF's by {per_row} (relative)"


def test_norms_match_transformerlens_cache(run):
    a = run.require_analysis("norms")
    c, L = run.cache, run.n_layers
    rows = [c["blocks.0.hook_resid_pre"]] + [c[f"blocks.{l}.hook_resid_post"] for l in range(L)]
    expected = {
        "resid_norm": np.linalg.norm(np.stack(rows), axis=-1),
        "attn_norm": np.linalg.norm(np.stack([c[f"blocks.{l}.hook_attn_out"] for l in range(L)]), axis=-1),
        "mlp_norm": np.linalg.norm(np.stack([c[f"blocks.{l}.hook_mlp_out"] for l in range(L)]), axis=-1),
    }
    errs = {k: float((np.abs(getattr(a, k) - v) / v.max()).max()) for k, v in expected.items()}
    record(run.family, "norms", max_err=max(errs.values()), tol=NORM_TOL)
    assert max(errs.values()) <= NORM_TOL, f"{run.family.name}: norms off by {errs}"


def test_additivity_in_the_blocks_form(run):
    """The decomposition that holds for the block, from TL's cache here; the analysis must report it holds."""
    c, L = run.cache, run.n_layers

    def rel(lhs, rhs):
        return float(np.abs(lhs - rhs).max() / np.abs(rhs).max())

    a = run.require_analysis("additivity")
    errs = []
    for l in range(L):
        pre, attn, mlp, post = (c[f"blocks.{l}.hook_{k}"] for k in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
        if run.family.block == "parallel":
            errs.append(rel(pre + attn + mlp, post))
        else:
            mid = c[f"blocks.{l}.hook_resid_mid"]
            errs += [rel(pre + attn, mid), rel(mid + mlp, post)]
    # attn_out + mlp_out is what HF's block adds to its residual stream (LayerNorm models: centred)
    h = run.hf.resid
    delta = np.diff(h, axis=0)
    if run.family.norm == "LayerNorm":
        delta = delta - delta.mean(-1, keepdims=True)
    for l in range(L):
        errs.append(rel(c[f"blocks.{l}.hook_attn_out"] + c[f"blocks.{l}.hook_mlp_out"], delta[l]))
    worst = max(errs)
    record(run.family, "additivity", max_err=worst, tol=ADD_TOL)
    assert worst <= ADD_TOL, f"{run.family.name}: the {run.family.block} decomposition is off by {errs}"
    assert a.additivity["holds"], f"{run.family.name}: the analysis reports {a.additivity}"
    assert a.additivity["form"] == run.family.block, f"{run.family.name}: the analysis checked {a.additivity}"
    assert max(v for k, v in a.additivity.items() if isinstance(v, float) and k != "tolerance") <= a.additivity["tolerance"]


def test_projection_matches_numpy_svd(run):
    """Projection % against a float64 numpy SVD of the session's W_U.

    A projection onto the first k singular directions is only defined to about eps32 * S_1 / (S_k - S_k+1)
    (Davis-Kahan): where two singular values almost coincide at the cut, any float32 SVD may rotate within
    the pair. So it is checked to PCT_TOL at the best-separated cut of the middle half of the spectrum
    (through ``projection_at``), and at tau = 0.9 to PCT_TOL or that bound, whichever is larger.
    """
    a = run.require_analysis("projection")
    W = run.session.model.W_U.detach().double().numpy()
    U, S, _ = np.linalg.svd(W, full_matrices=False)
    energy = np.cumsum(S**2) / np.sum(S**2)
    np.testing.assert_allclose(a.singular_values, S, rtol=1e-4, atol=1e-5 * S[0])
    np.testing.assert_allclose(a.cumulative_energy, energy, rtol=1e-5)
    v = a.resid.astype(np.float64)

    def pct(k):
        return 100 * np.sum((v @ U[:, :k]) ** 2, -1) / np.sum(v**2, -1)

    k = int(np.argmax(energy >= TAU - 1e-12)) + 1
    assert a.k == k
    m = len(S)
    err_tau = float(np.abs(a.projection_pct - pct(k)).max())
    bound_tau = max(PCT_TOL, 200 * 10 * np.finfo(np.float32).eps * S[0] / (S[k - 1] - S[k]))
    mid = np.arange(m // 4, 3 * m // 4)
    k_best = int(mid[np.argmax(S[mid - 1] - S[mid])])  # cut after k_best directions
    tau_best = float(energy[k_best - 2] + energy[k_best - 1]) / 2  # inside (E(k-1), E(k)]: k(tau) = k_best
    assert a.k_for_tau(tau_best) == k_best
    err = float(np.abs(a.projection_at(tau_best) - pct(k_best)).max())
    record(run.family, "projection", max_err=err, tol=PCT_TOL)
    RESULTS[run.family.key]["checks"]["projection"]["detail"] = {
        "k_best": k_best,
        "tau_best": tau_best,
        "tau": TAU,
        "k": k,
        "err_at_tau": err_tau,
        "bound_at_tau": bound_tau,
    }
    assert err <= PCT_TOL, f"{run.family.name}: projection % at k={k_best} off by {err} points"
    assert err_tau <= bound_tau, f"{run.family.name}: projection % at tau={TAU} off by {err_tau} points (bound {bound_tau})"
