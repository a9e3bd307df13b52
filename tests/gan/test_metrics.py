"""Issue 5: FID/KID through torch-fidelity with offline weights (gan/metrics.py, `mtf-gan metrics`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan import metrics as M

N = 40  # images a side: enough for a full-rank-ish KID and a finite FID, cheap on 2 cores


def _write(folder: Path, imgs: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("imgs")
    noise = rng.integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    flat = np.repeat(np.repeat(rng.integers(0, 256, size=(N, 1, 1, 3), dtype=np.uint8), 32, 1), 32, 2)
    noise2 = rng.integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    return {"noise": _write(root / "noise", noise), "flat": _write(root / "flat" / "sub", flat).parent,
            "noise2": _write(root / "noise2", noise2)}


def test_metrics_equal_torch_fidelity_on_same_folders(folders, inception_weights, tmp_path, one_thread):
    import torch_fidelity

    ours = M.compute_metrics(folders["noise"], folders["noise2"], inception_weights=inception_weights, batch=16)
    ref = torch_fidelity.calculate_metrics(
        input1=str(folders["noise"]), input2=str(folders["noise2"]), fid=True, kid=True, cuda=False,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
        kid_subset_size=N, cache=False, cache_root=str(tmp_path), verbose=False, batch_size=16,
        save_cpu_ram=True)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
    assert ours["n_real"] == ours["n_fake"] == N and ours["resolution"] == 32


def test_fid_of_a_set_with_itself_is_zero_and_noise_vs_flat_is_large(folders, inception_weights, one_thread):
    fe = M.load_inception(inception_weights)
    f_noise = M.extract_features(M.iter_real_images(folders["noise"]), fe, batch=20)
    f_flat = M.extract_features(M.iter_real_images(folders["flat"]), fe, batch=20)  # recursive folder read
    assert f_noise.shape == (N, 2048) and f_noise.std() > 0
    s_noise, s_flat = M.fid_statistics(f_noise), M.fid_statistics(f_flat)
    same = M.fid_from_statistics(s_noise, s_noise)
    apart = M.fid_from_statistics(s_noise, s_flat)
    assert abs(same) < 1e-3 * apart
    assert apart > 1.0
    # batch-size independence: 7 does not divide 40, so the last batch is partial
    f7 = M.extract_features(M.iter_real_images(folders["noise"]), fe, batch=7)
    assert M.fid_from_statistics(M.fid_statistics(f7), s_flat) == pytest.approx(apart, rel=1e-4)


def test_missing_weights_message_and_exit_status_2(tmp_path, monkeypatch, folders):
    from gan.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(M.MissingWeightsError) as exc:
        M.resolve_inception_weights()
    msg = str(exc.value)
    assert M.INCEPTION_FILE in msg and M.INCEPTION_URL in msg
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / M.INCEPTION_FILE) in msg
    res = CliRunner().invoke(main, ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"])])
    assert res.exit_code == 2, res.output
    assert M.INCEPTION_URL in res.output and "Traceback" not in res.output


def test_fid_via_network_equals_fid_on_generate_pngs(demo_run, prepared_archive, inception_weights, tmp_path,
                                                    one_thread):
    """Generate the same seeds with `mtf-gan generate` (per class, as the labels were drawn)
    and compare: catches uint8 conversion and range bugs in the on-the-fly path."""
    from gan.checkpoint import load_generator
    from gan.cli import main

    n = 24
    ckpt = demo_run["checkpoint"]
    G = load_generator(ckpt)
    labels = M.fake_labels(M.real_labels(prepared_archive), n)
    assert G.c_dim == labels.shape[1]
    out = tmp_path / "gen"
    cls = labels.argmax(1).tolist()
    for k in sorted(set(cls)):
        seeds = ",".join(str(s) for s in range(n) if cls[s] == k)
        r = CliRunner().invoke(main, ["generate", "--network", str(ckpt), "--seeds", seeds, "--class", str(k),
                                      "--outdir", str(out)])
        assert r.exit_code == 0, r.output
    via_net = M.compute_metrics(prepared_archive, ckpt, metrics=("fid",), num=n, batch=24,
                                inception_weights=inception_weights)
    via_png = M.compute_metrics(prepared_archive, out, metrics=("fid",), batch=24,
                                inception_weights=inception_weights)
    assert via_net["n_fake"] == via_png["n_fake"] == n
    assert via_net["fid"] == pytest.approx(via_png["fid"], rel=1e-4)
    assert via_net["fid"] > 0


def test_cli_prints_table_and_appends_jsonl_rows(folders, inception_weights, tmp_path, one_thread):
    from gan.cli import main

    args = ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"]), "--num", "20",
            "--stats-cache", str(tmp_path / "cache"),
            "--inception-weights", str(inception_weights), "--out", str(tmp_path), "--batch", "20"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "fid" in res.output and "metrics.jsonl" in res.output
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["fid", "kid"]
    assert rows[0]["n_real"] == N and rows[0]["n_fake"] == 20 and rows[0]["resolution"] == 32
    assert rows[0]["weights_sha256"] == M.sha256_file(inception_weights) and rows[0]["value"] > 1.0
    assert rows[0]["real"] == str(folders["noise"]) and rows[0]["seconds"] > 0
    # appending, not overwriting
    assert CliRunner().invoke(main, args).exit_code == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert len(list((tmp_path / "cache").glob("real-features-*.pt"))) == 1


def test_real_feature_cache_equal_reused_and_invalidated(folders, inception_weights, tmp_path, monkeypatch,
                                                          one_thread):
    import shutil

    real = tmp_path / "real"
    real.mkdir()
    for f in sorted(folders["noise"].iterdir())[:12]:
        shutil.copy(f, real / f.name)
    fake, cache = folders["flat"], tmp_path / "cache"
    kw = dict(metrics=("fid",), num=12, batch=12, inception_weights=inception_weights)
    uncached = M.compute_metrics(real, fake, **kw)
    first = M.compute_metrics(real, fake, cache_dir=cache, **kw)
    assert len(list(cache.glob("real-features-*.pt"))) == 1

    def no_real_extraction(*a, **k):
        raise AssertionError("real side extracted despite the cache")

    monkeypatch.setattr(M, "iter_real_images", no_real_extraction)
    second = M.compute_metrics(real, fake, cache_dir=cache, **kw)
    assert uncached["fid"] == pytest.approx(first["fid"], rel=1e-6) == pytest.approx(second["fid"], rel=1e-6)
    monkeypatch.undo()
    (real / sorted(real.iterdir())[0].name).unlink()  # the source changes: the cache must not be reused
    third = M.compute_metrics(real, fake, cache_dir=cache, **kw)
    assert third["n_real"] == 11 and len(list(cache.glob("real-features-*.pt"))) == 2
