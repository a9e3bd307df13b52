"""``gan.published``: published StyleGAN2-ADA pickles read without executing them, and
``mtf-gan import``.

The two fixtures are real snapshots of the published training code (their embedded
sources replaced by a placeholder); ``sg2a-tiny-pkl-outputs.pt`` holds what the published
networks computed on fixed inputs. The malicious, broken and unsupported pickles are
made here (:mod:`tests._pickles` writes the published format).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gan.checkpoint import load_generator, read_network
from gan.cli import main
from gan.networks import NetworkConfig, build_discriminator
from gan.published import UnsafePickle, import_pickle
from gan.util import UserError
from tests._pickles import read_tree, with_record, write_snapshot
from tests._settings import shared_fixture

KINDS = ("uncond", "cond")


@pytest.fixture(scope="module")
def outputs() -> dict:
    return torch.load(shared_fixture("sg2a-tiny-pkl-outputs.pt"), weights_only=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("kind", KINDS)
def test_fixture_imports_and_reproduces_the_published_outputs(kind, outputs, one_thread):
    src = shared_fixture(f"sg2a-tiny-{kind}.pkl")
    ref = outputs[kind]
    state = import_pickle(src)
    net = NetworkConfig(**state["config"]["network"])
    assert (net.z_dim, net.w_dim, net.img_resolution, net.c_dim) == (64, 64, 32, 3 if kind == "cond" else 0)
    assert (net.mapping_layers, net.channel_base, net.channel_max, net.mbstd_group_size) == (2, 1024, 64, 4)
    G = load_generator(src)  # the on-the-fly path everything with --network takes
    D = build_discriminator(net).eval()
    D.load_state_dict(state["D"])
    with torch.no_grad():
        img = G(ref["z"], ref["c"], noise_mode="const")  # [4, 3, 32, 32]
        img_trunc = G(ref["z"], ref["c"], truncation_psi=0.7, noise_mode="const")
        d = D(ref["img"], ref["c"])  # [4, 1]
    assert _rel(img, ref["img"]) < 1e-5
    assert _rel(img_trunc, ref["img_trunc"]) < 1e-5
    assert _rel(d, ref["d"]) < 1e-5
    assert state["augment_p"] == pytest.approx(float(ref["augment_p"]))
    # G (the training copy) differs from G_ema in the fixtures: each is imported as itself.
    assert any(not torch.equal(state["G"][k], state["G_ema"][k]) for k in state["G"])


def test_import_records_hashes_imports_no_nvidia_module_and_writes_no_source(tmp_path):
    src = shared_fixture("sg2a-tiny-uncond.pkl")
    assert importlib.util.find_spec("torch_utils") is None and importlib.util.find_spec("dnnlib") is None
    dest = tmp_path / "ffhq-tiny.pt"
    res = CliRunner().invoke(main, ["import", str(src), str(dest)])
    assert res.exit_code == 0, res.output
    assert "mbstd_group_size 4" in res.output  # the settings taken from the file are printed
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib", "training")]
    state = torch.load(dest, weights_only=True)
    prov = state["provenance"]
    assert prov["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    # The fixtures' placeholders are the sources the published loader would run: hashed only.
    assert len(prov["embedded_sources_sha256"]) == 2  # networks.py and augment.py
    assert all(len(sha) == 64 for sha in prov["embedded_sources_sha256"])
    assert b"published module source is omitted" in src.read_bytes()
    assert b"published module source is omitted" not in dest.read_bytes()
    assert set(state) >= {"G", "D", "G_ema", "config", "provenance"} and state["kind"] == "imported"
    # The imported file and the pickle give the same generator.
    z = torch.randn([2, 64], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = load_generator(dest)(z, None, noise_mode="const")
        b = load_generator(src)(z, None, noise_mode="const")
    assert torch.equal(a, b)


def test_generate_from_a_conditional_pkl_on_cpu(tmp_path):
    src = shared_fixture("sg2a-tiny-cond.pkl")
    out = tmp_path / "gen"
    res = CliRunner().invoke(main, ["generate", "--network", str(src), "--seeds", "0-2", "--class", "1",
                                    "--outdir", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.png")) == ["seed0000.png", "seed0001.png", "seed0002.png"]


# ---------------------------------------------------------------------------- bad input


class _Shell:
    """A ``__reduce__`` that would run a shell command on a plain ``pickle.load``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Exec:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("payload, global_name", [(_Shell, "posix.system"), (_Exec, "builtins.exec")])
def test_a_pickle_with_another_global_is_refused_by_name_and_nothing_runs(payload, global_name, tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    tree = read_tree(shared_fixture("sg2a-tiny-uncond.pkl"))
    tree["training_set_kwargs"]["payload"] = payload(marker)  # deep inside an otherwise real snapshot
    write_snapshot(bad, tree)
    with pytest.raises(UnsafePickle, match=global_name.replace(".", r"\.")):
        import_pickle(bad)
    res = CliRunner().invoke(main, ["generate", "--network", str(bad), "--seeds", "0", "--outdir", str(tmp_path / "g")])
    assert res.exit_code == 1 and global_name in res.output and "Traceback" not in res.output
    assert not marker.exists()


def test_an_embedded_source_that_would_write_a_file_is_imported_and_never_run(tmp_path):
    marker = tmp_path / "written-by-module-src"
    evil = f"import os\nopen({str(marker)!r}, 'w').write('ran')\nos.system('touch {marker}')\n"
    bad = write_snapshot(tmp_path / "src.pkl", read_tree(shared_fixture("sg2a-tiny-uncond.pkl")),
                         module_src=lambda obj: evil)
    state = import_pickle(bad)
    assert not marker.exists()
    assert list(state["provenance"]["embedded_sources_sha256"]) == [hashlib.sha256(evil.encode()).hexdigest()]
    dest = tmp_path / "imported.pt"
    assert CliRunner().invoke(main, ["import", str(bad), str(dest)]).exit_code == 0
    assert evil.encode() not in dest.read_bytes() and not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_truncated_or_corrupt_pickle_is_a_clear_error(damage, tmp_path):
    data = shared_fixture("sg2a-tiny-uncond.pkl").read_bytes()
    bad = tmp_path / "broken.pkl"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(UserError, match="cannot be read.*truncated, corrupt or not a pickle"):
        import_pickle(bad)


def test_a_pt_that_is_not_a_checkpoint_is_refused_naming_it(tmp_path):
    fake = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, fake)
    for args in (["generate", "--network", str(fake), "--seeds", "0", "--outdir", str(tmp_path / "g")],
                 ["import", str(fake), str(tmp_path / "x.pt")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and str(fake) in res.output and "Traceback" not in res.output
    assert "not an mtf-gan training checkpoint" in CliRunner().invoke(main, [
        "generate", "--network", str(fake), "--seeds", "0", "--outdir", str(tmp_path / "g")]).output


def _edit_g(tree: dict, synthesis_kwargs=None, top=None, synthesis_child=None) -> dict:
    """The tree with G's stored constructor arguments (or synthesis children) changed, in G and G_ema."""
    for key in ("G", "G_ema"):
        G = tree[key]
        kwargs = dict(G.state["_init_kwargs"])
        if synthesis_kwargs:
            kwargs["synthesis_kwargs"] = {**kwargs["synthesis_kwargs"], **synthesis_kwargs}
        kwargs.update(top or {})
        state = {**G.state, "_init_kwargs": kwargs}
        if synthesis_child:
            synth = G.child("synthesis")
            mods = dict(synth.state["_modules"])
            mods.update(synthesis_child)
            state["_modules"] = {**state["_modules"], "synthesis": with_record(synth, state={**synth.state,
                                                                                            "_modules": mods})}
        tree[key] = with_record(G, state=state)
    return tree


def _edit_d(tree: dict, **kwargs) -> dict:
    D = tree["D"]
    tree["D"] = with_record(D, state={**D.state, "_init_kwargs": {**D.state["_init_kwargs"], **kwargs}})
    return tree


@pytest.mark.parametrize("edit, message", [
    (lambda t: _edit_g(t, synthesis_child={"input": with_record(t["G"].child("synthesis").child("b4"),
                                                                   class_name="SynthesisInput")}), "StyleGAN3"),
    (lambda t: _edit_g(t, synthesis_kwargs={"architecture": "orig"}), "'orig' architecture"),
    (lambda t: _edit_g(t, synthesis_kwargs={"architecture": "resnet"}), "'resnet' architecture"),
    (lambda t: _edit_g(t, top={"img_channels": 1}), "not RGB"),
    (lambda t: _edit_d(_edit_g(t, synthesis_kwargs={"channel_max": 32}), channel_max=32),
     r"G: published state dict: shapes differ for synthesis\.b"),
])
def test_unsupported_or_mismatched_networks_are_refused_saying_what_they_are(edit, message, tmp_path):
    bad = write_snapshot(tmp_path / "other.pkl", edit(read_tree(shared_fixture("sg2a-tiny-uncond.pkl"))))
    with pytest.raises(UserError, match=message):
        import_pickle(bad)


def test_a_tensorflow_pickle_is_refused_with_how_to_convert_it(tmp_path):
    # What the TF version writes, by hand: a dnnlib.tflib.network.Network built with NEWOBJ and its state.
    data = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"dnnlib.tflib.network\nNetwork\n" + pickle.EMPTY_TUPLE
            + pickle.NEWOBJ + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP)
    bad = tmp_path / "stylegan2-ffhq-config-f.pkl"
    bad.write_bytes(data)
    with pytest.raises(UnsafePickle, match="TensorFlow.*legacy.py"):
        import_pickle(bad)


def test_import_never_overwrites_dest(tmp_path):
    dest = tmp_path / "mine.pt"
    dest.write_bytes(b"my work")
    res = CliRunner().invoke(main, ["import", str(shared_fixture("sg2a-tiny-uncond.pkl")), str(dest)])
    assert res.exit_code == 1 and "exists" in res.output
    assert dest.read_bytes() == b"my work"


def test_read_network_gives_one_form_for_checkpoints_imports_and_pickles(tmp_path):
    src = shared_fixture("sg2a-tiny-cond.pkl")
    from_pkl = read_network(src)
    dest = tmp_path / "cond.pt"
    assert CliRunner().invoke(main, ["import", str(src), str(dest)]).exit_code == 0
    from_pt = read_network(dest)
    assert from_pt["config"] == from_pkl["config"] and from_pt["kind"] == from_pkl["kind"] == "imported"
    for key in ("G", "D", "G_ema"):
        assert from_pt[key].keys() == from_pkl[key].keys()
        assert all(torch.equal(from_pt[key][k], from_pkl[key][k]) for k in from_pkl[key])
    assert dataclasses.asdict(NetworkConfig(**from_pt["config"]["network"]))["c_dim"] == 3


def test_resume_refuses_a_published_or_imported_network_and_names_init(tmp_path, prepared_archive):
    src = shared_fixture("sg2a-tiny-uncond.pkl")
    dest = tmp_path / "imported.pt"
    assert CliRunner().invoke(main, ["import", str(src), str(dest)]).exit_code == 0
    for net in (src, dest):
        res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path / "runs"),
                                        "--resume", str(net)])
        assert res.exit_code == 1 and "--init" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "runs").exists()


def test_a_missing_published_network_names_where_to_get_it_exit_2(tmp_path):
    missing = tmp_path / "ffhq-res256-mirror-paper256-noaug.pkl"
    for args in (["generate", "--network", str(missing), "--seeds", "0", "--outdir", str(tmp_path / "g")],
                 ["metrics", "--real", str(tmp_path), "--network", str(missing)],
                 ["import", str(missing), str(tmp_path / "x.pt")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        assert "transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl" in res.output
        assert "Traceback" not in res.output


class _ObjectDtype:
    """A numpy dtype whose state hides an object field (numpy's own setstate would accept it,
    and reading the 'scalar' would follow attacker bytes as a pointer)."""

    def __reduce__(self):
        import numpy as np

        return np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0)


def test_a_structured_numpy_dtype_is_refused_before_numpy_sees_it(tmp_path):
    tree = read_tree(shared_fixture("sg2a-tiny-uncond.pkl"))
    tree["training_set_kwargs"]["dtype"] = _ObjectDtype()
    bad = write_snapshot(tmp_path / "dtype.pkl", tree)
    with pytest.raises(UserError, match="not a plain number type"):
        import_pickle(bad)
