"""FID/KID/IS/PR through torch-fidelity with offline weights (gan/metrics.py, `mtf-gan metrics`).

The protocol tests (sources, cache, sharding, per-class, result rows, CLI, in-training
metrics) run with a small stub extractor put where the metrics build theirs
(``stub_weights``, tests/_weights.py), so they take seconds; the equivalence with
torch-fidelity and the FID properties on the real Inception architecture (random weights)
are in the ``slow`` set.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan import extractors as E
from gan import metrics as M
from gan.util import MissingWeights
from tests._weights import FEATURE_DIMS, load_stub, make_stub_weights, use_stub_extractors

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


@pytest.fixture(scope="module")
def stub_file(tmp_path_factory) -> Path:
    return make_stub_weights(tmp_path_factory.mktemp("stub") / "stub-extractor.pt")


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """``$MTF_CACHE_DIR`` of this test alone (the session's is shared), so files can be counted."""
    root = tmp_path / "mtf-cache"
    monkeypatch.setenv("MTF_CACHE_DIR", str(root))
    return root


@pytest.fixture
def stub_weights(stub_file) -> Path:
    """A weights file for ``--inception-weights``, with the stub extractor built from it for this
    test (its own patch, so a test's ``monkeypatch.undo()`` keeps the stub)."""
    with pytest.MonkeyPatch.context() as mp:
        use_stub_extractors(mp)
        yield stub_file


@pytest.mark.slow
def test_metrics_equal_torch_fidelity_on_same_folders(folders, inception_weights, tmp_path, one_thread):
    import torch_fidelity

    ours = M.compute_metrics(folders["noise"], folders["noise2"], metrics=("fid", "kid", "is"),
                             inception_weights=inception_weights, batch=16)
    ref = torch_fidelity.calculate_metrics(
        input1=str(folders["noise2"]), input2=str(folders["noise"]), fid=True, kid=True, isc=True, cuda=False,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
        kid_subset_size=N, cache=False, cache_root=str(tmp_path), verbose=False, batch_size=16,
        save_cpu_ram=True)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
    # IS is of the fakes alone (torch-fidelity's input1)
    assert ours["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-4) and ours["is"] >= 1.0
    assert ours["n_real"] == ours["n_fake"] == N and ours["resolution"] == 32


@pytest.mark.parametrize("arch", ["stub", pytest.param("inception", marks=pytest.mark.slow)])
def test_fid_of_a_set_with_itself_is_zero_and_noise_vs_flat_is_large(folders, arch, request, one_thread):
    if arch == "stub":
        fe = load_stub(request.getfixturevalue("stub_file"))
    else:
        fe = E.load_inception(request.getfixturevalue("inception_weights"))
    f_noise = E.extract_features(M.iter_real_images(folders["noise"]), fe, batch=20)
    f_flat = E.extract_features(M.iter_real_images(folders["flat"]), fe, batch=20)  # recursive folder read
    assert f_noise.shape == (N, 2048 if arch == "inception" else FEATURE_DIMS[E.POOL]) and f_noise.std() > 0
    s_noise, s_flat = M.fid_statistics(f_noise), M.fid_statistics(f_flat)
    same = M.fid_from_statistics(s_noise, s_noise)
    apart = M.fid_from_statistics(s_noise, s_flat)
    assert abs(same) < 1e-3 * apart
    assert apart > 1.0
    # batch-size independence: 7 does not divide 40, so the last batch is partial
    f7 = E.extract_features(M.iter_real_images(folders["noise"]), fe, batch=7)
    assert M.fid_from_statistics(M.fid_statistics(f7), s_flat) == pytest.approx(apart, rel=1e-4)


def test_missing_weights_message_and_exit_status_2(tmp_path, monkeypatch, folders):
    from gan.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(MissingWeights) as exc:
        E.resolve_inception_weights()
    msg = str(exc.value)
    assert E.INCEPTION_FILE in msg and E.INCEPTION_URL in msg
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / E.INCEPTION_FILE) in msg
    res = CliRunner().invoke(main, ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"])])
    assert res.exit_code == 2, res.output
    assert E.INCEPTION_URL in res.output and "Traceback" not in res.output


def test_fid_via_network_equals_fid_on_generate_pngs(demo_run, prepared_archive, stub_weights, tmp_path,
                                                    one_thread):
    """Generate the same seeds with `mtf-gan generate` (per class, as the labels were drawn)
    and compare: catches uint8 conversion and range bugs in the on-the-fly path."""
    from gan.checkpoint import load_generator
    from gan.cli import main
    from gan.generate import fake_labels, real_labels

    n = 24
    ckpt = demo_run["checkpoint"]
    G = load_generator(ckpt)
    labels = fake_labels(real_labels(prepared_archive), n)
    assert G.c_dim == labels.shape[1]
    out = tmp_path / "gen"
    cls = labels.argmax(1).tolist()
    for k in sorted(set(cls)):
        seeds = ",".join(str(s) for s in range(n) if cls[s] == k)
        r = CliRunner().invoke(main, ["generate", "--network", str(ckpt), "--seeds", seeds, "--class", str(k),
                                      "--outdir", str(out)])
        assert r.exit_code == 0, r.output
    via_net = M.compute_metrics(prepared_archive, ckpt, metrics=("fid",), num=n, batch=24,
                                inception_weights=stub_weights)
    via_png = M.compute_metrics(prepared_archive, out, metrics=("fid",), batch=24,
                                inception_weights=stub_weights)
    assert via_net["n_fake"] == via_png["n_fake"] == n
    assert via_net["fid"] == pytest.approx(via_png["fid"], rel=1e-4)
    assert via_net["fid"] > 0


def test_cli_prints_table_and_appends_jsonl_rows(folders, stub_weights, tmp_path, one_thread):
    from gan.cli import main

    args = ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"]), "--num", "20",
            "--stats-cache", str(tmp_path / "cache"),
            "--inception-weights", str(stub_weights), "--out", str(tmp_path), "--batch", "20"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "fid" in res.output and "metrics.jsonl" in res.output
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["fid", "kid"]
    assert rows[0]["n_real"] == N and rows[0]["n_fake"] == 20 and rows[0]["resolution"] == 32
    assert rows[0]["weights_sha256"] == E.sha256_file(stub_weights) and rows[0]["value"] > 1.0
    assert rows[0]["real"] == str(folders["noise"]) and rows[0]["seconds"] > 0
    # appending, not overwriting
    assert CliRunner().invoke(main, args).exit_code == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert len(list((tmp_path / "cache").glob("real-features-*.pt"))) == 1


def test_real_feature_cache_equal_reused_and_invalidated(folders, stub_weights, tmp_path, monkeypatch,
                                                          one_thread):
    import shutil

    real = tmp_path / "real"
    real.mkdir()
    for f in sorted(folders["noise"].iterdir())[:12]:
        shutil.copy(f, real / f.name)
    fake, cache = folders["flat"], tmp_path / "cache"
    kw = dict(metrics=("fid",), num=12, batch=12, inception_weights=stub_weights)
    uncached = M.compute_metrics(real, fake, cache_dir=None, **kw)
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


def test_metrics_options_are_typed_and_a_misspelt_keyword_is_an_error(folders, stub_weights):
    opts = M.MetricsOptions(metrics=["fid"], inception_weights=stub_weights, num=8, batch=8)
    assert M.compute_metrics(folders["noise"], folders["flat"], opts)["n_fake"] == 8
    with pytest.raises(TypeError, match="metric"):
        M.compute_metrics(folders["noise"], folders["flat"], opts, metric=("kid",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.num = 4


def test_inception_score_is_one_for_identical_predictions_and_k_for_k_confident_classes():
    k, n = 10, 200
    same = torch.zeros(n, 1008)
    assert M.is_from_logits(same)[0] == pytest.approx(1.0, abs=1e-6)
    confident = torch.full((n, 1008), -30.0)
    confident[torch.arange(n), torch.arange(n) % k] = 30.0  # each image sure of one of k classes, evenly spread
    mean, std = M.is_from_logits(confident, splits=1)
    assert mean == pytest.approx(k, rel=1e-3) and std == 0.0


def test_precision_recall_from_features_sees_missing_modes_and_off_manifold_fakes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, generator=g)
    same = M.pr_from_features(real, real.clone())
    assert same["precision"] == same["recall"] == 1.0
    far = M.pr_from_features(real, real + 100.0)  # fakes nowhere near the reals
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # mode collapse: fakes cover only the half of the reals with x0 > 0: precise, but half the recall
    half = real[real[:, 0] > 0]
    collapsed = M.pr_from_features(real, half[torch.randint(0, len(half), (300,), generator=g)] + 0.01)
    assert collapsed["precision"] > 0.9 and 0.25 < collapsed["recall"] < 0.75
    with pytest.raises(M.UserError, match="more than 3 images"):
        M.pr_from_features(real[:3], real[:3])


def test_vgg_weights_missing_for_pr_exits_2_naming_the_file(tmp_path, monkeypatch, folders, stub_weights):
    from gan.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    res = CliRunner().invoke(main, ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"]),
                                    "--metrics", "fid,pr", "--inception-weights", str(stub_weights)])
    assert res.exit_code == 2, res.output
    assert E.VGG_FILE in res.output and E.VGG_URL in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"]),
                                    "--metrics", "fid,fidd", "--inception-weights", str(stub_weights)])
    assert res.exit_code != 0 and "fidd" in res.output and "choose from" in res.output


def test_per_class_scores_use_equal_counts_and_condition_the_fakes(demo_run, prepared_archive, stub_weights,
                                                                  tmp_path, monkeypatch, one_thread):
    from gan.checkpoint import load_generator
    from gan.generate import real_labels

    labels = real_labels(prepared_archive)  # [96, 2] one-hot gender
    counts = labels.sum(0).int().tolist()
    seen: list[torch.Tensor] = []
    orig = M.iter_fake_images

    def spy(G, num, c=None, *a, **k):
        seen.append(c.clone())
        return orig(G, num, c, *a, **k)

    monkeypatch.setattr(M, "iter_fake_images", spy)
    G = load_generator(demo_run["checkpoint"])
    res = M.evaluate_generator(G, prepared_archive, metrics=("fid", "kid"), num=16, batch=48, per_class=True,
                               inception_weights=stub_weights, cache_dir=tmp_path / "cache")
    assert list(res["per_class"]) == list(G.class_names)  # in class order
    for i, (name, r) in enumerate(res["per_class"].items()):
        assert r["n_real"] == r["n_fake"] == counts[i]
        assert np.isfinite(r["fid"]) and r["fid"] > 0 and np.isfinite(r["kid"])
    # the overall fakes follow the reals' label mix; each class's fakes carry that class's one-hot only
    assert seen[0].shape == (16, 2)
    for i, c in enumerate(seen[1:]):
        assert c.shape == (counts[i], 2) and bool((c.argmax(1) == i).all()) and bool((c.sum(1) == 1).all())
    rows = M.result_rows(res)
    assert {r["metric"] for r in rows} == {"fid", "kid"} | {f"{m}/{n}" for m in ("fid", "kid") for n in G.class_names}
    assert "biased" in res["per_class_note"]
    with pytest.raises(M.UserError, match="--per-class"):
        M.compute_metrics(prepared_archive, tmp_path, per_class=True, inception_weights=stub_weights)


def test_training_with_metrics_writes_jsonl_rows_and_tensorboard_scalars(prepared_archive, stub_weights,
                                                                        tmp_path, monkeypatch, cache_root):
    """Two snapshots with fid24,kid24: rows per snapshot in metrics.jsonl, Metrics/fid24 in
    TensorBoard, and the real side extracted once (cached) for both snapshots and both metrics."""
    from gan.checkpoint import checkpoint_name
    from gan.run_config import load_run_config
    from gan.train import train
    from tests._settings import DEMO_GAN_CONFIG

    calls = []
    orig = M.real_features
    monkeypatch.setattr(M, "real_features", lambda *a, **k: calls.append(k.get("cache_dir")) or orig(*a, **k))
    cfg = load_run_config(DEMO_GAN_CONFIG, [
        f"data.path={json.dumps(str(prepared_archive))}", "train.kimg=0.032", "train.snap_kimg=0.016",
        "train.tick_kimg=0.016", "train.batch=8", "train.metrics=[fid24, kid24]",
        f"train.inception_weights={json.dumps(str(stub_weights))}"])
    run = tmp_path / "00000-m"
    train(cfg, run, progress=False, console=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["metric"], r["kimg"]) for r in rows] == [("fid24", 0.016), ("kid24", 0.016), ("fid24", 0.032),
                                                        ("kid24", 0.032)]
    assert all(r["n_fake"] == 24 and r["n_real"] == 96 and r["value"] > 0 for r in rows[::2])
    assert rows[-1]["checkpoint"] == checkpoint_name(32)
    cached = list((cache_root / "stats").glob("real-features-*.pt"))  # the shared default, $MTF_CACHE_DIR/stats
    assert len(cached) == 1 and len(calls) == 2
    assert f"real features (inception-v3-compat/2048): cached in {cache_root / 'stats'} (1 file, " in \
        (run / "log.txt").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(run)).Reload()
    assert [e.step for e in ev.Scalars("Metrics/fid24")] == [16, 32]
    assert ev.Scalars("Metrics/kid24")[-1].value == pytest.approx(rows[-1]["value"], rel=1e-5)


def test_training_metrics_write_rows_report_scalars_and_extract_the_reals_once(demo_run, prepared_archive,
                                                                              stub_weights, tmp_path, monkeypatch,
                                                                              one_thread, cache_root):
    """What the training loop calls at each snapshot: rows appended to metrics.jsonl (and
    returned), Metrics/<name> sent to the monitor at cur_nimg, the real side cached."""
    from gan.checkpoint import load_generator
    from gan.run_config import TrainConfig

    calls, scalars = [], []
    orig = M.real_features
    monkeypatch.setattr(M, "real_features", lambda *a, **k: calls.append(1) or orig(*a, **k))

    class Monitor:
        def scalar(self, name, value, step):
            scalars.append((name, value, step))

    run = tmp_path / "00000-m"
    run.mkdir()
    cfg = TrainConfig(metrics=("fid24", "kid24"), inception_weights=str(stub_weights))
    tm = M.TrainingMetrics.from_config(cfg, prepared_archive, run, "cpu", monitor=Monitor())
    G = load_generator(demo_run["checkpoint"])
    rows = tm.evaluate(G, 16, run / "checkpoint-000016.pt") + tm.evaluate(G, 32, run / "checkpoint-000032.pt")
    assert rows == [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["metric"], r["kimg"], r["checkpoint"]) for r in rows] == [
        ("fid24", 0.016, "checkpoint-000016.pt"), ("kid24", 0.016, "checkpoint-000016.pt"),
        ("fid24", 0.032, "checkpoint-000032.pt"), ("kid24", 0.032, "checkpoint-000032.pt")]
    assert all(r["n_fake"] == 24 and r["n_real"] == 96 for r in rows) and "std" in rows[1] and "std" not in rows[0]
    assert rows[0]["value"] == rows[2]["value"] > 0  # the same G: the same fakes, the same value
    assert scalars == [(f"Metrics/{r['metric']}", r["value"], round(r["kimg"] * 1000)) for r in rows]
    assert len(calls) == 2 and len(list((cache_root / "stats").glob("real-features-*.pt"))) == 1
    other = tmp_path / "elsewhere"  # train.metrics_cache still picks another folder
    tm = M.TrainingMetrics.from_config(dataclasses.replace(cfg, metrics_cache=str(other)), prepared_archive, run, "cpu")
    assert tm.cache_dir == other


def test_training_with_metrics_but_no_weights_stops_before_the_run_folder(prepared_archive, tmp_path, monkeypatch):
    from gan.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    res = CliRunner().invoke(main, ["train", "--data", str(prepared_archive), "--outdir", str(tmp_path / "runs"),
                                    "--config", str(M.Path(__file__).parents[2] / "configs/gan/demo.yaml"),
                                    "--metrics", "fid10k", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert E.INCEPTION_FILE in res.output and not (tmp_path / "runs").exists()


def test_real_folder_of_mixed_sizes_is_resized_to_the_fake_resolution(tmp_path, stub_weights, one_thread):
    """Photos of any size and shape (a raw MTF folder) against 32-px fakes: each real image
    is cropped and resized as `prepare` would, so the batch stacks and FID is defined."""
    from gan.images import square_resize

    rng = np.random.default_rng(3)
    real, fake = tmp_path / "real", tmp_path / "fake"
    sizes = [(50, 40), (64, 64), (20, 20), (33, 47), (32, 32), (100, 30)]
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    _write(real, np.empty(0))  # folder only
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(real / f"{i}.png")
    _write(fake, rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    got = list(M.iter_real_images(real, resolution=32))
    assert all(tuple(g.shape) == (3, 32, 32) for g in got)
    assert torch.equal(got[1], torch.from_numpy(square_resize(arrays[1], 32)).permute(2, 0, 1))  # 64 -> 32, box
    assert torch.equal(got[4], torch.from_numpy(arrays[4]).permute(2, 0, 1))  # already 32: untouched
    res = M.compute_metrics(real, fake, metrics=("fid", "kid"), inception_weights=stub_weights, batch=6,
                            cache_dir=tmp_path / "cache")
    assert res["n_real"] == res["n_fake"] == 6 and res["resolution"] == 32 and np.isfinite(res["fid"])
    assert "box filter" in res["resize"]


def test_metrics_take_a_published_pkl_and_its_import_alike(folders, stub_weights, tmp_path, one_thread):
    """``--network`` reads a published StyleGAN2-ADA pickle (safely, on the fly) as it reads the
    file ``mtf-gan import`` makes of it: the same fakes, the same FID."""
    from gan.cli import main
    from tests._settings import shared_fixture

    pkl = shared_fixture("sg2a-tiny-uncond.pkl")
    pt = tmp_path / "imported.pt"
    assert CliRunner().invoke(main, ["import", str(pkl), str(pt)]).exit_code == 0
    for net in (pkl, pt):
        res = CliRunner().invoke(main, ["metrics", "--real", str(folders["noise"]), "--network", str(net),
                                        "--metrics", "fid", "--num", "16", "--batch", "16", "--no-progress",
                                        "--inception-weights", str(stub_weights), "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["fake"] for r in rows] == [str(pkl), str(pt)]
    values = [r["value"] for r in rows]
    assert values[0] == pytest.approx(values[1], rel=1e-6) and values[0] > 0


def test_a_second_metrics_call_reuses_the_default_cache_and_no_stats_cache_extracts_again(
        folders, stub_weights, tmp_path, monkeypatch, cache_root, one_thread):
    """No cache flag: the reals' features land in $MTF_CACHE_DIR/stats and the second call
    extracts none; where the cache is and its size go to stderr (stdout stays JSON);
    --no-stats-cache extracts again and writes nothing there."""
    from gan.cli import main

    extracted = []
    orig = M.iter_real_images
    monkeypatch.setattr(M, "iter_real_images", lambda *a, **k: extracted.append(1) or orig(*a, **k))
    args = ["metrics", "--real", str(folders["noise"]), "--fake", str(folders["flat"]), "--metrics", "fid",
            "--num", "12", "--batch", "20", "--inception-weights", str(stub_weights), "--out", str(tmp_path),
            "--no-progress"]
    stats = cache_root / "stats"
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert len(extracted) == 1 and len(list(stats.glob("real-features-*.pt"))) == 1
    assert f"real features (inception-v3-compat/2048): cached in {stats} (1 file, " in first.stderr
    second = CliRunner().invoke(main, args + ["--json"])
    assert second.exit_code == 0, second.output
    assert len(extracted) == 1, "the second call extracted the reals again"
    assert f"read from the cache in {stats} (1 file, " in second.stderr
    assert json.loads(second.stdout)[0]["metric"] == "fid"
    before = {f: f.stat().st_mtime_ns for f in stats.iterdir()}
    off = CliRunner().invoke(main, args + ["--no-stats-cache"])
    assert off.exit_code == 0, off.output
    assert len(extracted) == 2 and "real features" not in off.stderr
    assert {f: f.stat().st_mtime_ns for f in stats.iterdir()} == before
    clash = CliRunner().invoke(main, args + ["--no-stats-cache", "--stats-cache", str(tmp_path / "c")])
    assert clash.exit_code == 2 and "contradict" in clash.output


def test_a_cache_that_cannot_be_written_costs_the_cache_not_the_result(folders, stub_weights, tmp_path,
                                                                     monkeypatch, one_thread):
    """A full disk (ENOSPC) while writing the real features: the metric is still computed, no
    partial file is left, and the line says which folder failed and what to do."""
    import errno

    notes: list[str] = []

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(M.torch, "save", full)
    cache = tmp_path / "cache"
    res = M.compute_metrics(folders["noise"], folders["flat"], metrics=("fid",), num=12, batch=20,
                            inception_weights=stub_weights, cache_dir=cache, echo=notes.append)
    assert np.isfinite(res["fid"]) and list(cache.iterdir()) == []
    assert len(notes) == 1 and f"writing in {cache} failed (ENOSPC" in notes[0] and "--no-stats-cache" in notes[0]


def test_class_trunc_center_changes_the_fakes_and_is_recorded_in_the_rows(demo_run, prepared_archive, stub_weights,
                                                                          tmp_path, one_thread):
    """`mtf-gan metrics --network --trunc-center class` (issue 16): each fake truncated towards its
    class's mean w; the rows say so and how many samples the centres took."""
    from gan.cli import main
    from gan.generate import CLASS_CENTER_SAMPLES

    base = ["metrics", "--real", str(prepared_archive), "--network", str(demo_run["checkpoint"]), "--num", "16",
            "--metrics", "fid", "--trunc", "0.5", "--inception-weights", str(stub_weights), "--batch", "16",
            "--stats-cache", str(tmp_path / "cache"), "--no-progress"]
    rows = {}
    for centre in ("global", "class"):
        res = CliRunner().invoke(main, base + ["--trunc-center", centre, "--out", str(tmp_path / centre), "--json"])
        assert res.exit_code == 0, res.output
        rows[centre] = json.loads((tmp_path / centre / "metrics.jsonl").read_text().splitlines()[0])
    assert rows["class"]["trunc_center"] == "class" and rows["class"]["trunc_center_samples"] == CLASS_CENTER_SAMPLES
    assert rows["global"]["trunc_center"] == "global" and rows["global"]["trunc_center_samples"] is None
    assert rows["class"]["truncation_psi"] == rows["global"]["truncation_psi"] == 0.5
    assert rows["class"]["value"] != rows["global"]["value"]  # other fakes
    with pytest.raises(M.UserError, match="--trunc-center class needs --network"):
        M.compute_metrics(prepared_archive, tmp_path / "cache", trunc_center="class", inception_weights=stub_weights)
