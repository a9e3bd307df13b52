"""Transfer learning: a new run that starts from another network (``mtf-gan train --init SRC``), and Freeze-D.

SRC is a published StyleGAN2-ADA ``.pkl`` (imported on the fly, executing nothing:
:func:`gan.checkpoint.read_network`) or any checkpoint of ours. The new run takes SRC's
network config, except ``img_resolution``, ``img_channels`` and ``c_dim``, which follow the
data (:func:`gan.run_config.resolve_config`); a network key the user set explicitly (a flag or
``--set``) that contradicts SRC is an error naming both values. Counters, optimizer state and
ADA start at zero. The published transfer conventions (``train.py --resume``: ADA's adjustment
speed 100 kimg instead of 500, EMA ramp-up off) apply unless the user set those keys
explicitly; a preset's value is not explicit. :func:`prepare` does all of this, and every
check, before a run folder is made; the CLI and :func:`gan.train.train` both call it.

Weights (:func:`transfer_weights`): G <- SRC's G, D <- SRC's D, G_ema <- SRC's G_ema, as the
published code copies each. A tensor whose name and shape exist in SRC is *copied* (also in a
conditioning head); one that SRC lacks or has in another shape, where the change of resolution
or of labels explains why, is *new* (it keeps the seed's random initialisation): the blocks above
SRC's resolution, D's new top ``from_rgb`` at a lower resolution, and the conditioning heads
(G's ``mapping.embed``, D's ``mapping`` and ``epilogue.out``) when ``c_dim`` changes. Conditional from unconditional *grafts* a class
embedding into G's first mapping layer so that the new G draws SRC's images for every class:
the layer's runtime gain is ``lr_multiplier / sqrt(in_features)`` (equalized learning rate), so
when its input grows from z to z + e features the copied z-columns are scaled by
``sqrt((z + e) / z)``; the embedding's columns start at zero while ``mapping.embed`` keeps its
random initialisation (were both zero, neither could ever get a gradient). Any other shape
mismatch is an error naming the tensor and both shapes; SRC tensors left unused are *dropped*.

Freeze-D (Mo et al. 2020, "Freeze the Discriminator"): ``train.freeze_d = N`` freezes D's first
N layers counted from the image exactly as the published ``--freezed=N``: the top block has 4
(``from_rgb``, ``conv``, ``conv_down``, ``skip``), every other block 3, then the next lower
resolution; the epilogue and D's label mapping are never frozen (:func:`d_layers`). Frozen
parameters stay out of D's optimizer and never require a gradient (:func:`freeze_d`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch

from gan.checkpoint import read_network
from gan.config import ConfigError, apply_values, from_dict, to_dict
from gan.dataset import ImageDataset
from gan.networks import NetworkConfig, build_discriminator, build_generator
from gan.run_config import RunConfig, prepare_run
from gan.util import UserError

__all__ = ["CONVENTIONS", "DATA_KEYS", "prepare", "init_config", "check_init_fits", "source_network", "d_layers",
           "freeze_d", "check_freeze_d", "describe_freeze", "TransferReport", "transfer_weights", "describe_transfer",
           "preview"]

#: The published transfer conventions (stylegan2-ada-pytorch ``train.py``: with ``--resume``,
#: ``ada_kimg = 100`` and ``ema_rampup = None``), applied unless the user set these keys.
CONVENTIONS: dict[str, Any] = {"augment.kimg": 100.0, "train.ema_rampup": None}
#: Network keys that follow the data set, not SRC.
DATA_KEYS = ("img_resolution", "img_channels", "c_dim")


# ---------------------------------------------------------------------------- config


def _given(key: str, explicit: set[str]) -> bool:
    """``key`` (``network.channel_base``) or a group above it (``network``) was set by the user."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in explicit for i in range(1, len(parts) + 1))


def source_network(src: dict, path: Any) -> NetworkConfig:
    """SRC's :class:`NetworkConfig` (a clear error when its config has none)."""
    try:
        return from_dict(NetworkConfig, src["config"]["network"], prefix="network.")
    except (KeyError, TypeError, ConfigError) as exc:
        raise UserError(f"--init {path}: its config has no usable 'network' section ({exc}); "
                        f"pass a checkpoint of `mtf-gan train` or a published StyleGAN2-ADA .pkl") from None


def init_config(cfg: RunConfig, src: dict, explicit: Iterable[str] = (),
                conventions: Optional[dict[str, Any]] = None) -> RunConfig:
    """``cfg`` with SRC's network (:func:`gan.run_config.resolve_config` then sets :data:`DATA_KEYS`
    from the data) and the transfer :data:`CONVENTIONS` (or ``conventions``) for every key the user did
    not set (``explicit``: dotted keys given as flags or ``--set``). A given network key that
    contradicts SRC is an error."""
    given, path = set(explicit), cfg.train.init
    src_net = source_network(src, path)
    clashes = [f"network.{f.name}={getattr(cfg.network, f.name)!r} (given) vs {getattr(src_net, f.name)!r} (SRC)"
               for f in dataclasses.fields(NetworkConfig)
               if f.name not in DATA_KEYS and _given(f"network.{f.name}", given)
               and getattr(cfg.network, f.name) != getattr(src_net, f.name)]
    if clashes:
        raise UserError(f"--init {path}: the network comes from SRC, and {'; '.join(clashes)}; drop those "
                        f"--set options (or start from scratch without --init)")
    data = to_dict(cfg)
    data["network"] = to_dict(src_net)  # valid as it is; resolve_config then sets DATA_KEYS from the data
    conventions = CONVENTIONS if conventions is None else conventions
    data = apply_values(RunConfig, data, {k: v for k, v in conventions.items() if not _given(k, given)})
    try:
        return from_dict(RunConfig, data)
    except ConfigError as exc:
        raise UserError(f"--init {path}: {exc}") from None


def _get(cfg: RunConfig, dotted: str) -> Any:
    group, key = dotted.split(".")
    return getattr(getattr(cfg, group), key)


def check_init_fits(cfg: RunConfig, src: dict) -> None:
    """What no transfer can bridge (after the data set resolved ``cfg``): other image channels,
    and an unconditional run from a conditional SRC."""
    src_net, net, path = source_network(src, cfg.train.init), cfg.network, cfg.train.init
    if net.img_channels != src_net.img_channels:
        raise UserError(f"--init {path}: SRC draws {src_net.img_channels}-channel images, the data set "
                        f"{cfg.data.path} has {net.img_channels} channels; prepare the data with "
                        f"{src_net.img_channels} channels or start without --init")
    if src_net.c_dim > 0 and net.c_dim == 0:
        raise UserError(f"--init {path}: SRC is conditional (c_dim {src_net.c_dim}) and this run is not; "
                        f"pass --cond with a labelled archive (its labels get a class embedding)")


def prepare(cfg: RunConfig, world_size: Optional[int] = None, dataset: Optional[ImageDataset] = None, *,
            explicit: Iterable[str] = (), resuming: bool = False, src: Optional[dict] = None,
            resume_state: Optional[dict] = None) -> tuple[RunConfig, ImageDataset, Optional[dict]]:
    """``(resolved cfg, dataset, SRC)``: :func:`gan.run_config.prepare_run` plus ``--init`` and
    ``--freeze-d``, every check before a run folder is made. With ``cfg.train.init`` set on a new
    run, SRC is read (unless given as ``src``) and :func:`init_config` applied; a resumed run
    (``resuming``) never re-applies init (its weights come from the checkpoint): SRC is None.
    Resuming a run that started with ``--init`` (``resume_state``, e.g. a requeued job script with
    ``--init SRC --config PRESET --resume auto``), the network and the transfer settings come
    from the checkpoint's config, not from the preset, unless given explicitly."""
    if resuming and cfg.train.init is not None and resume_state is not None:
        saved = from_dict(RunConfig, resume_state["config"])
        kept = {k: _get(saved, k) for k in CONVENTIONS}
        cfg = init_config(cfg, resume_state, explicit, conventions=kept)
    if cfg.train.init is not None and not resuming:
        if src is None:
            try:
                src = read_network(cfg.train.init)
            except UserError as exc:
                raise UserError(f"--init {cfg.train.init}: {exc}") from None
        cfg = init_config(cfg, src, explicit)
    else:
        src = None
    cfg, dataset = prepare_run(cfg, world_size, dataset)
    if src is not None:
        check_init_fits(cfg, src)
    check_freeze_d(cfg)
    return cfg, dataset, src


# ---------------------------------------------------------------------------- Freeze-D


def d_layers(img_resolution: int) -> list[str]:
    """D's layers from the image on, as the published ``--freezed`` counts them:
    ``block{R}.from_rgb, .conv, .conv_down, .skip``, then ``conv, conv_down, skip`` of each lower block."""
    out, res = [], img_resolution
    while res >= 8:
        out += ([f"block{res}.from_rgb"] if res == img_resolution else []) + [
            f"block{res}.{name}" for name in ("conv", "conv_down", "skip")]
        res //= 2
    return out


def check_freeze_d(cfg: RunConfig) -> None:
    """``train.freeze_d`` at most D's layer count (an error naming both)."""
    n, res = cfg.train.freeze_d, cfg.network.img_resolution
    count = len(d_layers(res))
    if n > count:
        raise UserError(f"--freeze-d {n}: the discriminator at {res} px has {count} layers (4 in the {res}-px "
                        f"block, 3 in each lower one, the epilogue is never frozen); pass at most {count}")


def freeze_d(D: torch.nn.Module, n: int) -> tuple[list[torch.nn.Parameter], list[str]]:
    """``(trainable parameters, frozen names)`` of D with its first ``n`` layers (:func:`d_layers`)
    frozen: they never require a gradient and must stay out of the optimizer."""
    layers = d_layers(D.img_resolution)
    if n > len(layers):
        raise UserError(f"--freeze-d {n}: the discriminator at {D.img_resolution} px has {len(layers)} layers")
    for name in layers[:n]:
        D.get_submodule(name)  # the counting must name real layers (AttributeError otherwise)
    prefixes = tuple(name + "." for name in layers[:n])
    trainable, frozen = [], []
    for name, p in D.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen.append(name)
        else:
            trainable.append(p)
    return trainable, frozen


def describe_freeze(cfg: RunConfig, D: torch.nn.Module, frozen: list[str]) -> list[str]:
    """The log line of Freeze-D (none without it)."""
    n = cfg.train.freeze_d
    if not n:
        return []
    layers = d_layers(cfg.network.img_resolution)
    size = sum(D.get_parameter(name).numel() for name in frozen)
    return [f"freeze-d {n}: D's first {n} of {len(layers)} layers frozen ({size:,} parameters in {len(frozen)} "
            f"tensors: {', '.join(layers[:n])})"
            + ("" if cfg.train.init else "; without --init they keep their random initialisation")]


# ---------------------------------------------------------------------------- weights


@dataclass
class TransferReport:
    """What one network got from SRC: tensor names (state-dict keys) by how they were set."""

    copied: list[str] = field(default_factory=list)
    grafted: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _explained(net: str, name: str, src: NetworkConfig, dst: NetworkConfig) -> bool:
    """Whether the transfer explains why SRC lacks ``name`` (or has it in another shape)."""
    m = re.match(r"(?:synthesis\.)?block(\d+)\.", name)
    if m and int(m.group(1)) > src.img_resolution:  # a block above SRC's resolution
        return True
    if src.c_dim != dst.c_dim and (name.startswith("mapping.embed.") if net.startswith("G") else
                                   name.startswith(("mapping.", "epilogue.out."))):
        return True  # a conditioning head
    return net == "D" and dst.img_resolution < src.img_resolution and \
        name.startswith(f"block{dst.img_resolution}.from_rgb.")


def _graft_fc0(src_w: torch.Tensor, dst_w: torch.Tensor) -> torch.Tensor:
    """G's ``mapping.fc0.weight`` ``[L, z]`` -> ``[L, z + e]`` with the same runtime output for the
    z-part: the gain ``lr_multiplier / sqrt(in_features)`` falls by ``sqrt(z / (z + e))``, so the
    z-columns rise by ``sqrt((z + e) / z)``; the embedding's columns start at zero."""
    z = src_w.shape[1]
    out = torch.zeros_like(dst_w)
    out[:, :z] = src_w.to(dst_w) * math.sqrt(dst_w.shape[1] / z)
    return out


@torch.no_grad()
def _transfer_one(net: str, module: torch.nn.Module, sd: dict[str, torch.Tensor], src_net: NetworkConfig,
                  dst_net: NetworkConfig, path: Any) -> TransferReport:
    report = TransferReport()
    graft = net.startswith("G") and src_net.c_dim == 0 and dst_net.c_dim > 0
    for name, t in module.state_dict().items():  # tensors sharing the module's storage
        s = sd.get(name)
        if s is not None and tuple(s.shape) == tuple(t.shape):
            t.copy_(s)
            report.copied.append(name)
        elif graft and name == "mapping.fc0.weight" and s is not None and s.shape[0] == t.shape[0]:
            t.copy_(_graft_fc0(s, t))
            report.grafted.append(name)
        elif _explained(net, name, src_net, dst_net):
            report.new.append(name)
        elif s is None:
            raise UserError(f"--init {path}: SRC's {net} has no tensor {name}, which this run's network needs; "
                            f"SRC's config may not describe its weights")
        else:
            raise UserError(f"--init {path}: {net}.{name} has shape {list(s.shape)} in SRC and "
                            f"{list(t.shape)} in this run's network; the networks do not fit")
    used = set(report.copied) | set(report.grafted)
    report.dropped = [k for k in sd if k not in used]
    return report


def transfer_weights(G: torch.nn.Module, D: torch.nn.Module, G_ema: torch.nn.Module, src: dict,
                     cfg: RunConfig) -> dict[str, TransferReport]:
    """Copy (and graft) SRC's weights into the freshly built ``G``, ``D``, ``G_ema`` in place;
    returns what happened to each tensor, per network. A file without ``G_ema`` (or ``G``) gives
    the other to both; one without ``D`` cannot be fine-tuned."""
    path, src_net = cfg.train.init, source_network(src, cfg.train.init)
    g, g_ema = src.get("G") or src.get("G_ema"), src.get("G_ema") or src.get("G")
    if g is None or not src.get("D"):
        raise UserError(f"--init {path}: SRC holds no {'generator' if g is None else 'discriminator'}; "
                        f"fine-tuning needs G and D (a training snapshot, not a generator-only file)")
    return {name: _transfer_one(name, module, sd, src_net, cfg.network, path)
            for name, module, sd in (("G", G, g), ("D", D, src["D"]), ("G_ema", G_ema, g_ema))}


def _group(name: str) -> str:
    """The block a tensor belongs to: ``synthesis.block8``, ``block16``, ``mapping``, ``epilogue``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "synthesis" and len(parts) > 2 else parts[0]


def _names(names: list[str]) -> str:
    """``3 (mapping 2: embed.bias, embed.weight; block16 1: from_rgb.weight)``; long groups by count only."""
    if not names:
        return "0"
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(_group(n), []).append(n)
    parts = []
    for g, ns in groups.items():
        leaves = [n[len(g) + 1:] or n for n in ns]
        parts.append(f"{g} {len(ns)}" + (f": {', '.join(leaves)}" if len(ns) <= 4 else ""))
    return f"{len(names)} ({'; '.join(parts)})"


def describe_transfer(reports: dict[str, TransferReport], src: dict, cfg: RunConfig) -> list[str]:
    """The log lines of an init: the source, the change of resolution and labels, and per network
    which tensors were copied, grafted, new and dropped (grouped by block)."""
    path, src_net, net = cfg.train.init, source_network(src, cfg.train.init), cfg.network
    sha = (src.get("provenance") or {}).get("source_sha256")
    what = (f"imported{f', sha256 {sha[:12]}' if sha else ''}" if src.get("kind") == "imported"
            else f"training checkpoint, kimg {int(src.get('cur_nimg', 0)) / 1000:g}")
    lines = [f"init from {path} ({what}; {src_net.img_resolution} px, c_dim {src_net.c_dim}) -> "
             f"{net.img_resolution} px, c_dim {net.c_dim}; counters, optimizers and ADA start at zero"]
    if net.img_resolution < src_net.img_resolution:
        lines.append(f"init: lower resolution ({src_net.img_resolution} -> {net.img_resolution} px): every block up "
                     f"to {net.img_resolution} px is taken, those above are dropped; D's new top from_rgb is new")
    elif net.img_resolution > src_net.img_resolution:
        lines.append(f"init: higher resolution ({src_net.img_resolution} -> {net.img_resolution} px): the G and D "
                     f"blocks above {src_net.img_resolution} px are new (random initialisation)")
    else:
        lines.append(f"init: same resolution ({net.img_resolution} px)")
    if src_net.c_dim == 0 and net.c_dim > 0:
        e = net.w_dim
        lines.append(f"init: conditional from unconditional: G's mapping.fc0 grafted (z-columns x sqrt(({net.z_dim} "
                     f"+ {e}) / {net.z_dim}), embedding columns 0; mapping.embed random), D's conditioning head new")
    for name, r in reports.items():
        if name == "G_ema" and dataclasses.astuple(r) == dataclasses.astuple(reports["G"]):
            lines.append("init G_ema: as G, from SRC's G_ema")
            continue
        lines.append(f"init {name}: copied {_names(r.copied)}; grafted {_names(r.grafted)}; new {_names(r.new)}; "
                     f"dropped {_names(r.dropped)}")
    return lines



def preview(cfg: RunConfig, src: Optional[dict]) -> list[str]:
    """The init and Freeze-D lines a run of ``cfg`` would log (for ``--dry-run``; networks built on CPU)."""
    if src is None and not cfg.train.freeze_d:
        return []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        G, D = build_generator(cfg.network), build_discriminator(cfg.network)
    lines = describe_transfer(transfer_weights(G, D, G, src, cfg), src, cfg) if src is not None else []
    return lines + describe_freeze(cfg, D, freeze_d(D, cfg.train.freeze_d)[1])
