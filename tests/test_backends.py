"""Backends (resid_widgets.session.backends): a device-mapped / offloaded model and a TransformerLens
``RemoteBridge`` + ``Driver`` give the same analysis as the plain compatibility-mode ``Session(path)``.

Reference: ``Session(path)`` (compatibility mode), itself tested against Hugging Face in
test_conformance.py. Tolerance 1e-4 (float32), on random-weight directories whose norms and biases are
perturbed (tests/families.py), so a missing fold or centring shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivers import HookDriver, remote_bridge
from families import FAMILIES, PROBE_IDS, build_family_dir

from resid_widgets import Session
from resid_widgets.session.backends import RemoteError

TOL = 1e-4
TARGETS = [5, 17]
#: every per-cell quantity the widgets show
FIELDS = ["top_ids", "top_probs", "top_logits", "log_norm", "target_logits", "target_ranks", "entropy", "kl",
          "final_rank", "resid_norm", "attn_norm", "mlp_norm", "projection_pct", "projection_final_pct"]


def assert_same(a, b, tol=TOL, fields=FIELDS):
    for f in fields:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        assert x.shape == y.shape, f
        if f == "top_ids":  # tokens with (near-)equal logits (a trained model's unused tokens tie exactly) may swap
            za, zb = a.top_logits.astype(np.float64), b.top_logits.astype(np.float64)
            tie = np.abs(za - zb) <= tol * np.maximum(1.0, np.abs(zb))  # the same value at that rank
            assert ((x == y) | tie).all(), f"top_ids differ outside ties at {np.argwhere((x != y) & ~tie)[:5].tolist()}"
            assert (x == y).mean() > 0.95
            continue
        scale = 100.0 if f.startswith("projection") else 1.0  # percentages: 1e-4 of the fraction
        np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), atol=tol * scale, rtol=tol, err_msg=f)
    assert a.tokens == b.tokens


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    made = {}

    def get(key):
        if key not in made:
            made[key] = build_family_dir(FAMILIES[key], tmp_path_factory.mktemp(key))
        return made[key]

    return get


@pytest.fixture(scope="module")
def plain(family_dir):
    made = {}

    def get(key):
        if key not in made:
            made[key] = Session(str(family_dir(key))).analyze(PROBE_IDS, targets=TARGETS)
        return made[key]

    return get


DEMO_PROMPT = "The capital of France is Paris. The capital of England is"


def case(key, family_dir, plain):
    """(directory, prompt, the plain Session's analysis, targets): the demo model with a text prompt
    (tokenised by each backend), a family directory with token ids."""
    if key == "demo":
        from resid_widgets.session.loading import DEMO_MODEL_DIR

        return DEMO_MODEL_DIR, DEMO_PROMPT, Session(None).analyze(DEMO_PROMPT, targets=[" London"]), [" London"]
    return family_dir(key), PROBE_IDS, plain(key), TARGETS


# ---- device map ---------------------------------------------------------------------------------
def test_device_map_with_layers_on_disk_equals_plain(family_dir, plain, tmp_path):
    path = family_dir("llama")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.norm": "disk", "lm_head": "disk"}
    s = Session(str(path), device_map=device_map, offload_folder=str(tmp_path / "offload"))
    hf = s.model.bridge.original_model
    assert hf.hf_device_map["model.layers.1"] == "disk" and hf.hf_device_map["lm_head"] == "disk"
    assert any(p.device.type == "meta" for p in hf.lm_head.parameters()), "lm_head must really be offloaded"
    a = s.analyze(PROBE_IDS, targets=TARGETS)
    assert_same(a, plain("llama"))
    assert a.info["lens_formula_matches_model"]


def test_device_map_layer_norm_model_everything_offloaded(family_dir, plain, tmp_path):
    """LayerNorm (GPT-2): rows centred, W_U folded and centred on both axes, as compatibility mode."""
    s = Session(str(family_dir("gpt2")), max_memory={"cpu": "60KB"}, offload_folder=str(tmp_path / "offload"))
    assert set(s.model.bridge.original_model.hf_device_map.values()) == {"disk"}
    assert_same(s.analyze(PROBE_IDS, targets=TARGETS), plain("gpt2"))


# ---- drivers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["demo", "gpt2", "llama", "pythia", "gemma2"])
def test_driver_remote_bridge_equals_plain(key, family_dir, plain):
    from transformer_lens.model_bridge.driver_protocol import validate_driver

    path, prompt, ref, targets = case(key, family_dir, plain)
    bridge, driver = remote_bridge(path)
    validate_driver(driver, after_bridge_construction=True)
    s = Session(bridge)
    a = s.analyze(prompt, targets=targets)
    assert_same(a, ref)
    # what crossed: the residual captures only (1 + 3 per layer tensors of [T, d_model] float32), no logits
    T, L, d = len(a.tokens), s.n_layers, s.d_model
    assert driver.bytes_sent == s.model.bytes_moved == a.info["bytes_from_engine"] == (1 + 3 * L) * T * d * 4
    # Gemma-2 (soft-capped, sandwich norms): the post-norms' outputs are what a block adds


def test_driver_weights_from_checkpoint_when_driver_serves_none(family_dir, plain):
    path = family_dir("pythia")
    bridge, _ = remote_bridge(path, serve_weights=False)
    with pytest.raises(ValueError, match="weights="):
        Session(bridge)
    assert_same(Session(bridge, weights=str(path)).analyze(PROBE_IDS, targets=TARGETS), plain("pythia"))


def test_driver_missing_hooks_is_a_clear_error(family_dir):
    """Without a residual row (here blocks.1.hook_out) nothing can be read; without the attention outputs
    alone, the rows are read and the norms marked unavailable (test_hook_out_only_driver_*)."""
    bridge, driver = remote_bridge(family_dir("llama"))
    drop = lambda n: n == "blocks.1.hook_out"  # noqa: E731
    driver.supported_hook_points = frozenset(n for n in driver.supported_hook_points if not drop(n))
    bridge._hook_registry = {k: v for k, v in bridge._hook_registry.items() if not drop(k)}
    with pytest.raises(ValueError, match=r"does not capture \['blocks.1.hook_out'\]; the residual rows need"):
        Session(bridge)
    bridge, driver = remote_bridge(family_dir("llama"))
    driver.supported_hook_points = frozenset(n for n in driver.supported_hook_points if "attn" not in n)
    bridge._hook_registry = {k: v for k, v in bridge._hook_registry.items() if "attn" not in k}
    assert "blocks.{l}.attn.hook_out" in Session(bridge).lacks["sublayers"]


def test_driver_lost_connection_is_a_clear_error_and_the_session_survives(family_dir, plain):
    lost = {"on": True}
    bridge, driver = remote_bridge(family_dir("llama"), fail=lambda n: ConnectionError("connection reset by peer") if lost["on"] else None)
    s = Session(bridge)
    with pytest.raises(RemoteError, match="connection reset by peer.*try again") as info:
        s.analyze(PROBE_IDS)
    assert isinstance(info.value, ConnectionError)
    lost["on"] = False
    assert_same(s.analyze(PROBE_IDS, targets=TARGETS), plain("llama"))


# ---- options ------------------------------------------------------------------------------------
def test_backend_options_are_checked(family_dir):
    path = str(family_dir("llama"))
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['devicemap'\\]"):
        Session(path, devicemap="auto")
    with pytest.raises(ValueError, match="either device or device_map"):
        Session(path, device="cpu", device_map="auto")
    with pytest.raises(TypeError, match="dtype must be a torch dtype"):
        Session(path, dtype="float99")
    with pytest.raises(TypeError, match="RemoteBridge"):
        Session(path, weights=path)


# ---- nnsight ------------------------------------------------------------------------------------
def nnsight_session(path):
    nnsight = pytest.importorskip("nnsight")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel is deprecated in favour of TransformersModel in 0.8
        # float32 as Session(path) boots it (the demo checkpoint is stored in float16, which nnsight would keep)
        lm = nnsight.LanguageModel(str(path), device_map="cpu", dispatch=True, dtype=torch.float32)
    return Session(lm, remote="local")


@pytest.mark.parametrize("key", ["demo", "gpt2", "llama", "pythia", "gemma2"])
def test_nnsight_local_equals_plain_and_sends_no_residuals(key, family_dir, plain):
    from resid_widgets.payload.encode import payload_arrays

    path, prompt, ref, targets = case(key, family_dir, plain)
    s = nnsight_session(path)
    a = s.analyze(prompt, targets=targets)
    assert_same(a, ref)
    assert a.additivity["holds"] and a.info["lens_formula_matches_model"]
    R, T = a.log_norm.shape
    shipped = s.model.trace(a.token_ids, top_k=10, target_ids=a.target_ids, U=s.subspace.U[:, :8], ks=[4, 8], k=4, chunk_elements=s.chunk_elements)
    assert s.d_model not in {R, T, 10, 2} and all(s.d_model not in arr.shape for arr in shipped.values()), "no residual vector leaves the trace"
    # lens 8k + 16 + 8n, norm 4, projection 4 + 2 per k; per block cell attention / MLP norms 8, additivity 8 per identity (1 parallel, 2 sequential)
    assert sum(arr.nbytes for arr in shipped.values()) == (8 * 10 + 16 + 8 * len(a.target_ids) + 4 + 4 + 2 * 2) * R * T + (8 + 8 * (1 if s.parallel else 2)) * (R - 1) * T + 8
    assert payload_arrays(a)["proj_grid"].shape[1:] == (R, T)  # the view's tau grid is there


def test_nnsight_bytes_per_cell(family_dir):
    """The lens part of what leaves the trace: 8k + 16 bytes per cell (<= 64 for k = 5, no targets)."""
    s = nnsight_session(family_dir("llama"))
    a = s.analyze(PROBE_IDS, top_k=5)
    shipped = s.model.trace(a.token_ids, top_k=5, target_ids=[], U=s.subspace.U[:, :8], ks=[4, 8], k=4, chunk_elements=s.chunk_elements)
    cells = a.log_norm.size
    lens = ("top_ids", "top_logits", "log_norm", "entropy", "kl", "final_rank", "target_logits", "target_ranks")
    per_cell = sum(shipped[f].nbytes for f in lens) / cells
    assert per_cell == 8 * 5 + 16 <= 64
    norms = ("resid_norm", "attn_norm", "mlp_norm", "proj_grid", "proj_exact", "add_diff", "add_scale", "lens_vs_model")
    assert set(shipped) == set(lens) | set(norms)


def test_nnsight_refuses_what_needs_the_residual_stream(family_dir):
    s = nnsight_session(family_dir("llama"))
    with pytest.raises(NotImplementedError, match="inside the trace"):
        s.analyze_batch([PROBE_IDS, PROBE_IDS[:5]])
    with pytest.raises(ValueError, match="remote must be"):
        Session(s.model.lm, remote="ndif")


# ---- progress and cancelling --------------------------------------------------------------------
def test_remote_stages_reach_the_progress_callback_and_cancel_before_the_engine(family_dir):
    from resid_widgets.analyses.pipeline import Cancelled

    bridge, driver = remote_bridge(family_dir("llama"))
    s = Session(bridge)
    seen = []
    s.analyze(PROBE_IDS, progress=lambda f, stage: seen.append(stage))
    assert seen[:3] == ["forward pass", "running", "reading out"] and seen[-1] == "done"
    calls = driver.calls
    with pytest.raises(Cancelled):
        list(s.stream(PROBE_IDS, cancelled=lambda: True))
    assert driver.calls == calls, "a cancelled request never reaches the engine"
    n = {"polls": 0}

    def cancel_after_forward():  # polled between stages: cancelled once the forward pass has run
        n["polls"] += 1
        return driver.calls > calls

    with pytest.raises(Cancelled):
        list(s.stream(PROBE_IDS[:6], cancelled=cancel_after_forward))
    assert driver.calls == calls + 1


def test_nnsight_stages(family_dir):
    s = nnsight_session(family_dir("pythia"))
    seen = []
    s.analyze(PROBE_IDS, progress=lambda f, stage: seen.append(stage))
    assert seen[:3] == ["forward pass", "running", "reading out"] and seen[-1] == "done"


def test_driver_batches_and_loaded_lenses(family_dir, plain):
    """What needs the residual rows here works on a driver: batches, and a loaded lens (the demo model's
    shipped Jacobian lens) read out on the captured rows."""
    from resid_widgets.lenses import DEMO_LENS_FILES
    from resid_widgets.session.loading import DEMO_MODEL_DIR

    path = family_dir("pythia")
    s = Session(remote_bridge(path)[0])
    ref = Session(str(path))
    for a, b in zip(s.analyze_batch([PROBE_IDS, PROBE_IDS[:7]], targets=TARGETS), ref.analyze_batch([PROBE_IDS, PROBE_IDS[:7]], targets=TARGETS)):
        assert_same(a, b)
    prompt = "Mr. and Mrs. Bennet had five daughters."
    demo, local = Session(remote_bridge(DEMO_MODEL_DIR)[0]), Session(None)
    demo.load_lens(DEMO_LENS_FILES["jacobian"], kind="jacobian")
    assert_same(demo.analyze(prompt, lens="jacobian"), local.analyze(prompt, lens="jacobian"))


def test_widget_unchanged_on_remote_backends(family_dir):
    """The widget takes a session of any backend as it is: same payload numbers as the plain session's."""
    from resid_widgets import ResidWidget
    from resid_widgets.payload.encode import payload_arrays

    path = family_dir("llama")
    text = "The capital of France is Paris"  # single tokens of the families' tokenizer
    ref = payload_arrays(ResidWidget(Session(str(path)), text).analysis, full=True)
    for session in (Session(remote_bridge(path)[0]), nnsight_session(path)):
        got = payload_arrays(ResidWidget(session, text).analysis, full=True)
        assert got.keys() == ref.keys()
        for name in ("token_ids", "top_ids", "top1_id", "final_rank", "emergence"):
            np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
        for name in ("proj_pct", "resid_norm", "attn_norm", "mlp_norm"):
            np.testing.assert_allclose(got[name].astype(np.float32), ref[name].astype(np.float32), rtol=2e-3, atol=1e-3, err_msg=name)


# ---- a driver capturing only blocks.{l}.hook_out (vLLM's stock overlay) ------------------------------
#: what needs only the residual rows (every per-cell quantity but the attention / MLP norms)
ROW_FIELDS = [f for f in FIELDS if f not in ("attn_norm", "mlp_norm")]


@pytest.mark.parametrize("key, ln_final", [("demo", True), ("gpt2", True), ("llama", False), ("pythia", True)])
def test_hook_out_only_driver_equals_plain_on_the_rows(key, ln_final, family_dir, plain):
    """embed.hook_out + blocks.{l}.hook_out (+ ln_final.hook_normalized, never requested: the final norm is
    applied from the checkpoint's weights, so a driver that cannot give it loses nothing)."""
    from transformer_lens.model_bridge.driver_protocol import validate_driver

    from resid_widgets.payload.arrays import metric_available, metric_values
    from resid_widgets.payload.encode import header, payload_arrays
    from resid_widgets.payload.protocol import METRIC_SPECS

    path, prompt, ref, targets = case(key, family_dir, plain)
    bridge, driver = remote_bridge(path, hooks="hook_out", ln_final=ln_final)
    validate_driver(driver, after_bridge_construction=True)
    assert not any(".attn." in n or ".mlp." in n or n.endswith("hook_in") for n in driver.supported_hook_points)
    assert ("ln_final.hook_normalized" in driver.supported_hook_points) == ln_final
    s = Session(bridge)
    a = s.analyze(prompt, targets=targets)
    assert_same(a, ref, fields=ROW_FIELDS)
    # bytes moved: row 0 (embed.hook_out) and one hook_out per layer, [T, d_model] float32 each, no logits
    T, L, d = len(a.tokens), s.n_layers, s.d_model
    assert driver.bytes_sent == s.model.bytes_moved == a.info["bytes_from_engine"] == (1 + L) * T * d * 4
    # what needs the sublayers is marked, never zeros or numbers
    why = s.lacks["sublayers"]
    assert "driver (hook_out only)" in why and a.info["backend"] == "driver (hook_out only)" and a.info["lacks"] == s.lacks
    assert np.isnan(a.attn_norm).all() and np.isnan(a.mlp_norm).all()
    assert a.additivity["form"] == "unavailable" and a.additivity["holds"] is None
    lacking = [m for m, spec in METRIC_SPECS.items() if spec["needs"] == "sublayers"]
    assert len(lacking) == 2 and all(not metric_available(m, a) for m in lacking)
    for m in lacking:
        with pytest.raises(ValueError, match=r"unavailable on the driver \(hook_out only\) backend: .*blocks.\{l\}.hook_out"):
            metric_values(a, m)
    sent = payload_arrays(a)
    assert not {METRIC_SPECS[m]["array"] for m in lacking} & set(sent) and "resid_norm" in sent
    assert header(a, seq=1)["lacks"] == {"sublayers": why}
    assert "lacks" not in header(ref, seq=1) and "lacks" not in ref.info  # a local session's payload is as before


def test_hook_out_only_in_the_cli_and_the_widget(family_dir):
    """The CLI's table says unavailable (no NaN printed), --json leaves the arrays out with the reason, and
    ResidWidget refuses the metric by name with the backend's reason (the menu greys it: tests/ui)."""
    import traitlets

    from resid_widgets import ResidWidget
    from resid_widgets.cli import _json_ready, format_summary

    path = family_dir("llama")
    s = Session(remote_bridge(path, hooks="hook_out")[0])
    a = s.analyze(PROBE_IDS, targets=TARGETS)
    text = format_summary(a, top_k=3)
    assert "nan" not in text.lower() and "|attn|, |mlp| and the additivity check: unavailable (the driver (hook_out only)" in text
    out = _json_ready(a)
    assert "attn_norm" not in out and "mlp_norm" not in out and out["unavailable"]["attn_norm"] == s.lacks["sublayers"]
    assert out["additivity"]["holds"] is None
    json_text = __import__("json").dumps(out, allow_nan=False)  # no NaN written as a number
    assert "resid_norm" in json_text
    from resid_widgets.analyses.workflows import contribution_workflow

    with pytest.raises(ValueError, match=r"attention / MLP output norms are unavailable on the driver \(hook_out only\) backend"):
        contribution_workflow([a], exclude_bos=True, bins=10, prompt_index=0, layer=0)  # ContributionExplorer's numbers
    w = ResidWidget(s, "The capital of France is")
    with pytest.raises(traitlets.TraitError, match="unavailable on this session's backend: the driver"):
        w.metric = "attn_norm"
    assert w.metric != "attn_norm" and "unavailable" in w.error
    w.metric = "resid_norm"
    assert w.error == ""
    # the header says what the backend refuses, so the Steer toggle and the Writers panel say it before anyone asks
    refused = w._meta["refused"]
    assert set(refused) == {"interventions", "attribution"}, refused
    assert all("not available on the driver (hook_out only) backend" in m for m in refused.values()), refused
    w.close()
    local = ResidWidget(Session(str(path)), "The capital of France is")
    assert "refused" not in local._meta  # a local model refuses nothing
    local.close()


def test_rows_only_row_zero_needs_the_position_embedding(family_dir, plain):
    """GPT-2 (learned positions): embed.hook_out alone is not row 0. The positional embedding comes from the
    weights; without it, and without blocks.0.hook_in, the session is refused."""
    path = family_dir("gpt2")
    bridge, driver = remote_bridge(path, hooks="hook_out")
    state = {k: v for k, v in driver.state_dict().items() if "wpe" not in k}
    with pytest.raises(ValueError, match="row 0 .* cannot be formed"):
        Session(bridge, weights=state)
    from_dir = Session(remote_bridge(path, hooks="hook_out", serve_weights=False)[0], weights=str(path))  # wpe from safetensors
    assert_same(from_dir.analyze(PROBE_IDS, targets=TARGETS), plain("gpt2"), fields=ROW_FIELDS)
    bridge, driver = remote_bridge(path, hooks="hook_out", extra_hooks=("blocks.0.hook_in",))  # row 0 from the block's input
    s = Session(bridge, weights=state)
    assert_same(s.analyze(PROBE_IDS, targets=TARGETS), plain("gpt2"), fields=ROW_FIELDS)


def test_driver_without_the_final_norm_weight_is_refused(family_dir):
    """The final norm is always applied from the checkpoint's own weights: weights without it are refused."""
    path = family_dir("llama")
    bridge, driver = remote_bridge(path, hooks="hook_out", ln_final=False)
    state = {k: v for k, v in driver.state_dict().items() if k != "model.norm.weight"}
    with pytest.raises(KeyError, match="no model.norm.weight among the weights: cannot apply the final norm"):
        Session(bridge, weights=state)


def test_remote_backends_refuse_what_needs_the_model_here_naming_the_backend(family_dir):
    from resid_widgets.interventions import AblateMLP
    from resid_widgets.session.attribution import AttributionRun
    from resid_widgets.session.backends.capabilities import BackendUnavailable

    path = family_dir("llama")
    for s, label in ((Session(remote_bridge(path)[0]), "driver"), (Session(remote_bridge(path, hooks="hook_out")[0]), r"driver \(hook_out only\)")):
        before = s.analyze(PROBE_IDS[:6])
        for call, what in ((lambda: s.fit_lens("jacobian", [PROBE_IDS]), "jacobian fit"), (lambda: AttributionRun(s, PROBE_IDS), "attribution"),
                           (lambda: s.analyze(PROBE_IDS, intervention=AblateMLP(0)), "interventions"), (lambda: s.continue_text(PROBE_IDS, 2), "generation")):
            with pytest.raises(BackendUnavailable, match=rf"{what} is not available on the {label} backend \(.*\): .*Session\(path\)"):
                call()
        assert s._last.analysis is before  # what was shown is kept
    tuned = s.fit_lens("tuned", [PROBE_IDS, PROBE_IDS[::-1]], steps=2)  # trains on the rows a driver returns
    assert tuned.kind == "tuned"
    n = nnsight_session(path)
    with pytest.raises(BackendUnavailable, match="tuned fit is not available on the nnsight backend"):
        n.fit_lens("tuned", [PROBE_IDS], steps=2)


def test_widget_shows_remote_stages_and_keeps_its_view_when_the_connection_is_lost(family_dir):
    """ResidWidget on a driver: the ``stage`` trait (the header's status text) goes running -> reading out ->
    '' during an edit; a lost connection is a clear error in the banner, the view (payload, analysis) is kept,
    and the next edit works."""
    from resid_widgets import ResidWidget

    lost = {"on": False}
    bridge, driver = remote_bridge(family_dir("llama"), fail=lambda n: ConnectionError("connection reset by peer") if lost["on"] else None)
    w = ResidWidget(Session(bridge), "The capital of France is")
    stages = []
    w.observe(lambda ch: stages.append(ch["new"]), names="stage")
    w._on_frontend_msg(w, {"type": "edit", "seq": 1, "changes": {"prompt": "The capital of France is Paris"}}, [])
    w.wait()
    assert stages == ["running", "reading out", ""] and w.stage == "" and w.error == ""
    meta, payload, analysis = w._meta, w._payload, w.analysis
    lost["on"] = True
    stages.clear()
    w._on_frontend_msg(w, {"type": "edit", "seq": 2, "changes": {"prompt": "The capital of"}}, [])
    w.wait()
    assert "RemoteError" in w.error and "connection reset by peer" in w.error and "try again" in w.error
    assert w._meta is meta and w._payload is payload and w.analysis is analysis and w.prompt == "The capital of France is Paris"
    assert stages == ["running", ""] and w.status == "idle"
    lost["on"] = False
    w._on_frontend_msg(w, {"type": "edit", "seq": 3, "changes": {"prompt": "The capital of"}}, [])
    w.wait()
    assert w.error == "" and w.prompt == "The capital of" and w._meta["client_seq"] == 3
    w.close()


class _FakeNDIF:
    """NDIF's two doors, replaced: the /subscribe websocket (a session id, then the job's status updates) and
    the POST /request (``post_status``: the HTTP status it answers with)."""

    def __init__(self, monkeypatch, *, post_status=200, updates=(), connect_error=None):
        import httpx
        import websocket
        from nnsight.schema.response import ResponseModel

        self.messages = ['{"session_id": "s1"}'] + [ResponseModel(id="job1", status=st, description=d).model_dump_json() for st, d in updates]
        self.posts = 0

        def connect(url, header=None):
            if connect_error is not None:
                raise connect_error
            return self

        def post(client, url, **kwargs):
            self.posts += 1
            body = {"id": "job1", "status": "RECEIVED", "description": ""} if post_status == 200 else {"detail": "invalid API key"}
            return httpx.Response(post_status, json=body, request=httpx.Request("POST", url))

        monkeypatch.setattr(websocket, "create_connection", connect)
        monkeypatch.setattr(httpx.Client, "post", post)

    def recv(self):
        return self.messages.pop(0)

    def settimeout(self, t):
        pass

    def close(self):
        pass


def test_ndif_stages_refusals_and_lost_connections_are_clear_and_keep_the_session(family_dir, monkeypatch):
    """``remote=True`` through nnsight's own NDIF backend (host and key from nnsight's configuration), the
    server replaced: its status updates reach the progress stages; a refused request (HTTP 401), a job that
    fails on the server and an unreachable server are a ``RemoteError`` in one clear message (the widget then
    keeps its view: test_widget_shows_remote_stages_...), and the model is left as it was."""
    from resid_widgets.session.backends import RemoteError

    path = family_dir("llama")
    local = nnsight_session(path)
    shown = local.analyze(PROBE_IDS)
    s = Session(local.model.lm, remote=True)
    with pytest.raises(ValueError, match="NDIF runs models it hosts, named as on the Hugging Face hub"):
        s.analyze(PROBE_IDS)  # a local directory has no hub name
    monkeypatch.setattr(s.model.lm, "_remoteable_model_key", lambda: "test-org/llama-shaped")
    seen = []
    fake = _FakeNDIF(monkeypatch, updates=[("QUEUED", ""), ("RUNNING", ""), ("ERROR", "CUDA out of memory")])
    with pytest.raises(RemoteError, match="NDIF refused or failed the request: CUDA out of memory; nothing was changed"):
        s.analyze(PROBE_IDS, progress=lambda f, stage: seen.append(stage))
    assert seen == ["forward pass", "queued", "running"] and fake.posts == 1
    _FakeNDIF(monkeypatch, post_status=401)
    with pytest.raises(RemoteError, match="NDIF refused or failed the request: Failed to send request: invalid API key"):
        s.analyze(PROBE_IDS)
    _FakeNDIF(monkeypatch, connect_error=ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(RemoteError, match=r"the nnsight trace failed \(ConnectionRefusedError: .*Connection refused\).*try again"):
        s.analyze(PROBE_IDS)
    assert s.model.bytes_moved == 0  # nothing came back, nothing was half-read
    assert_same(local.analyze(PROBE_IDS), shown)  # the model and its session are as they were
