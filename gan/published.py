"""Read published StyleGAN2-ADA network pickles without executing anything in them.

A published ``network-snapshot-*.pkl`` (NVlabs stylegan2-ada-pytorch, and the
``stylegan2-*.pkl`` files of the stylegan3 repository) is a plain pickle of a dict
``{G, D, G_ema, augment_pipe, training_set_kwargs}`` whose modules are stored through
``torch_utils.persistence``: each is a call ``_reconstruct_persistent_obj(meta)`` where
``meta`` holds ``module_src`` (the Python source of the module that defined the class),
``class_name`` and ``state`` (the module's ``__dict__``: ``_parameters``, ``_buffers``,
``_modules`` with nested persistent objects, ``_init_kwargs`` with the constructor's
arguments). ``pickle.load`` runs that source, so loading such a file the usual way is
running someone else's code, and it fails with "No module named 'torch_utils'" unless
their code is installed.

This reader never executes, imports or writes that source. It unpickles with a closed
table of globals (:data:`ALLOWED`); any other global, e.g. ``posix.system`` from a
crafted ``__reduce__``, stops the load with :class:`UnsafePickle` naming it, before it
is called. Persistent objects become inert :class:`PersistentObject` records (their
source is only hashed, SHA-256); storages, which the pickle rebuilds through
``torch.storage._load_from_bytes`` (in current torch a ``torch.load(weights_only=False)``),
are read with ``torch.load(weights_only=True)`` instead; numpy scalars are rebuilt from
their bytes with a plain numeric dtype (:class:`_DType`), never from pickled objects. No NVIDIA module is imported, none is needed.

The network configuration is read from each module's stored constructor arguments
(:func:`network_config`, with the published defaults where an argument was not
given), and the weights go into our networks through the name mapping of
:mod:`gan.convert`, which checks every key and shape: a file and a config that disagree
on a tensor's shape is an error naming the key, never a silently dropped layer. Result:
a dict in our checkpoint form (:func:`import_pickle`), which :func:`gan.checkpoint.read_network`
hands to everything that takes ``--network``.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from gan.config import ConfigError, to_dict
from gan.convert import load_published_state_dict
from gan.networks import NetworkConfig, build_discriminator, build_generator
from gan.util import MissingWeights, UserError

__all__ = ["UnsafePickle", "PersistentObject", "ALLOWED", "load_published_pickle", "network_config",
           "flat_state_dict", "import_pickle", "describe_import"]

log = logging.getLogger("gan")


class UnsafePickle(UserError):
    """A pickle names a global outside :data:`ALLOWED`; nothing of it was called."""


# ---------------------------------------------------------------------------- the restricted unpickler


@dataclass(frozen=True)
class PersistentObject:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` would have rebuilt,
    as inert data: ``class_name``, ``state`` (the module's ``__dict__``) and the SHA-256 of
    ``module_src``. The source itself is dropped as soon as it is hashed."""

    class_name: str
    state: dict
    src_sha256: str
    version: Any = None

    def child(self, name: str) -> Optional["PersistentObject"]:
        mods = self.state.get("_modules") or {}
        obj = mods.get(name)
        return obj if isinstance(obj, PersistentObject) else None

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class _EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access): here a plain
    dict subclass, so the pickle's ``BUILD`` and ``SETITEMS`` fill it like any dict."""


def _persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or not {"class_name", "state", "module_src"} <= set(meta):
        raise pickle.UnpicklingError("a persistent object without class_name, state and module_src")
    if meta.get("type", "class") != "class":
        raise pickle.UnpicklingError(f"persistent object of type {meta.get('type')!r}; only classes are stored "
                                     f"in network pickles")
    src = meta["module_src"]
    if not isinstance(src, (str, bytes)):  # bytes(<int>) would allocate that many bytes
        raise pickle.UnpicklingError(f"persistent {meta['class_name']!r}: its module_src is not text")
    src_bytes = src.encode("utf-8") if isinstance(src, str) else src
    state = meta["state"]
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent {meta['class_name']}: its state is not a dict")
    return PersistentObject(str(meta["class_name"]), state, hashlib.sha256(src_bytes).hexdigest(), meta.get("version"))


def _storage_from_bytes(data: bytes):
    """The storage that ``torch.save`` wrote into ``data``, read with ``weights_only=True``."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a stored tensor whose data is not bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _DType:
    """Stands in for ``numpy.dtype`` while unpickling: plain numbers only. The real
    ``numpy.dtype.__setstate__`` accepts structured dtypes whose object fields are not
    flagged as such (and offsets past the data), and reading such a "scalar" dereferences
    attacker bytes as object pointers; this record accepts a numeric type code and a state
    without sub-arrays, names or fields, and builds the real dtype only when asked."""

    CODES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if not isinstance(code, str) or code not in self.CODES:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain number type")
        self.code, self.byteorder = code, "="

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and state[2] is None and state[3] is None and state[4] is None):
            raise pickle.UnpicklingError("a numpy dtype state with sub-arrays, names or fields")
        self.byteorder = state[1]

    def numpy(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


def _numpy_scalar(dtype: Any, data: Any = None):
    """A numpy scalar from a plain numeric dtype (:class:`_DType`) and exactly its bytes (what
    ``numpy.core.multiarray.scalar`` rebuilds); anything else is refused."""
    if not isinstance(dtype, _DType) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    dt = dtype.numpy()
    if len(data) != dt.itemsize:
        raise pickle.UnpicklingError(f"a numpy {dt} scalar of {len(data)} bytes")
    return np.frombuffer(bytes(data), dtype=dt, count=1)[0]


#: ``(module, name) -> object``: every global a published network pickle uses, and nothing
#: else. Files pickled with numpy 1 (the published FFHQ networks) and numpy 2 name numpy's
#: module differently; both spellings map to the same rebuild.
ALLOWED: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, source: Path):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):  # every global of the pickle passes here
        found = ALLOWED.get((module, name))
        if found is not None:
            return found
        if module.startswith("dnnlib.tflib"):
            raise UnsafePickle(
                f"{self.source}: a TensorFlow network pickle (it names {module}.{name}), from the TF version of "
                f"StyleGAN2(-ADA); convert it to a PyTorch pickle with the published tools first (stylegan2-ada-pytorch: "
                f"`python legacy.py --source={self.source.name} --dest=converted.pkl`), then pass converted.pkl")
        raise UnsafePickle(
            f"{self.source}: refused the global {module}.{name}; a published StyleGAN2-ADA network pickle uses only "
            f"{', '.join(sorted({m + '.' + n for m, n in ALLOWED}))}. Nothing of the file was executed; "
            f"this file is not a network snapshot (or has been tampered with)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id (network pickles have none)")


#: Where the published networks are (nothing is downloaded here; the message says where to get one).
TRANSFER_SOURCES_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/"
ADA_PRETRAINED_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
NGC_STYLEGAN2_URL = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"


def _where_to_get(name: str) -> str:
    if name.startswith(("ffhq-res", "celebahq-res", "lsundog-res")):
        return f"{TRANSFER_SOURCES_URL}{name}"
    if name.startswith("stylegan2-"):
        return f"{NGC_STYLEGAN2_URL}{name}"
    return (f"{TRANSFER_SOURCES_URL}<name> (the ADA paper's transfer sources, e.g. ffhq-res256-mirror-paper256-noaug.pkl), "
            f"{ADA_PRETRAINED_URL}<name> (e.g. ffhq.pkl, metfaces.pkl) or {NGC_STYLEGAN2_URL}<name> "
            f"(e.g. stylegan2-ffhq-1024x1024.pkl)")


def load_published_pickle(path: str | Path) -> tuple[dict, str]:
    """``(top-level dict, file SHA-256)`` of a published snapshot, read through :class:`_Unpickler`."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(
            f"published network {path.name} is not at {path}. Nothing is downloaded at run time: fetch it "
            f"yourself from {_where_to_get(path.name)} (for example with wget or curl on a machine with internet "
            f"access), put it there or pass its path; it is read without executing anything in it.")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        top = _Unpickler(io.BytesIO(data), path).load()
    except UserError:
        raise
    except Exception as exc:  # truncated, corrupt, not a pickle, a bad tensor record
        first = (str(exc).splitlines() or [""])[0][:200]
        raise UserError(f"network pickle {path} cannot be read ({type(exc).__name__}: {first}); it is truncated, "
                        f"corrupt or not a pickle: download it again (compare its SHA-256, {digest[:16]}...)") from None
    if not isinstance(top, dict) or not isinstance(top.get("G"), PersistentObject) \
            or not isinstance(top.get("D"), PersistentObject):
        keys = sorted(map(str, top)) if isinstance(top, dict) else type(top).__name__
        raise UserError(f"network pickle {path}: not a StyleGAN2-ADA snapshot (expected a dict with G, D and G_ema "
                        f"modules, found {keys})")
    return top, digest


# ---------------------------------------------------------------------------- modules -> state dicts


def flat_state_dict(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """What ``module.state_dict()`` would give: parameters and persistent buffers by dotted name."""
    out: dict[str, torch.Tensor] = {}
    st = obj.state
    skip = set(st.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (st.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise UserError(f"network pickle: {prefix}{name} of {obj.class_name} is not a tensor")
            out[prefix + name] = value.detach().to("cpu", torch.float32) if value.is_floating_point() else value
    for name, child in (st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise UserError(f"network pickle: submodule {prefix}{name} of {obj.class_name} is not a stored module")
        out.update(flat_state_dict(child, f"{prefix}{name}."))
    return out


def _classes(obj: PersistentObject) -> set[str]:
    names = {obj.class_name}
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, PersistentObject):
            names |= _classes(child)
    return names


def _sources(obj: PersistentObject, found: dict[str, set[str]]) -> dict[str, set[str]]:
    found.setdefault(obj.src_sha256, set()).add(obj.class_name)
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, PersistentObject):
            _sources(child, found)
    return found


def _plain(value: Any) -> Any:
    """Constructor arguments as plain data (dicts, lists, numbers, strings) for a checkpoint."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# ---------------------------------------------------------------------------- constructor arguments -> NetworkConfig

# Published defaults (stylegan2-ada-pytorch training/networks.py) of the arguments a file may omit.
_G_SYNTH_DEFAULTS = {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "conv_clamp": None,
                     "architecture": "skip", "resample_filter": [1, 3, 3, 1], "use_noise": True, "activation": "lrelu"}
_MAPPING_DEFAULTS = {"num_layers": 8, "embed_features": None, "layer_features": None, "activation": "lrelu",
                     "lr_multiplier": 0.01, "w_avg_beta": 0.995}
_D_DEFAULTS = {"architecture": "resnet", "channel_base": 32768, "channel_max": 512, "num_fp16_res": 0,
               "conv_clamp": None, "cmap_dim": None}
_EPILOGUE_DEFAULTS = {"mbstd_group_size": 4, "mbstd_num_channels": 1, "activation": "lrelu"}
# Arguments that change neither a tensor's shape nor an output: memory layout, the choice
# between a grouped and an unfused modulated convolution, and Freeze-D (training only).
_NO_EFFECT = {"channels_last", "fp16_channels_last", "fused_modconv_default", "freeze_layers"}
_G_TOP = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}


def _unsupported(path: Path, what: str) -> UserError:
    return UserError(f"network pickle {path}: {what}; mtf-gan supports StyleGAN2(-ADA) skip generators with residual "
                     f"discriminators on RGB images (the published FFHQ networks)")


def _known(args: dict, defaults: dict, where: str, path: Path) -> dict:
    """``defaults`` updated with ``args``; an argument we do not model is an error naming it."""
    extra = sorted(set(args) - set(defaults) - _NO_EFFECT)
    if extra:
        raise _unsupported(path, f"{where} has settings this package does not model: "
                                 + ", ".join(f"{k}={args[k]!r}" for k in extra))
    return {**defaults, **{k: v for k, v in args.items() if k in defaults}}


def _check_plain_layers(path: Path, where: str, args: dict) -> None:
    if list(args.get("resample_filter") or [1, 3, 3, 1]) != [1, 3, 3, 1]:
        raise _unsupported(path, f"{where} uses the FIR filter {args['resample_filter']}, not [1, 3, 3, 1]")
    if args.get("activation", "lrelu") != "lrelu":
        raise _unsupported(path, f"{where} uses the activation {args['activation']!r}, not lrelu")


def network_config(G: PersistentObject, D: PersistentObject, path: Path) -> tuple[NetworkConfig, dict[str, Any]]:
    """``(NetworkConfig, settings read from the file that change no shape)`` from the stored
    constructor arguments of ``G`` and ``D``. Raises :class:`UserError` for what we do not
    support (StyleGAN3, other architectures, non-RGB), naming what the file is."""
    classes = _classes(G)
    if G.class_name != "Generator" or D.class_name != "Discriminator":
        raise _unsupported(path, f"its G is a {G.class_name} and its D a {D.class_name}, not a StyleGAN2 "
                                 f"Generator and Discriminator")
    synthesis = G.child("synthesis")
    if "SynthesisInput" in classes or (synthesis is not None and synthesis.child("input") is not None):
        raise _unsupported(path, "it holds a StyleGAN3 generator (StyleGAN3-T or -R: its synthesis network starts "
                                 "from a SynthesisInput, not a learned constant)")
    gk = G.init_kwargs
    missing = sorted({"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"} - set(gk))
    if missing:
        raise UserError(f"network pickle {path}: G's stored constructor arguments lack {', '.join(missing)}")
    synth = {**dict(gk.get("synthesis_kwargs") or {}), **{k: v for k, v in gk.items() if k not in _G_TOP}}
    synth = _known(synth, _G_SYNTH_DEFAULTS, "G's synthesis network", path)
    gmap = _known(dict(gk.get("mapping_kwargs") or {}), _MAPPING_DEFAULTS, "G's mapping network", path)
    dk = D.init_kwargs
    dtop = _known({k: v for k, v in dk.items() if k not in ("c_dim", "img_resolution", "img_channels", "block_kwargs",
                                                          "mapping_kwargs", "epilogue_kwargs")},
                  _D_DEFAULTS, "D", path)
    dblock = _known(dict(dk.get("block_kwargs") or {}), {"activation": "lrelu", "resample_filter": [1, 3, 3, 1]},
                    "D's blocks", path)
    dmap = _known(dict(dk.get("mapping_kwargs") or {}), _MAPPING_DEFAULTS, "D's label mapping", path)
    epi = _known(dict(dk.get("epilogue_kwargs") or {}), _EPILOGUE_DEFAULTS, "D's epilogue", path)

    if synth["architecture"] != "skip":
        raise _unsupported(path, f"its generator has the {synth['architecture']!r} architecture (only 'skip', "
                                 f"the StyleGAN2 config-F default, is supported)")
    if dtop["architecture"] != "resnet":
        raise _unsupported(path, f"its discriminator has the {dtop['architecture']!r} architecture (only 'resnet')")
    if int(gk["img_channels"]) != 3:
        raise _unsupported(path, f"its images have {gk['img_channels']} channel(s), not RGB")
    if not synth["use_noise"]:
        raise _unsupported(path, "its generator has no noise inputs (use_noise=False)")
    for where, args in (("G's synthesis network", synth), ("D's blocks", dblock), ("G's mapping", gmap),
                        ("D's label mapping", dmap), ("D's epilogue", epi)):
        _check_plain_layers(path, where, args)
    w_dim = int(gk["w_dim"])
    for key in ("embed_features", "layer_features"):
        if gmap[key] not in (None, w_dim):
            raise _unsupported(path, f"G's mapping has {key}={gmap[key]} (ours are w_dim = {w_dim})")
        if dmap[key] is not None:
            raise _unsupported(path, f"D's label mapping has {key}={dmap[key]} (ours are cmap_dim)")
    if gmap["w_avg_beta"] is None:
        raise _unsupported(path, "G's mapping tracks no w_avg (w_avg_beta=None)")
    for key in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp"):
        if synth[key] != dtop[key]:
            raise _unsupported(path, f"G and D differ in {key} ({synth[key]} and {dtop[key]}); our network config "
                                     f"has one {key} for both")
    if gmap["lr_multiplier"] != dmap["lr_multiplier"] and int(dk.get("c_dim", 0)) > 0:
        raise _unsupported(path, f"G's and D's mappings differ in lr_multiplier ({gmap['lr_multiplier']} and "
                                 f"{dmap['lr_multiplier']})")
    for key in ("c_dim", "img_resolution", "img_channels"):
        if key in dk and int(dk[key]) != int(gk[key]):
            raise UserError(f"network pickle {path}: G and D differ in {key} ({gk[key]} and {dk[key]})")
    try:
        cfg = NetworkConfig(
            z_dim=int(gk["z_dim"]), w_dim=w_dim, c_dim=int(gk["c_dim"]), img_resolution=int(gk["img_resolution"]),
            img_channels=int(gk["img_channels"]), mapping_layers=int(gmap["num_layers"]),
            mapping_lr_multiplier=float(gmap["lr_multiplier"]), w_avg_beta=float(gmap["w_avg_beta"]),
            d_mapping_layers=int(dmap["num_layers"]), cmap_dim=None if dtop["cmap_dim"] is None else int(dtop["cmap_dim"]),
            channel_base=int(synth["channel_base"]), channel_max=int(synth["channel_max"]),
            num_fp16_res=int(synth["num_fp16_res"]),
            conv_clamp=None if synth["conv_clamp"] is None else float(synth["conv_clamp"]),
            mbstd_group_size=int(epi["mbstd_group_size"]), mbstd_num_channels=int(epi["mbstd_num_channels"]))
    except (ConfigError, ValueError, TypeError) as exc:
        raise UserError(f"network pickle {path}: its stored settings do not make a network here ({exc})") from None
    settings = {"mbstd_group_size": cfg.mbstd_group_size, "mbstd_num_channels": cfg.mbstd_num_channels,
                "num_fp16_res": cfg.num_fp16_res, "conv_clamp": cfg.conv_clamp,
                "mapping_lr_multiplier": cfg.mapping_lr_multiplier, "w_avg_beta": cfg.w_avg_beta}
    frozen = dict(dk.get("block_kwargs") or {}).get("freeze_layers")
    if frozen:  # the file comes from a Freeze-D run: recorded, not applied (pass --freeze-d to train so)
        settings["published_freeze_layers"] = int(frozen)
    return cfg, settings


# ---------------------------------------------------------------------------- import


def _into_ours(cfg: NetworkConfig, obj: PersistentObject, build, what: str, path: Path) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; leave the caller's RNG alone
        net = build(cfg)
    try:
        load_published_state_dict(net, flat_state_dict(obj))
    except UserError as exc:
        raise UserError(f"network pickle {path}, {what}: {exc}") from None
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def import_pickle(path: str | Path) -> dict[str, Any]:
    """A published network pickle as a dict in our checkpoint form (``kind = "imported"``):
    ``config`` (``{"network": ...}``), ``G``, ``D``, ``G_ema`` (our names; ``G_ema`` is ``G``'s
    copy when the file has none), ``class_names`` (None), ``cur_nimg`` (0), ``augment_p``
    (the file's ADA p, or None without a pipe) and ``provenance``: the file's SHA-256, the
    SHA-256 of every embedded source (with the classes it defined), the stored constructor
    arguments, the training-set arguments and the settings taken from the file."""
    path = Path(path)
    top, digest = load_published_pickle(path)
    G, D = top["G"], top["D"]
    G_ema = top.get("G_ema") if isinstance(top.get("G_ema"), PersistentObject) else None
    cfg, settings = network_config(G, D, path)
    state: dict[str, Any] = {
        "kind": "imported",
        "config": {"network": to_dict(cfg)},
        "G": _into_ours(cfg, G, build_generator, "G", path),
        "D": _into_ours(cfg, D, build_discriminator, "D", path),
        "class_names": None,
        "cur_nimg": 0,
    }
    state["G_ema"] = _into_ours(cfg, G_ema, build_generator, "G_ema", path) if G_ema is not None else dict(state["G"])
    pipe = top.get("augment_pipe")
    p = None
    if isinstance(pipe, PersistentObject):
        p_t = (pipe.state.get("_buffers") or {}).get("p")
        p = float(p_t) if isinstance(p_t, torch.Tensor) and p_t.numel() == 1 else None
    state["augment_p"] = p
    sources: dict[str, set[str]] = {}
    for obj in (G, D, G_ema, pipe):
        if isinstance(obj, PersistentObject):
            _sources(obj, sources)
    state["provenance"] = {
        "source": str(path.resolve()),
        "source_sha256": digest,
        "format": "stylegan2-ada-pytorch network pickle (read without executing its embedded sources)",
        "embedded_sources_sha256": {sha: sorted(names) for sha, names in sorted(sources.items())},
        "init_kwargs": {"G": _plain(G.init_kwargs), "D": _plain(D.init_kwargs)},
        "training_set_kwargs": _plain(top.get("training_set_kwargs")),
        "has_G_ema": G_ema is not None,
        "settings_from_file": settings,
    }
    return state


def describe_import(state: dict[str, Any]) -> list[str]:
    """Lines for the console: what the file is and which settings were taken from it."""
    prov, net = state["provenance"], state["config"]["network"]
    lines = [f"{Path(prov['source']).name} (sha256 {prov['source_sha256'][:16]}...): "
             f"{net['img_resolution']} px, z_dim {net['z_dim']}, w_dim {net['w_dim']}, c_dim {net['c_dim']}, "
             f"{net['mapping_layers']} mapping layers, channel_base {net['channel_base']}, "
             f"channel_max {net['channel_max']}"]
    s = prov["settings_from_file"]
    lines.append("settings taken from the file (they change no tensor shape): "
                 + ", ".join(f"{k} {v}" for k, v in s.items()))
    lines.append(f"embedded sources: {len(prov['embedded_sources_sha256'])} file(s), hashed, never executed"
                 + ("" if prov["has_G_ema"] else "; the file has no G_ema: G_ema is a copy of G"))
    if state.get("augment_p") is not None:
        lines.append(f"published augment p: {state['augment_p']:.4f}")
    return lines
