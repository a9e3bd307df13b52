"""The metrics' extractors (gan/extractors.py): names, weights files read and hashed once per
process, extractors built once and through the one loader table, the stub's fidelity."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from gan import extractors as E
from gan.util import MissingWeights, UserError
from tests._weights import FEATURE_DIMS, load_stub, make_stub_weights, use_stub_extractors


def test_training_metrics_are_parsed_and_bad_names_rejected():
    assert E.parse_training_metrics(["fid10k", "KID5k", "fid50k_full", "fid48"]) == [
        ("fid10k", "fid", 10000), ("kid5k", "kid", 5000), ("fid50k_full", "fid", 50000), ("fid48", "fid", 48)]
    for bad in ("is10k", "fid", "fid1", "fidk"):
        with pytest.raises(UserError, match="fid<N>k"):
            E.parse_training_metrics([bad])


def test_weights_hash_is_read_once_per_path_size_and_mtime(tmp_path):
    p = tmp_path / "weights.pth"
    p.write_bytes(b"a" * 1000)
    first = E.sha256_file(p)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    st = p.stat()
    p.write_bytes(b"b" * 1000)  # same size; the mtime is put back: the file is not read again
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert E.sha256_file(p) == first
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewritten file is read again
    assert E.sha256_file(p) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_extractor_is_built_once_per_file_device_and_feature_list(tmp_path, monkeypatch):
    import torch_fidelity.utils as tfu

    calls = []

    def build(name, features, **kw):
        calls.append((name, tuple(features), kw["feature_extractor_weights_path"]))
        return torch.nn.Identity()

    monkeypatch.setattr(tfu, "create_feature_extractor", build)
    p = tmp_path / E.INCEPTION_FILE
    p.write_bytes(b"weights")
    a, b = E.load_inception(p), E.load_inception(str(p), "cpu")
    assert a is b and calls == [("inception-v3-compat", (E.POOL,), str(p.resolve()))]
    E.load_inception(p, features=(E.POOL, E.LOGITS))
    assert len(calls) == 2
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    E.load_inception(p)
    assert len(calls) == 3


def test_load_extractors_builds_what_the_metrics_need_through_the_loader_table(tmp_path, monkeypatch):
    stub = make_stub_weights(tmp_path / "stub.pt")
    use_stub_extractors(monkeypatch)
    ex = E.load_extractors(("fid", "is"), "cpu", stub)
    assert ex.inception.features_list == [E.POOL, E.LOGITS] and ex.want_is
    assert ex.vgg is None and ex.vgg_sha is None and ex.inception_sha == E.sha256_file(stub)
    assert E.load_extractors(("kid",), "cpu", stub).inception.features_list == [E.POOL]
    with pytest.raises(UserError, match="choose from fid, kid, is, pr"):
        E.load_extractors(("fid", "fidd"), "cpu", stub)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(MissingWeights, match=E.VGG_FILE):  # resolved before anything is built
        E.load_extractors(("fid", "pr"), "cpu", stub)


@pytest.mark.slow
def test_stub_extractor_has_the_real_extractors_interface(inception_weights, tmp_path):
    feats = (E.POOL, E.LOGITS)
    real = E.load_inception(inception_weights, features=feats)
    stub = load_stub(make_stub_weights(tmp_path / "stub.pt"), features=feats)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert list(real.features_list) == list(stub.features_list)
    assert [tuple(t.shape) for t in real(x)] == [(2, 2048), (2, 1008)]
    assert [tuple(t.shape) for t in stub(x)] == [(2, FEATURE_DIMS[E.POOL]), (2, 1008)]  # a narrower pool
    assert all(t.dtype == torch.float32 for t in (*real(x), *stub(x)))


def test_weights_sha256_is_remembered_on_disk_per_path_size_and_mtime(tmp_path, monkeypatch):
    """A second process (the in-process memo cleared) reads the SHA-256 from
    $MTF_CACHE_DIR/weights-sha256.json instead of hashing the file again; a touched file
    (new mtime) is hashed again; a damaged memo is only a re-hash."""
    import json

    monkeypatch.setenv("MTF_CACHE_DIR", str(tmp_path / "mtf-cache"))
    hashed = []
    orig = E._hash_file
    monkeypatch.setattr(E, "_hash_file", lambda path: hashed.append(path) or orig(path))
    p = tmp_path / "weights.pth"
    p.write_bytes(b"w" * 4096)
    want = hashlib.sha256(b"w" * 4096).hexdigest()
    E._sha256_of.cache_clear()
    assert E.sha256_file(p) == want and len(hashed) == 1
    memo = tmp_path / "mtf-cache" / E.SHA256_MEMO
    entry = json.loads(memo.read_text())[str(p.resolve())]
    assert entry == {"size": 4096, "mtime_ns": p.stat().st_mtime_ns, "sha256": want}
    assert [f.name for f in memo.parent.iterdir()] == [memo.name]  # written atomically: no temporary left
    E._sha256_of.cache_clear()  # as a new process
    assert E.sha256_file(p) == want and len(hashed) == 1
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    E._sha256_of.cache_clear()
    assert E.sha256_file(p) == want and len(hashed) == 2
    memo.write_text("{not json")
    E._sha256_of.cache_clear()
    assert E.sha256_file(p) == want and len(hashed) == 3 and str(p.resolve()) in json.loads(memo.read_text())
    E._sha256_of.cache_clear()
