"""Lens files from elsewhere (issue 20 item 2; issue 19's published formats): checked against the model before
anything is allocated, never broadcast, ``kind`` honoured; the tuned-lens package's directory format and
TransformerLens's Jacobian-lens ``.pt`` artifact load by path and read like an independent computation from
Hugging Face's own hidden states."""

import gc
import json
import pickle
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import save_file

from families import FAMILIES, PROBE_IDS, _final_norm, build_family_dir
from resid_widgets import Session
from resid_widgets.lenses import JacobianLens, Lens, TunedLens

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = build_family_dir(FAMILIES["llama"], tmp_path_factory.mktemp("llama"))
    return path, Session(str(path), device="cpu")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    path = build_family_dir(FAMILIES["gpt2"], tmp_path_factory.mktemp("gpt2"))
    return path, Session(str(path), device="cpu")


def _header_file(path: Path, tensors: dict, **meta) -> Path:
    base = {"format": "resid_widgets.lens/1", "kind": "jacobian", "n_rows": "3", "d_model": "64", "centre_input": "0",
            "info": "{}"}
    save_file(tensors, str(path), metadata={**base, **meta})
    return path


# ---- our own format: the header is checked before anything is allocated ----------------------------
def test_a_huge_claimed_width_is_refused_before_allocating(tmp_path, llama):
    _, s = llama
    f = _header_file(tmp_path / "big.safetensors", {"c.0": torch.zeros(4)}, d_model="20000")
    assert f.stat().st_size < 70_000
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    for target in (None, s):
        with pytest.raises(ValueError, match="d_model|20000|made for"):
            Lens.load(f, session_or_model=target)
    gc.collect()
    assert proc.memory_info().rss - before < 50e6  # before the fix: eye(20000) = 1.6 GB


@pytest.mark.parametrize("tensors, meta, match", [
    ({"D.0": torch.zeros(1)}, {}, r"shape \[1\], expected \[64, 64\]"),
    ({"D.0": torch.zeros(64)}, {}, r"shape \[64\], expected \[64, 64\]"),
    ({"D.0": torch.zeros(1, 64)}, {}, r"expected \[64, 64\]"),
    ({"c.1": torch.zeros(1)}, {}, r"shape \[1\], expected \[64\]"),
    ({"c.0": torch.zeros(64, dtype=torch.int32)}, {}, "I32"),
    ({"D.2": torch.zeros(64, 64)}, {}, "row 2"),
    ({"X.0": torch.zeros(64)}, {}, "unexpected tensor"),
    ({}, {"n_rows": "three"}, "n_rows"),
    ({}, {"d_model": "-64"}, "d_model"),
    ({}, {"kind": "magic"}, "unknown lens kind"),
    ({}, {"info": "{not json"}, "not JSON"),
    ({}, {"centre_input": "yes"}, "centre_input"),
])
def test_bad_headers_get_one_clear_error_and_leave_the_session_alone(tmp_path, llama, tensors, meta, match):
    _, s = llama
    before = dict(s._lenses)
    f = _header_file(tmp_path / "bad.safetensors", tensors, **meta)
    with pytest.raises(ValueError, match=match):
        s.load_lens(f)
    assert s._lenses == before


def test_load_lens_honours_kind(tmp_path, llama):
    _, s = llama
    JacobianLens.identity(s).save(tmp_path / "j.safetensors")
    before = dict(s._lenses)
    with pytest.raises(ValueError, match="not a tuned lens"):
        s.load_lens(tmp_path / "j.safetensors", kind="tuned")
    with pytest.raises(ValueError, match="kind must be"):
        s.load_lens(tmp_path / "j.safetensors", kind="magic")
    assert s._lenses == before
    assert s.load_lens(tmp_path / "j.safetensors", kind="jacobian").kind == "jacobian"
    s._lenses.clear()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/resid_widgets_pwned",))


def test_text_and_malicious_pt_files_are_refused(tmp_path, llama):
    _, s = llama
    (tmp_path / "text.pt").write_text("just some text\n")
    with pytest.raises(ValueError, match="not a readable PyTorch"):
        s.load_lens(tmp_path / "text.pt")
    Path("/tmp/resid_widgets_pwned").unlink(missing_ok=True)
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"J": _Evil()}, fh)
    torch.save({"J": {0: torch.zeros(2, 2)}, "x": _Evil()}, tmp_path / "evil_zip.pt")
    for name in ("evil.pt", "evil_zip.pt"):
        with pytest.raises(ValueError, match="not a readable PyTorch"):
            s.load_lens(tmp_path / name)
    assert not Path("/tmp/resid_widgets_pwned").exists()
    with pytest.raises(FileNotFoundError):
        s.load_lens(tmp_path / "missing.pt")


# ---- the tuned-lens package's format --------------------------------------------------------------
def _tuned_lens_dir(path: Path, L: int, d: int, *, seed=0, mean_free=False, name="tiny", bias=True, **cfg) -> tuple[list, list]:
    """What ``tuned_lens.TunedLens.save`` writes: config.json + the layer_translators' state_dict."""
    g = torch.Generator().manual_seed(seed)
    translators = torch.nn.ModuleList([torch.nn.Linear(d, d, bias=bias) for _ in range(L)])
    with torch.no_grad():
        for t in translators:
            t.weight.copy_(torch.randn(d, d, generator=g) * 0.2)
            if mean_free:  # W 1 = 0: the raw row's mean cannot reach the output
                t.weight.sub_(t.weight.mean(1, keepdim=True))
            if bias:
                t.bias.copy_(torch.randn(d, generator=g) * 0.5)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(translators.state_dict(), path / "params.pt")
    config = dict(base_model_name_or_path=name, d_model=d, num_hidden_layers=L, bias=bias, base_model_revision=None,
                  unembed_hash=None, lens_type="linear_tuned_lens") | cfg
    (path / "config.json").write_text(json.dumps(config))
    return [t.weight.detach() for t in translators], [t.bias.detach() if bias else torch.zeros(d) for t in translators]


def _reference_logprobs(model_dir: Path, ids: list[int], transform) -> np.ndarray:
    """Hugging Face's hidden states, ``transform(i, h)``, the model's final norm and lm_head -> [L, T, V] log-probs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        L = model.config.num_hidden_layers
        rows = [model.get_output_embeddings()(_final_norm(model)(transform(i, out.hidden_states[i][0].double()).float()))
                for i in range(L)]
    return torch.log_softmax(torch.stack(rows).double(), -1).numpy()


def _lens_logprobs(analysis, ids) -> np.ndarray:
    return (analysis.target_logits - analysis.log_norm[..., None])  # [R, T, n]


def test_tuned_lens_directory_reads_like_the_package_on_an_rmsnorm_model(tmp_path, llama):
    path, s = llama
    W, b = _tuned_lens_dir(tmp_path / "lens", s.n_layers, s.d_model)
    lens = s.load_lens(tmp_path / "lens")
    assert isinstance(lens, TunedLens) and lens.info["exact"] and lens.info["source"] == "tuned-lens"
    targets = [5, 17, 42, 305]
    a = s.analyze(PROBE_IDS, lens="tuned", targets=targets)
    ref = _reference_logprobs(path, PROBE_IDS, lambda i, h: h + h @ W[i].double().T + b[i].double())
    np.testing.assert_allclose(_lens_logprobs(a, PROBE_IDS)[:-1], ref[..., targets], rtol=1e-4, atol=2e-4)
    s._lenses.clear()


def test_tuned_lens_on_a_layernorm_model_is_exact_when_the_mean_cannot_matter(tmp_path, gpt2):
    path, s = gpt2
    W, b = _tuned_lens_dir(tmp_path / "lens", s.n_layers, s.d_model, mean_free=True)
    with pytest.warns(UserWarning, match="raw hidden states"):
        lens = s.load_lens(tmp_path / "lens", kind="tuned")
    assert lens.info["exact"] is False  # in general: the warning says why
    targets = [5, 17, 42, 305]
    a = s.analyze(PROBE_IDS, lens="tuned", targets=targets)
    ref = _reference_logprobs(path, PROBE_IDS, lambda i, h: h + h @ W[i].double().T + b[i].double())
    np.testing.assert_allclose(_lens_logprobs(a, PROBE_IDS)[:-1], ref[..., targets], rtol=1e-4, atol=2e-4)
    s._lenses.clear()


@pytest.mark.parametrize("change, match", [
    (dict(num_hidden_layers=5), "5 layers"),
    (dict(d_model=32), "d_model 32"),
    (dict(lens_type="bilinear"), "lens_type"),
    (dict(bias="yes"), "bias"),
    (dict(d_model="64"), "not an integer"),
])
def test_tuned_lens_config_mismatch_is_refused(tmp_path, llama, change, match):
    _, s = llama
    _tuned_lens_dir(tmp_path / "lens", s.n_layers, s.d_model, **change)
    with pytest.raises(ValueError, match=match):
        s.load_lens(tmp_path / "lens")
    assert s._lenses == {}


def test_tuned_lens_params_of_the_wrong_shape_are_refused(tmp_path, llama):
    _, s = llama
    L, d = s.n_layers, s.d_model
    _tuned_lens_dir(tmp_path / "lens", L, d)
    state = torch.load(tmp_path / "lens" / "params.pt")
    state["0.bias"] = torch.zeros(1)  # would broadcast
    torch.save(state, tmp_path / "lens" / "params.pt")
    with pytest.raises(ValueError, match=r"'0.bias' has shape \[1\]"):
        s.load_lens(tmp_path / "lens")
    del state["0.bias"]
    torch.save(state, tmp_path / "lens" / "params.pt")
    with pytest.raises(ValueError, match="missing"):
        s.load_lens(tmp_path / "lens")
    torch.save({k: torch.zeros(4096, 4096) for k in ("a", "b")}, tmp_path / "lens" / "params.pt")  # 128 MB
    with pytest.raises(ValueError, match="bytes, more than"):
        s.load_lens(tmp_path / "lens")


# ---- TransformerLens's Jacobian-lens artifact --------------------------------------------------------
def _tl_artifact(path: Path, d: int, layers=(0,), *, seed=1, **meta) -> dict:
    """What ``transformer_lens.tools.analysis.JacobianLens.save`` writes (the reference artifact format)."""
    g = torch.Generator().manual_seed(seed)
    J = {l: torch.eye(d) + 0.3 * torch.randn(d, d, generator=g) for l in layers}
    payload = {"J": {l: m.half() for l, m in J.items()}, "n_prompts": 3, "source_layers": list(layers), "d_model": d,
               "metadata": {"transformer_lens_version": "4.3.0", "corpus": "tests", **meta}}
    torch.save(payload, path)
    return {l: m.half().double() for l, m in J.items()}


def test_transformer_lens_artifact_reads_like_an_independent_computation(tmp_path, llama):
    path, s = llama
    J = _tl_artifact(tmp_path / "lens.pt", s.d_model, layers=tuple(range(s.n_layers - 1)))
    lens = s.load_lens(tmp_path / "lens.pt")
    assert isinstance(lens, JacobianLens) and lens.fitted_rows() == [l + 1 for l in J] and lens.info["corpus"] == "tests"
    targets = [5, 17, 42, 305]
    a = s.analyze(PROBE_IDS, lens="jacobian", targets=targets)
    # TransformerLens layer l = the output of block l = hidden_states[l + 1]; row 0 stays the logit lens
    ref = _reference_logprobs(path, PROBE_IDS, lambda i, h: h if i == 0 else h @ J[i - 1].T)
    np.testing.assert_allclose(_lens_logprobs(a, PROBE_IDS)[:-1], ref[..., targets], rtol=1e-4, atol=2e-4)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "lens.pt").write_bytes((tmp_path / "lens.pt").read_bytes())
    assert s.load_lens(tmp_path / "dir").fitted_rows() == lens.fitted_rows()
    s._lenses.clear()


@pytest.mark.parametrize("kwargs, match", [
    (dict(transformer_lens_version="9.0.0"), "newer than the installed"),
    (dict(transformer_lens_version="banana"), "not a version"),
    (dict(layers=(5,)), "outside 0"),
    (dict(target_layer=0), "targets layer"),
    (dict(model_name="some-other-model"), "fitted for model"),
    (dict(d=32), "d_model|shape"),
])
def test_transformer_lens_artifact_mismatch_is_refused(tmp_path, llama, kwargs, match):
    _, s = llama
    d = kwargs.pop("d", s.d_model)
    layers = kwargs.pop("layers", (0,))
    _tl_artifact(tmp_path / "lens.pt", d, layers, **kwargs)
    with pytest.raises(ValueError, match=match):
        s.load_lens(tmp_path / "lens.pt")
    assert s._lenses == {}


def test_hub_names_need_the_hub_and_a_kind(llama, monkeypatch):
    _, s = llama
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        s.load_lens("gpt2", kind="tuned")
    with pytest.raises(ValueError, match="kind='tuned'"):
        s.load_lens("EleutherAI/pythia-160m")
    with pytest.raises(FileNotFoundError):
        s.load_lens("./no/such/lens.safetensors")
    assert s._lenses == {}
