"""Attribute directions in a generator's W space: InterFaceGAN on our classifiers.

InterFaceGAN (Shen, Gu, Tang & Zhou, CVPR 2020, sec. 2.2) finds, for a binary attribute, a
hyperplane ``n . w + b = 0`` in the latent space that separates the faces with the attribute
from those without; moving a latent code along the unit normal ``n`` changes the attribute,
and "conditional manipulation" projects ``n`` orthogonal to the normals of attributes that
should stay put (``n1 - (n1 . n2) n2``, generalised here by Gram-Schmidt to several).

Here the faces are labelled by classifiers trained with ``mtf-classify train``:

1. ``num`` latent codes are drawn, seed ``seed + i`` for sample ``i`` (the z of ``mtf-gan
   generate --seeds``), through ``G.mapping`` without truncation. A conditional G gets, per
   sample, a label drawn from its training archive's label mix when that archive is found
   (as ``mtf-gan metrics`` and ``mtf-classify score`` draw them), else uniformly over its
   classes (:func:`classify.score.load_conditioned_generator`).
2. Each face is rendered by ``G.synthesis`` and classified by every ``--classifier``.
3. Per binary task one boundary; per class of a multi-class task one boundary of that class
   against the rest (``race=White``). Each is a logistic regression in torch (L-BFGS on
   standardised w, a small L2 penalty), fitted to the classifier's **probabilities** (soft
   labels: a face it calls 55% Male pulls less than one it calls 99% Male) on a random
   ``1 - test_fraction`` of the samples; the held-out rest gives ``boundary_accuracy``, the
   share of held-out faces on the side of the boundary that the classifier's arg-max label
   says, to be read against ``majority_accuracy`` (always guessing the commoner label).
4. A binary task's direction points from its first class to its second in the task's class
   order (``gender``: Female -> Male, ``age``: Old -> Young); a one-vs-rest direction points
   from the rest to the class.

``w_std[name]`` is the standard deviation of the sampled w's signed distance to the boundary,
``sqrt(n^T C n)`` with ``C`` the covariance of the sampled w (also saved, so an edit can
rescale a projected direction): ``mtf-classify edit`` moves faces in units of it, so a
strength of 3 means "three standard deviations of this attribute" for every attribute and
generator.

The directions are what the *classifier* sees, not the truth: a boundary fitted on a
classifier's errors inherits them (a gender classifier that calls young faces male more
often gives a gender direction with an age component), which the cosine matrix shows as
entanglement that may not be the generator's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classify.classifier import BLOCK, Classifier, blocks, check_classifiers, load_classifier, match_class
from classify.plots import plot_cosines
from gan.distributed import pick_device
from gan.util import UserError, atomic_path, atomic_write_text

__all__ = ["DirectionsOptions", "DIRECTIONS_VERSION", "L2", "ATTRIBUTE_TASKS", "generator_identity", "sample_ws",
           "classify_ws", "fit_boundary", "task_classes", "direction_specs", "split", "fit_directions",
           "resolve_names", "orthogonalize", "std_along", "cosine_matrix", "load_directions",
           "attribute_classifiers", "directions"]

#: Bumped when the layout of ``directions.pt`` changes.
DIRECTIONS_VERSION = 1
#: L2 penalty on the standardised logistic-regression weights (per sample): it keeps the fit
#: finite when the classes are separable and damps dimensions that carry only noise.
L2 = 1e-3
#: L-BFGS iterations per boundary (it converges in a few dozen on these convex problems).
MAX_ITER = 200
#: Tasks that have a direction (face recognition's hundreds of people have none).
ATTRIBUTE_TASKS = ("gender", "race", "age")


@dataclass(frozen=True)
class DirectionsOptions:
    """What ``mtf-classify directions`` is asked; ``network`` is a checkpoint path or a module
    with the Generator interface, ``classifiers`` paths of ``best.pt`` or :class:`Classifier`."""

    network: Any
    classifiers: Sequence[Any]
    outdir: str | os.PathLike
    num: int = 2000
    seed: int = 0
    orthogonal_to: Sequence[str] = ()
    test_fraction: float = 0.2
    reference: Optional[str | os.PathLike] = None  # archive whose label mix conditions G [default: G's own]
    device: str = "cpu"
    batch: int = 64
    progress: bool = True


def _check_options(o: DirectionsOptions) -> None:
    out = Path(o.outdir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--outdir {out} exists and is not empty; pass a new folder (nothing is overwritten)")
    if o.num < 20:
        raise UserError(f"--num {o.num}: too few faces to fit and test a boundary; pass at least 20 "
                        f"(a few thousand for a real generator)")
    if not 0 < o.test_fraction < 1:
        raise UserError(f"--test-fraction {o.test_fraction}: pass a share in (0, 1), e.g. 0.2")
    if o.batch < 1:
        raise UserError(f"--batch {o.batch}: pass a positive batch size")
    if not isinstance(o.network, nn.Module) and not Path(o.network).is_file():
        raise UserError(f"--network {o.network}: no such file; pass a checkpoint-*.pt of mtf-gan train, a file "
                        f"of mtf-gan import or a published .pkl")


# ---------------------------------------------------------------------------- the generator's identity


def generator_identity(G: nn.Module) -> str:
    """SHA-256 (hex) of G's state dict, tensor by tensor in key order (name, dtype, shape,
    bytes on the CPU): the checkpoint's G_ema weights and buffers (``w_avg`` included). A
    directions file records it so that it is never used with another generator."""
    h = hashlib.sha256()
    for key, t in sorted(G.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_ws(G: nn.Module, seeds: Sequence[int], labels: torch.Tensor) -> torch.Tensor:
    """``[N, num_ws, w_dim]``: ``G.mapping`` of seed ``seeds[i]``'s z (:func:`gan.generate.seed_z`)
    with ``labels[i]`` ``[N, c_dim]``, untruncated (every layer's w is the same)."""
    from gan.generate import device_of, seed_z

    device = device_of(G)
    z = torch.cat([seed_z(s, G.z_dim) for s in seeds]).to(device)  # [N, z_dim]
    out = [G.mapping(zc, cc.to(device)) for zc, cc in zip(z.split(BLOCK), labels.split(BLOCK))]
    return torch.cat(out).float().cpu()  # [N, num_ws, w_dim]


@torch.no_grad()
def classify_ws(G: nn.Module, ws: torch.Tensor, clfs: Mapping[str, Classifier], batch: int = 64,
                progress: bool = False, what: str = "directions") -> dict[str, torch.Tensor]:
    """``{task: probs [N, K]}``: ``G.synthesis`` of each ``ws`` ``[N, num_ws, w_dim]`` (constant
    noise), scored by each classifier, :data:`~classify.classifier.BLOCK` faces at a time."""
    from tqdm import tqdm

    from gan.generate import device_of
    from gan.images import images_to_uint8

    device = device_of(G)
    probs: dict[str, list[torch.Tensor]] = {task: [] for task in clfs}
    with tqdm(total=len(ws), desc=f"{what}: render and classify", unit="img", disable=not progress,
              dynamic_ncols=True) as bar:
        for chunk in blocks(range(len(ws)), BLOCK):
            images = images_to_uint8(G.synthesis(ws[chunk].to(device), noise_mode="const")).cpu()  # [B, C, H, W]
            for task, clf in clfs.items():
                probs[task].append(clf.predict(list(images), batch)[0])
            bar.update(len(chunk))
    return {task: torch.cat(p) for task, p in probs.items()}


# ---------------------------------------------------------------------------- boundaries


def fit_boundary(w: torch.Tensor, target: torch.Tensor, label: torch.Tensor, train: torch.Tensor,
                 test: torch.Tensor, l2: float = L2) -> dict[str, Any]:
    """A logistic-regression boundary in W: ``w`` ``[N, D]``, soft ``target`` ``[N]`` in [0, 1]
    (the probability of the positive side), hard ``label`` ``[N]`` (bool: the classifier's
    arg-max says positive), index tensors ``train`` and ``test``.

    Fitted on standardised w (each dimension centred and scaled by its train-split std, so
    the L2 penalty treats dimensions alike) by L-BFGS, then mapped back to W. Returns the unit
    normal ``[D]`` (towards the positive side), the ``offset`` (signed distance of ``w`` =
    ``normal . w + offset``), the held-out ``accuracy`` against ``label`` and the
    ``majority`` accuracy of always guessing the commoner held-out label."""
    x = w[train].double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)  # [D]
    xs = (x - mu) / sd  # [n, D]
    y = target[train].double()
    a = torch.zeros(w.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], lr=1, max_iter=MAX_ITER, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xs @ a + b, y) + l2 * (a * a).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    v = a.detach() / sd  # logit = v . w + c in W
    c = b.detach() - (mu * v).sum()
    norm = v.norm().clamp_min(1e-12)
    normal, offset = v / norm, c / norm
    side = (w[test].double() @ normal + offset) > 0
    truth = label[test].bool()
    share = float(truth.double().mean())
    return {"normal": normal.float(), "offset": float(offset), "accuracy": float((side == truth).double().mean()),
            "majority": max(share, 1 - share), "positive_share": float(label.double().mean())}


def task_classes(clf: Classifier) -> tuple[list[str], list[int]]:
    """The task's classes in their canonical order and, for each, its column in ``clf``'s output."""
    from classify.dataset import TASK_CLASSES

    names = list(TASK_CLASSES.get(clf.task, clf.classes))
    cols = [match_class(clf.task, n, clf.classes) for n in names]
    if any(c is None for c in cols):
        names, cols = list(clf.classes), list(range(len(clf.classes)))
    return names, [int(c) for c in cols]


def direction_specs(clfs: Mapping[str, Classifier]) -> dict[str, dict[str, Any]]:
    """``{name: {task, from, to, column}}`` of every direction the classifiers give: ``task`` for a
    binary one (first class -> second), ``task=Class`` per class of a multi-class one."""
    specs: dict[str, dict[str, Any]] = {}
    for task, clf in clfs.items():
        names, cols = task_classes(clf)
        if len(names) == 2:
            specs[task] = {"task": task, "from": names[0], "to": names[1], "column": cols[1]}
        else:
            for name, col in zip(names, cols):
                specs[f"{task}={name}"] = {"task": task, "from": f"not {name}", "to": name, "column": col}
    return specs


def split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` indices: a seeded permutation of ``range(n)``, ``test_fraction`` held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test = min(n - 2, max(1, round(n * test_fraction)))
    return perm[n_test:], perm[:n_test]


def fit_directions(w: torch.Tensor, probs: Mapping[str, torch.Tensor], specs: Mapping[str, Mapping[str, Any]],
                   test_fraction: float = 0.2, seed: int = 0, l2: float = L2) -> dict[str, dict[str, Any]]:
    """``{name: fit_boundary(...) + spec}`` for w ``[N, D]`` and ``probs[task]`` ``[N, K]``
    (``specs`` from :func:`direction_specs`): one seeded train/test split shared by all."""
    train, test = split(len(w), test_fraction, seed)
    out: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        p = probs[spec["task"]]  # [N, K]
        target = p[:, spec["column"]]
        label = p.argmax(1) == spec["column"]
        out[name] = {**fit_boundary(w, target, label, train, test, l2), **dict(spec)}
    return out


# ---------------------------------------------------------------------------- conditional directions


def resolve_names(spec: Sequence[str], names: Sequence[str], tasks: Mapping[str, str],
                  option: str = "--orthogonal-to") -> list[str]:
    """Direction names for ``--orthogonal-to``: each item a direction (``age``, ``race=White``)
    or a task standing for all of its directions (``race``), matched case-insensitively."""
    lowered = {n.lower(): n for n in names}
    out: list[str] = []
    for item in spec:
        item = item.strip()
        if not item:
            continue
        hit = [lowered[item.lower()]] if item.lower() in lowered else \
            [n for n in names if tasks[n].lower() == item.lower()]
        if not hit:
            raise UserError(f"{option} {item}: no such direction or task; choose from {', '.join(names)} "
                            f"(or a task: {', '.join(dict.fromkeys(tasks.values()))})")
        out += [h for h in hit if h not in out]
    return out


def orthogonalize(direction: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """``direction`` ``[D]`` projected orthogonal to the span of ``others`` (Gram-Schmidt in
    their order; nearly dependent ones add nothing) and renormalised: InterFaceGAN's
    conditional manipulation (Shen et al. 2020, sec. 2.2) for any number of conditions."""
    basis: list[torch.Tensor] = []
    for o in others:
        v = o.double().clone()
        for e in basis:
            v = v - (v @ e) * e
        if v.norm() > 1e-6:
            basis.append(v / v.norm())
    d = direction.double().clone()
    for e in basis:
        d = d - (d @ e) * e
    if d.norm() < 1e-6:
        raise UserError("--orthogonal-to: the direction lies in the span of the directions it should be "
                        "orthogonal to; name fewer of them")
    return (d / d.norm()).float()


def std_along(direction: torch.Tensor, w_cov: torch.Tensor) -> float:
    """The standard deviation of ``direction . w`` over the sampled w: ``sqrt(n^T C n)``."""
    n = direction.double()
    return float((n @ w_cov.double() @ n).clamp_min(0).sqrt())


def cosine_matrix(dirs: Mapping[str, torch.Tensor]) -> list[list[float]]:
    m = torch.stack([d / d.norm() for d in dirs.values()]) if dirs else torch.zeros(0, 0)
    return (m @ m.T).tolist()


# ---------------------------------------------------------------------------- the file


def load_directions(path: str | os.PathLike, G: Optional[nn.Module] = None,
                    option: str = "--directions") -> dict[str, Any]:
    """A ``directions.pt`` (``torch.load(weights_only=True)``), checked to belong to ``G``
    (the SHA-256 of its weights) when G is given."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{option} {p}: no such file; make one with mtf-classify directions")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle/zip errors of a wrong file)
        raise UserError(f"{option} {p}: not a directions.pt of mtf-classify directions ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != DIRECTIONS_VERSION or "directions" not in data:
        raise UserError(f"{option} {p}: not a directions.pt of this version of mtf-classify directions "
                        f"(version {data.get('version') if isinstance(data, dict) else None}, "
                        f"expected {DIRECTIONS_VERSION}); fit them again")
    if G is not None:
        mine, theirs = generator_identity(G), data["generator"]["identity"]
        if mine != theirs:
            raise UserError(f"{option} {p} was made for another generator ({data['generator']['network']}, "
                            f"weights SHA-256 {theirs[:12]}...) than this one ({mine[:12]}...): a direction "
                            f"belongs to one W space; fit directions for this network with mtf-classify directions")
    return data


def _markdown(data: dict[str, Any]) -> str:
    g, s = data["generator"], data["sampling"]
    lines = [
        "# Attribute directions", "",
        f"Generator `{g['network']}` (weights SHA-256 `{g['identity'][:16]}...`, w_dim {g['w_dim']}); "
        f"{s['num']} faces, seeds {s['seeds']}, conditions: {s['conditions']}. Boundaries fitted on "
        f"{s['num'] - s['num_test']} faces, accuracy on the other {s['num_test']} "
        f"(logistic regression on the classifiers' probabilities, InterFaceGAN).", "",
        "| direction | from -> to | boundary accuracy (held out) | majority label | faces on the 'to' side | "
        "w_std | orthogonal to |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in data["attributes"].items():
        ortho = ", ".join(data["conditional"].get(name, [])) or "-"
        lines.append(f"| {name} | {m['from']} -> {m['to']} | {data['boundary_accuracy'][name]:.3f} | "
                     f"{data['majority_accuracy'][name]:.3f} | {m['positive_share']:.1%} | "
                     f"{data['w_std'][name]:.3f} | {ortho} |")
    lines += ["", "Classifiers: " + "; ".join(f"{c['task']} `{c['path']}` ({', '.join(c['classes'])})"
                                          for c in data["classifiers"]), "",
              "A boundary accuracy near the majority share means the classifier's labels are not linear in W "
              "(or are noise). Cosines between directions (`cosines.png`) near 0 mean disentangled attributes; "
              "a large one may be the generator's entanglement or the classifiers' correlated errors.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the command


def attribute_classifiers(classifiers: Sequence[Any], dev: torch.device) -> dict[str, Classifier]:
    """``{task: Classifier}`` of ``best.pt`` paths or :class:`Classifier` objects, one per
    attribute task (:func:`classify.classifier.check_classifiers`' errors, and face
    recognition refused: its people are no attribute)."""
    clfs = check_classifiers([c if isinstance(c, Classifier) else load_classifier(c, dev) for c in classifiers])
    bad = [c for t, c in clfs.items() if t not in ATTRIBUTE_TASKS]
    if bad:
        raise UserError(f"--classifier {bad[0].path}: a {bad[0].task} classifier has no attribute direction; pass "
                        f"classifiers for {', '.join(ATTRIBUTE_TASKS)}")
    return clfs


def _load(o: DirectionsOptions, dev: torch.device) -> tuple[dict[str, Classifier], dict[str, dict[str, Any]], list[str]]:
    clfs = attribute_classifiers(o.classifiers, dev)
    specs = direction_specs(clfs)
    ortho = resolve_names(o.orthogonal_to, list(specs), {n: s["task"] for n, s in specs.items()})
    return clfs, specs, ortho


def directions(options: DirectionsOptions, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Fit the attribute directions of a generator and write ``directions.pt``,
    ``directions.md`` and ``cosines.png`` into ``options.outdir`` (new or empty).

    Returns the saved dict (plus ``outdir``). ``--orthogonal-to`` names (tasks or directions)
    make every *other task's* direction orthogonal to them; the fitted normals stay in
    ``fitted``, the names projected out of each in ``conditional``.
    """
    from classify.score import _gan_training_archive, load_conditioned_generator

    o = options
    _check_options(o)
    out = Path(o.outdir)
    dev = pick_device(o.device)
    clfs, specs, ortho = _load(o, dev)
    archives = [Path(o.reference)] if o.reference is not None else [_gan_training_archive(o.network)]
    seeds = list(range(o.seed, o.seed + o.num))
    G, labels, how = load_conditioned_generator(o.network, o.num, None, dev, archives)
    network = f"<{type(o.network).__name__} module>" if isinstance(o.network, nn.Module) else str(o.network)
    echo(f"directions: {o.num} faces from {network} (conditions: {how}); classifiers for {', '.join(clfs)}")
    ws = sample_ws(G, seeds, labels)  # [N, num_ws, w_dim]
    probs = classify_ws(G, ws, clfs, o.batch, o.progress)
    w = ws[:, 0]  # [N, w_dim]
    fits = fit_directions(w, probs, specs, o.test_fraction, o.seed)

    w_mean, w_cov = w.double().mean(0), torch.cov(w.double().T).reshape(w.shape[1], w.shape[1])
    fitted = {n: f["normal"] for n, f in fits.items()}
    final, offsets, conditional = dict(fitted), {n: f["offset"] for n, f in fits.items()}, {}
    for name, f in fits.items():
        others = [x for x in ortho if specs[x]["task"] != f["task"]]
        if others:
            final[name] = orthogonalize(fitted[name], [fitted[x] for x in others])
            # The conditional boundary goes through the fitted boundary's point nearest the mean w.
            foot = w_mean - (fitted[name].double() @ w_mean + f["offset"]) * fitted[name].double()
            offsets[name] = float(-(final[name].double() @ foot))
            conditional[name] = others
    data = {
        "version": DIRECTIONS_VERSION,
        "directions": final, "offsets": offsets,
        "boundary_accuracy": {n: f["accuracy"] for n, f in fits.items()},
        "majority_accuracy": {n: f["majority"] for n, f in fits.items()},
        "w_std": {n: std_along(d, w_cov) for n, d in final.items()},
        "fitted": fitted, "conditional": conditional, "orthogonal_to": list(ortho),
        "attributes": {n: {k: f[k] for k in ("task", "from", "to", "positive_share")} for n, f in fits.items()},
        "w_mean": w_mean.float(), "w_cov": w_cov.float(),
        "classifiers": [{"task": t, "path": str(c.path), "classes": list(c.classes)} for t, c in clfs.items()],
        "generator": {"identity": generator_identity(G), "network": network, "w_dim": int(G.w_dim),
                      "c_dim": int(G.c_dim), "class_names": list(getattr(G, "class_names", None) or [])},
        "sampling": {"num": o.num, "seeds": f"{seeds[0]}-{seeds[-1]}", "conditions": how,
                     "num_test": len(split(o.num, o.test_fraction, o.seed)[1]), "l2": L2,
                     "labels": "classifier probabilities (soft); accuracy against the arg-max"},
        "cosines": {"names": list(final), "fitted": cosine_matrix(fitted), "directions": cosine_matrix(final)},
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "directions.pt") as tmp:
        torch.save(data, tmp)
    atomic_write_text(out / "directions.md", _markdown(data))
    plot_cosines(data["cosines"], out / "cosines.png", conditional=bool(conditional))
    for name in final:
        echo(f"directions: {name:<24} boundary accuracy {data['boundary_accuracy'][name]:.3f} "
             f"(majority {data['majority_accuracy'][name]:.3f}), w_std {data['w_std'][name]:.3f}")
    echo(f"directions: {out / 'directions.pt'} (table: directions.md, cosines: cosines.png)")
    return {**data, "outdir": str(out)}
