"""`mtf-gan generate`: per-seed images, grids, interpolations, classes, truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan.cli import main
from gan.generate import fake_labels, parse_seeds, real_labels
from gan.util import UserError


@pytest.fixture(scope="module")
def ckpt(demo_run) -> Path:
    return demo_run["checkpoint"]


def _gen(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["generate", *args])
    return res.exit_code, res.output


def _arr(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(UserError, match="runs backwards"):
        parse_seeds("5-2")
    with pytest.raises(UserError, match="not a seed or range"):
        parse_seeds("a")


def test_seeds_give_reproducible_distinct_images(ckpt, tmp_path):
    code, out = _gen("--network", str(ckpt), "--seeds", "0-2", "--class", "male", "--outdir", str(tmp_path / "a"))
    assert code == 0, out
    code, out = _gen("--network", str(ckpt), "--seeds", "2", "--class", "1", "--outdir", str(tmp_path / "b"))
    assert code == 0, out
    imgs = [_arr(tmp_path / "a" / f"seed{s:04d}.png") for s in range(3)]
    assert imgs[0].shape == (32, 32, 3)
    assert not np.array_equal(imgs[0], imgs[1])
    assert np.array_equal(imgs[2], _arr(tmp_path / "b" / "seed0002.png"))  # same seed, class by name or index


def test_class_changes_the_image_and_unknown_class_lists_the_choices(ckpt, tmp_path):
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "Female", "--outdir", str(tmp_path / "f"))[0] == 0
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "Male", "--outdir", str(tmp_path / "m"))[0] == 0
    assert not np.array_equal(_arr(tmp_path / "f" / "seed0000.png"), _arr(tmp_path / "m" / "seed0000.png"))
    code, out = _gen("--network", str(ckpt), "--seeds", "0", "--class", "Other", "--outdir", str(tmp_path / "x"))
    assert code == 1 and "0=Female, 1=Male" in out
    code, out = _gen("--network", str(ckpt), "--seeds", "0", "--outdir", str(tmp_path / "y"))
    assert code == 1 and "conditional: pass --class" in out


def test_truncation_zero_gives_the_average_face_for_every_seed(ckpt, tmp_path):
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--trunc", "0", "--outdir", str(tmp_path))
    assert code == 0, out
    assert np.array_equal(_arr(tmp_path / "seed0000.png"), _arr(tmp_path / "seed0001.png"))


def test_random_noise_is_reproducible_and_differs_from_const(ckpt, tmp_path):
    for name, noise in (("r1", "random"), ("r2", "random"), ("c", "const")):
        code, out = _gen("--network", str(ckpt), "--seeds", "3", "--class", "0", "--noise", noise,
                         "--outdir", str(tmp_path / name))
        assert code == 0, out
    r1, r2, c = (_arr(tmp_path / n / "seed0003.png") for n in ("r1", "r2", "c"))
    assert np.array_equal(r1, r2) and not np.array_equal(r1, c)


def test_grid_and_interpolation_files(ckpt, tmp_path):
    code, out = _gen("--network", str(ckpt), "--seeds", "0-4", "--class", "0", "--grid", "--interpolate", "5",
                     "--outdir", str(tmp_path))
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.png", "interp-0000-0001.png", "interp-0001-0002.png", "interp-0002-0003.png", "interp-0003-0004.png"]
    assert _arr(tmp_path / "grid.png").shape == (2 * 32, 3 * 32, 3)  # 5 seeds in a 3 x 2 grid
    strip = _arr(tmp_path / "interp-0000-0001.png")
    assert strip.shape == (32, 5 * 32, 3)
    # The ends of the strip are the two seeds' images (w interpolation from t = 0 to 1).
    code, _ = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--outdir", str(tmp_path / "s"))
    # (up to rounding: the strip is one batch, the seeds one image each)
    for part, seed in ((strip[:, :32], 0), (strip[:, -32:], 1)):
        diff = np.abs(part.astype(int) - _arr(tmp_path / "s" / f"seed{seed:04d}.png").astype(int))
        assert diff.max() <= 1, diff.max()
    assert not np.array_equal(strip[:, 64:96], strip[:, :32])  # the middle is neither end


def test_existing_files_are_never_overwritten(ckpt, tmp_path):
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "0", "--outdir", str(tmp_path))[0] == 0
    before = (tmp_path / "seed0000.png").read_bytes()
    code, out = _gen("--network", str(ckpt), "--seeds", "0", "--class", "1", "--outdir", str(tmp_path))
    assert code == 1 and "seed0000.png exists" in out
    assert (tmp_path / "seed0000.png").read_bytes() == before


def test_fake_labels_follow_the_archive_label_mix_reproducibly(prepared_archive, tmp_path):
    labels = real_labels(prepared_archive)  # [96, 2] one-hot gender
    assert labels.shape == (96, 2) and bool((labels.sum(1) == 1).all())
    drawn = fake_labels(labels, 4000)
    assert torch.equal(drawn, fake_labels(labels, 4000)) and not torch.equal(drawn, fake_labels(labels, 4000, seed=1))
    assert drawn.mean(0).tolist() == pytest.approx(labels.mean(0).tolist(), abs=0.03)
    assert fake_labels(labels, 24).shape == (24, 2)
    (tmp_path / "a.png").write_bytes(b"")  # a plain folder has no labels
    assert real_labels(tmp_path) is None


# ---------------------------------------------------------------------------- truncation centres (issue 16)


class _Recording(torch.nn.Module):
    """The stand-in's mapping with a synthesis that records the ws it is given and draws
    nothing (blank images): the truth is read off w (tests/_standin.attributes_of)."""

    def __init__(self):
        super().__init__()
        from tests._standin import StandInGenerator

        inner = StandInGenerator()
        for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws", "class_names"):
            setattr(self, k, getattr(inner, k))
        self.mapping = inner.mapping
        self.seen: list[torch.Tensor] = []

        def synthesis(ws, noise_mode="const", **_):
            self.seen.append(ws.detach().clone())
            return torch.zeros([len(ws), 3, 8, 8])

        self.synthesis = synthesis

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode="const", **_):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)

    def drawn_w(self) -> torch.Tensor:
        out = torch.cat(self.seen)[:, 0]  # [N, w_dim]
        self.seen.clear()
        return out


def test_class_centres_keep_women_women_where_global_truncation_makes_them_men():
    """The stand-in's w_avg is the mean under 75% men, so at psi 0.2 global truncation moves
    every woman's w[0] (-2 + 0.5 z) to 0.4 + 0.1 z > 0 (a man), while her class centre (-2)
    keeps her a woman (tests/_standin.py)."""
    from gan.generate import CLASS_CENTER_SAMPLES, class_centers, class_vector, generate_images
    from tests._standin import GENDER_OFFSET, attributes_of

    G = _Recording()
    centres = class_centers(G)
    assert centres.num == CLASS_CENTER_SAMPLES == 1000 and centres.ws.shape == (2, G.num_ws, G.w_dim)
    # The mean of 1000 draws: -2 / +2 on the gender axis within 4 standard errors (0.5 / sqrt(1000) each).
    assert centres.ws[:, 0, 0].tolist() == pytest.approx([-GENDER_OFFSET, GENDER_OFFSET], abs=4 * 0.5 / 1000 ** 0.5)
    assert torch.equal(centres.ws, class_centers(G).ws)  # a function of the network alone
    female = class_vector(G, "Female")
    seeds = range(200)
    generate_images(G, seeds, female, truncation_psi=0.2, trunc_center="class")
    kept = attributes_of(G.drawn_w())["gender"]
    generate_images(G, seeds, female, truncation_psi=0.2)  # global: towards w_avg
    lost = attributes_of(G.drawn_w())["gender"]
    assert kept.count("Female") == 200, kept.count("Female")
    assert lost.count("Male") >= 195, lost.count("Male")
    # Untruncated, both centres give the same (women) draws.
    generate_images(G, seeds, female, truncation_psi=1.0, trunc_center="class")
    a = G.drawn_w()
    generate_images(G, seeds, female, truncation_psi=1.0)
    assert torch.equal(a, G.drawn_w())


def test_global_truncation_pushes_the_standin_old_as_predicted():
    """The ground-truth path: ws truncated by gan.generate towards w_avg, read with attributes_of,
    give the Old share of tests/_standin.old_share_under_global_truncation (4000 draws, binomial sd
    under 0.008, tolerance 0.03)."""
    from gan.generate import fake_labels, seed_z, truncated_ws
    from tests._standin import StandInGenerator, attributes_of, old_share_under_global_truncation

    G = StandInGenerator()
    n = 4000
    z = torch.cat([seed_z(s, G.z_dim) for s in range(n)])
    c = fake_labels(torch.eye(2), n)
    shares = []
    for psi in (1.0, 0.7, 0.4):
        old = attributes_of(truncated_ws(G, z, c, psi)[:, 0])["age"].count("Old") / n
        assert old == pytest.approx(old_share_under_global_truncation(psi), abs=0.03), (psi, old)
        shares.append(old)
    assert shares[0] < shares[1] < shares[2]


def test_class_centre_at_psi_one_is_the_published_image_and_at_psi_zero_the_class_centre(ckpt, tmp_path):
    from gan.checkpoint import load_generator
    from gan.generate import class_vector, generate_images

    G = load_generator(ckpt)
    c = class_vector(G, "Female")
    assert torch.equal(generate_images(G, [0, 1], c, 1.0, trunc_center="class"), generate_images(G, [0, 1], c, 1.0))
    at_centre = generate_images(G, [0, 1], c, 0.0, trunc_center="class")
    assert torch.equal(at_centre[0], at_centre[1])  # every seed is the class centre
    assert not torch.equal(at_centre[0], generate_images(G, [0], c, 0.0)[0])  # which is not w_avg
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "Female", "--trunc", "0.5",
                     "--trunc-center", "class", "--outdir", str(tmp_path))
    assert code == 0, out
    assert "mean w of class Female over 1000 z" in out and (tmp_path / "seed0001.png").is_file()


@pytest.fixture(scope="module")
def unconditional_ckpt(tmp_path_factory) -> Path:
    """A tiny randomly initialised unconditional generator saved as a checkpoint."""
    from gan.checkpoint import save_checkpoint
    from gan.config import to_dict
    from gan.networks import NetworkConfig, build_generator

    cfg = NetworkConfig(z_dim=8, w_dim=8, c_dim=0, img_resolution=8, channel_base=64, channel_max=8,
                        mapping_layers=1, num_fp16_res=0)
    G = build_generator(cfg)
    return save_checkpoint(tmp_path_factory.mktemp("uncond") / "uncond.pt",
                           {"config": {"network": to_dict(cfg)}, "G_ema": G.state_dict()})


def test_trunc_center_class_on_an_unconditional_generator_is_a_clear_error(unconditional_ckpt, tmp_path):
    from gan.checkpoint import load_generator
    from gan.metrics import evaluate_generator

    code, out = _gen("--network", str(unconditional_ckpt), "--seeds", "0", "--trunc", "0.5", "--trunc-center",
                     "class", "--outdir", str(tmp_path / "out"))
    assert code == 1 and "unconditional" in out and "--trunc-center global" in out and "Traceback" not in out
    assert not (tmp_path / "out").exists()
    assert _gen("--network", str(unconditional_ckpt), "--seeds", "0", "--outdir", str(tmp_path / "ok"))[0] == 0
    (tmp_path / "reals").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "reals" / "a.png")
    with pytest.raises(UserError, match="unconditional"):  # before any extractor is loaded
        evaluate_generator(load_generator(unconditional_ckpt), tmp_path / "reals", trunc_center="class",
                           inception_weights=tmp_path / "missing.pth")


# ---------------------------------------------------------------------------- videos (issue 16)


def _mp4_frames(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack(imageio.mimread(path, format="FFMPEG", memtest=False))  # [T, H, W, 3]


def _gif_frames(path: Path) -> int:
    with Image.open(path) as im:
        return im.n_frames


def test_write_video_mp4_and_gif_have_every_frame(tmp_path):
    from gan.generate import write_video

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (7, 3, 31, 33), dtype=np.uint8))
    assert write_video(frames, tmp_path / "a.mp4", fps=10) == 7
    back = _mp4_frames(tmp_path / "a.mp4")
    assert back.shape == (7, 32, 34, 3)  # odd sides padded to even for H.264
    assert write_video(iter(frames), tmp_path / "a.gif", fps=10, total=7) == 7
    assert _gif_frames(tmp_path / "a.gif") == 7
    with pytest.raises(UserError, match="exists"):
        write_video(frames, tmp_path / "a.gif")
    with pytest.raises(UserError, match=r"\.mp4.*\.gif"):
        write_video(frames, tmp_path / "a.avi")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4"]  # no temporaries left


def test_video_through_the_seeds_has_the_right_frame_count(ckpt, tmp_path):
    from gan.generate import video_frame_count

    code, out = _gen("--network", str(ckpt), "--seeds", "0-3", "--class", "Female", "--interpolate", "6",
                     "--video", str(tmp_path / "walk.mp4"), "--fps", "12", "--no-progress")
    assert code == 0, out
    assert video_frame_count(4, 6) == 16 and "16 frames at 12 fps" in out
    frames = _mp4_frames(tmp_path / "walk.mp4")
    assert frames.shape == (16, 32, 32, 3)
    # H.264 is lossy: the first frame is seed 0's image up to compression.
    assert _gen("--network", str(ckpt), "--seeds", "0", "--class", "Female", "--outdir", str(tmp_path / "s"))[0] == 0
    assert np.abs(frames[0].astype(int) - _arr(tmp_path / "s" / "seed0000.png").astype(int)).mean() < 12
    code, out = _gen("--network", str(ckpt), "--seeds", "0-2", "--class", "Male", "--interpolate", "4",
                     "--trunc", "0.7", "--trunc-center", "class", "--video", str(tmp_path / "walk.gif"),
                     "--outdir", str(tmp_path / "pngs"))
    assert code == 0, out
    assert _gif_frames(tmp_path / "walk.gif") == 7
    assert {p.name for p in (tmp_path / "pngs").iterdir()} == {
        "seed0000.png", "seed0001.png", "seed0002.png", "interp-0000-0001.png", "interp-0001-0002.png"}


def test_video_to_an_existing_file_and_bad_video_options_are_refused(ckpt, tmp_path):
    existing = tmp_path / "taken.mp4"
    existing.write_bytes(b"mine")
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--interpolate", "3",
                     "--video", str(existing))
    assert code == 1 and "taken.mp4 exists" in out and existing.read_bytes() == b"mine"
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--video", str(tmp_path / "v.mp4"))
    assert code == 1 and "--video needs --interpolate" in out
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0", "--interpolate", "3",
                     "--video", str(tmp_path / "v.avi"))
    assert code == 1 and ".mp4" in out
    code, out = _gen("--network", str(ckpt), "--seeds", "0-1", "--class", "0")
    assert code == 2 and "--outdir" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"]


def test_help_states_the_class_centre_sample_count():
    from gan.generate import CLASS_CENTER_SAMPLES

    res = CliRunner().invoke(main, ["generate", "--help"])
    assert f"{CLASS_CENTER_SAMPLES} seeded z" in " ".join(res.output.split())
    assert "--video" in res.output and "--fps" in res.output and "--trunc-center" in res.output
