"""A steady-state training step makes no host-device sync: checked on the CPU, by construction.

No GPU runs here, so the step runs on the ``meta`` device, which stands for the accelerator:
tensors with shapes and no data, so every operation that would need the GPU's numbers on the
host fails there, and autograd (double backward included) works as on CUDA. :class:`SyncRecorder`
records, for the tensors on that device,

* host reads: ``aten._local_scalar_dense`` (``.item()``, ``float(t)``, ``bool(t)``, ``if t:``),
  copies to the host (``.cpu()``, ``.tolist()``) and the ops whose output size depends on the
  data (``nonzero``, boolean-mask indexing, ``unique``, ``masked_select``, ...);
* host-to-device copies that do not go through :func:`gan.util.to_device` (a ``.to(device)`` of
  pageable memory waits for the GPU; the helper stages in pinned memory and copies
  non-blocking, checked below with a fake CUDA device) and tensors built from Python data on
  the device (``torch.tensor(data, device=...)``, ``t.new_tensor(...)``, which copy from pageable
  memory and are invisible to a dispatch mode, so they are patched).

Host-side work is not a sync and is not recorded: reads of CPU tensors (the style-mixing gate and
cutoff of :class:`gan.loss.StepRandom`, the pipe's masks and matrices built on the host) and
fills with a Python scalar (``torch.full``, ``new_full``: the value travels as a kernel argument).
The negative controls show that the recorder catches each kind; the step tests show that
Gmain, Greg, Dmain and Dreg, the EMA update, the ADA controller in ``fixed`` mode and the
monitor make none (one read per ADA interval in ``ada`` mode, as published).
"""

from __future__ import annotations

import contextlib
import sys
import traceback

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gan
from gan import loss as loss_mod
from gan import monitor
from gan.run_config import batch_plans, load_run_config
from gan.util import _pack, _unpack, to_device

from tests._settings import DEMO_GAN_CONFIG

aten = torch.ops.aten
DEV = torch.device("meta")  # stands for the GPU
GAN_DIR = str(Path(gan.__file__).parent)

#: Ops whose result the host needs to know (a value, or the size of the output).
HOST_READS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.nonzero_static.default,
              aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
              aten.unique_consecutive.default, aten.equal.default, aten.is_nonzero.default,
              aten.repeat_interleave.Tensor, aten.bincount.default, aten.allclose.default}


def _on_dev(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == DEV.type


def _where() -> str:
    """The innermost frames of gan/ code: where the sync comes from."""
    frames = [f for f in traceback.extract_stack() if f.filename.startswith(GAN_DIR)]
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames[-3:]))


def _through_to_device() -> bool:
    f = sys._getframe()
    while f is not None:
        if f.f_code.co_name == "to_device" and f.f_code.co_filename.endswith("gan/util.py"):
            return True
        f = f.f_back
    return False


class SyncRecorder(TorchDispatchMode):
    """Records every operation on ``meta`` tensors that would make the host wait for a GPU."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []
        self.on = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.on:
            self._check(func, args, kwargs)
        if func is aten._local_scalar_dense.default and _on_dev(args[0]):
            return False if args[0].dtype == torch.bool else 1  # no data: any value lets the code go on
        if func is aten._to_copy.default and _on_dev(args[0]) and kwargs.get("device") == torch.device("cpu"):
            return torch.ones(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)

    def _check(self, func, args, kwargs) -> None:
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if func in HOST_READS and any(_on_dev(t) for t in tensors):
            self.syncs.append(f"{func} at {_where()}")
        if func is aten.index.Tensor and _on_dev(args[0]):
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.syncs.append(f"boolean-mask indexing at {_where()}")
        dst = kwargs.get("device")
        if func is aten._to_copy.default and dst is not None:
            src = args[0].device.type
            if src == "cpu" and torch.device(dst).type == DEV.type and not _through_to_device():
                self.syncs.append(f"host-to-device copy of pageable memory at {_where()}")
            if src == DEV.type and torch.device(dst).type == "cpu":
                self.syncs.append(f"device-to-host copy at {_where()}")
        if func is aten.copy_.default:
            d, s = args[0].device.type, args[1].device.type
            if d == DEV.type and s == "cpu" and not _through_to_device():
                self.syncs.append(f"host-to-device copy_ of pageable memory at {_where()}")
            if d == "cpu" and s == DEV.type:
                self.syncs.append(f"device-to-host copy_ at {_where()}")

    def built_from_data(self, what: str, device) -> None:
        if self.on and device is not None and torch.device(device).type == DEV.type:
            self.syncs.append(f"{what} on the device (a pageable copy) at {_where()}")


@contextlib.contextmanager
def recording(monkeypatch):
    rec = SyncRecorder()
    real_tensor, real_as_tensor, real_new_tensor = torch.tensor, torch.as_tensor, torch.Tensor.new_tensor

    def tensor(data, *a, device=None, **kw):
        rec.built_from_data("torch.tensor(data)", device)
        return real_tensor(data, *a, device=device, **kw)

    def as_tensor(data, *a, device=None, **kw):
        if not isinstance(data, torch.Tensor):
            rec.built_from_data("torch.as_tensor(data)", device)
        return real_as_tensor(data, *a, device=device, **kw)

    def new_tensor(self, data, *a, device=None, **kw):
        rec.built_from_data("Tensor.new_tensor(data)", device if device is not None else self.device)
        return real_new_tensor(self, data, *a, device=device, **kw)

    monkeypatch.setattr(torch, "tensor", tensor)
    monkeypatch.setattr(torch, "as_tensor", as_tensor)
    monkeypatch.setattr(torch.Tensor, "new_tensor", new_tensor)
    # A generator on the meta device does not exist; seeding a CUDA one is host-side (Philox
    # seed and offset), so a CPU generator stands in for it.
    monkeypatch.setattr(loss_mod, "_device_generator", lambda device, seed: torch.Generator().manual_seed(seed))
    with rec:
        yield rec


# ---------------------------------------------------------------------------- the recorder can fail


@pytest.mark.parametrize("name, sync", [
    ("item", lambda x: x.sum().item()),
    ("float", lambda x: float(x[0, 0])),
    ("if tensor", lambda x: 1 if (x > 0).all() else 0),
    ("tolist", lambda x: x[0].tolist()),
    ("cpu", lambda x: x.cpu()),
    ("nonzero", lambda x: torch.nonzero(x > 0)),
    ("mask", lambda x: x[x > 0]),
    ("torch.tensor", lambda x: torch.tensor([1.0, 2.0], device=x.device)),
    ("new_tensor", lambda x: x.new_tensor(3.0)),
    ("pageable .to", lambda x: torch.ones(3).to(x.device)),
    ("pageable copy_", lambda x: x[0].copy_(torch.ones(4))),
])
def test_the_recorder_catches_every_kind_of_sync(monkeypatch, name, sync):
    x = torch.randn(3, 4, device=DEV)
    with recording(monkeypatch) as rec, contextlib.suppress(NotImplementedError, RuntimeError):
        sync(x)  # recorded before it runs (and fails: the meta device has no data to give)
    assert len(rec.syncs) >= 1, name


def test_host_work_and_scalar_fills_are_not_syncs(monkeypatch):
    x = torch.randn(3, 4, device=DEV)
    with recording(monkeypatch) as rec:
        gate = float(torch.rand([], generator=torch.Generator().manual_seed(0)))  # a host-side decision
        mask = torch.rand(8) < gate
        idx = torch.nonzero(mask).flatten()  # on the host
        moved = to_device([idx, torch.randn(len(idx), 3, 3, dtype=torch.float64)], DEV)
        y = x + x.new_full([], 2.0) + torch.full([3, 4], 0.5, device=DEV)
        y = y.lerp(x, 0.3)
    assert rec.syncs == [] and moved[0].device == DEV and y.shape == (3, 4)


# ---------------------------------------------------------------------------- to_device


def test_to_device_on_the_cpu_returns_the_tensors_themselves():
    ts = [torch.arange(5), torch.randn(3, 3, dtype=torch.float64).t(), torch.tensor(True), torch.zeros(0, 4)]
    out = to_device(ts, "cpu")
    assert all(a is b for a, b in zip(ts, out))
    assert to_device(ts[0], "cpu") is ts[0]


def test_packing_keeps_values_dtypes_and_shapes():
    ts = [torch.arange(5), torch.randn(3, 3, dtype=torch.float64).t(), torch.tensor(True), torch.zeros(0, 4),
          torch.randn(2, dtype=torch.float16), torch.tensor(2.5), torch.randint(0, 9, (7,), dtype=torch.uint8)]
    buf, layout = _pack(ts)
    assert buf.dtype == torch.uint8 and buf.ndim == 1
    out = _unpack(buf.clone(), layout)
    for a, b in zip(ts, out):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    with pytest.raises(ValueError, match="CPU tensors"):
        _pack([torch.zeros(2, device=DEV)])


def test_to_device_on_cuda_stages_in_pinned_memory_and_copies_once_without_blocking():
    """On a fake CUDA device (no GPU needed): one pinned staging buffer, one non-blocking copy."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    seen = []

    class Watch(FakeTensorMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is aten.empty.memory_format:
                seen.append(("empty", kwargs.get("pin_memory")))
                kwargs = {**kwargs, "pin_memory": False}  # pinning needs a driver; the request is what counts
            if func is aten._to_copy.default and str(kwargs.get("device", "")).startswith("cuda"):
                seen.append(("copy", kwargs.get("non_blocking")))
            return super().__torch_dispatch__(func, types, args, kwargs)

    ts = [torch.arange(6).reshape(2, 3), torch.randn(4, 3, 3, dtype=torch.float64), torch.tensor(True)]
    with Watch(allow_non_fake_inputs=True):
        out = to_device(ts, "cuda")
    assert [s for s in seen if s[0] == "empty"] == [("empty", True)]
    assert [s for s in seen if s[0] == "copy"] == [("copy", True)]
    assert [(o.device.type, o.dtype, o.shape) for o in out] == [("cuda", t.dtype, t.shape) for t in ts]


# ---------------------------------------------------------------------------- the training step


def _run(monkeypatch, mode: str, extra: list[str], steps: int, record_from: int):
    """Steps of the trainer's loop body on DEV; the syncs recorded from step ``record_from`` on."""
    from gan import train as T

    cfg = load_run_config(DEMO_GAN_CONFIG, [
        "network.img_resolution=32", "network.c_dim=3", "train.batch=8", f"augment.mode={mode}",
        *(["augment.p=0.5"] if mode != "none" else []), "augment.interval=2", *extra])
    main_plan, greg_plan = batch_plans(cfg, 1, 0)
    split = any(max(p.rounds_per_rank) > 1 for p in (main_plan, greg_plan))
    monkeypatch.setattr(monitor.Monitor, "FOLD_EVERY", 3)  # fold the monitor's values within the test
    with recording(monkeypatch) as rec, monitor.Monitor(None):
        rec.on = False  # setup: networks, optimizers, first use of every cache
        run = T.build(cfg, DEV, collect_w=split)
        real_img = torch.zeros(8, 3, 32, 32, device=DEV)
        real_c = torch.zeros(8, 3, device=DEV)
        label_table = torch.eye(3, device=DEV).repeat(10, 1)  # [30, 3]
        first_bad = {p.name: torch.full([], -1, dtype=torch.int64, device=DEV) for p in run.phases}
        for step in range(steps):
            rec.on = step >= record_from
            for ph in run.phases:  # every phase every step: Greg and Dreg are in the recorded steps
                T._run_phase(ph, run.loss, greg_plan if ph.name == "Greg" else main_plan, real_img, real_c,
                             label_table, 0, step * 8, DEV, 8, run.ada, first_bad[ph.name])
            T.update_ema(run.G_ema, run.G, cfg.train, step * 8)
            run.ada.step(8)
        rec.on = False
    assert [p.name for p in run.phases] == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert (run.loss.augment_p > 0) == (mode != "none")  # the pipe took part
    return rec.syncs


@pytest.mark.parametrize("mode", ["fixed", "none"])
@pytest.mark.parametrize("extra", [[], ["train.batch_gpu=4"]], ids=["one-round", "two-rounds"])
def test_a_steady_state_step_makes_no_sync(monkeypatch, mode, extra):
    """Every phase, the EMA, ADA in fixed/none mode, the monitor (folding included), with the
    pipe on (p = 0.5: blit, geom and colour groups) and, with two rounds, the split-batch paths
    (the path-length mean's first pass, the global w_avg update)."""
    syncs = _run(monkeypatch, mode, extra, steps=4, record_from=1)
    assert syncs == []


def test_ada_mode_reads_once_per_adjustment_interval(monkeypatch):
    """As published: p is a host float, so adjusting it reads the sign statistics once per interval."""
    syncs = _run(monkeypatch, "ada", [], steps=5, record_from=1)  # steps 2 and 4 end an interval of 2
    assert len(syncs) == 2 and all("device-to-host" in s and "augment.py" in s for s in syncs), syncs
