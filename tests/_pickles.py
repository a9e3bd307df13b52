"""Write pickles in the published StyleGAN2-ADA snapshot format, for the reader's tests.

:func:`gan.published.load_published_pickle` turns a snapshot into inert
:class:`gan.published.PersistentObject` records. :func:`write_snapshot` turns such a
tree (edited by a test: another class name, other constructor arguments, a malicious
``module_src``) back into the bytes the published code would write: each record becomes
a call ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, each ``EasyDict`` a
``dnnlib.util.EasyDict``, tensors go through torch's own pickling
(``torch._utils._rebuild_tensor_v2``, ``torch.storage._load_from_bytes``). No NVIDIA module
is needed or imported: the globals are written by name (:class:`_Writer`).
"""

from __future__ import annotations

import io
import pickle
import types
from pathlib import Path
from typing import Any, Callable, Optional

from gan.published import PersistentObject, _EasyDict, load_published_pickle


def _reconstruct(meta):  # never called: only its published name is written
    raise AssertionError("a test pickle was loaded with the plain unpickler")


_reconstruct.published_name = ("torch_utils.persistence", "_reconstruct_persistent_obj")


class EasyDict(dict):
    published_name = ("dnnlib.util", "EasyDict")


class _Persistent:
    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct, (self.meta,)


class _Writer(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    def save_global(self, obj, name=None):
        published = obj.__dict__.get("published_name") if hasattr(obj, "__dict__") else None
        if published is None:
            return super().save_global(obj, name)
        module, qualname = published
        self.save(module)
        self.save(qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}  # functions go by the table


def _to_writable(value: Any, source: Callable[[PersistentObject], str]) -> Any:
    if isinstance(value, PersistentObject):
        return _Persistent({"type": "class", "version": value.version, "module_src": source(value),
                            "class_name": value.class_name, "state": _to_writable(value.state, source)})
    if isinstance(value, _EasyDict):
        return EasyDict({k: _to_writable(v, source) for k, v in value.items()})
    if isinstance(value, dict):
        return type(value)((k, _to_writable(v, source)) for k, v in value.items())
    if isinstance(value, list):
        return [_to_writable(v, source) for v in value]
    return value


def write_snapshot(path: Path, top: dict, module_src: Optional[Callable[[PersistentObject], str]] = None) -> Path:
    """Pickle ``top`` (a tree from :func:`load_published_pickle`, maybe edited) to ``path``
    as the published code would; ``module_src(obj)`` gives each module's embedded source
    (default: a one-line comment)."""
    buf = io.BytesIO()
    source = module_src or (lambda obj: f"# placeholder source of {obj.class_name}\n")
    _Writer(buf, protocol=4).dump(_to_writable(top, source))
    path.write_bytes(buf.getvalue())
    return path


def read_tree(path: Path) -> dict:
    """The snapshot's tree of records (a fresh copy each call, safe to edit)."""
    return load_published_pickle(path)[0]


def with_record(obj: PersistentObject, **changes) -> PersistentObject:
    """``obj`` with other fields (``class_name``, ``state``)."""
    return PersistentObject(changes.get("class_name", obj.class_name), changes.get("state", obj.state),
                            obj.src_sha256, obj.version)
