"""``gan.duplicates``: the dHash and the multi-index search for near duplicates."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gan.duplicates import NEAR_DUPLICATE_BITS, dhash, find_near_duplicates


def smooth(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random ``uint8 [h, w, 3]`` image: a 5x5 random grid upsampled bicubically."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


def test_find_near_duplicates_matches_brute_force():
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, 3000, dtype=np.int64)]
    for k in range(40):  # plant pairs 0..5 bits apart
        flips = rng.choice(64, size=k % 6, replace=False)
        hashes.append(hashes[k] ^ sum(1 << int(b) for b in flips))
    h = np.array(hashes, dtype=np.uint64)
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= 3, 1))
    assert find_near_duplicates(hashes, 3) == [(int(a), int(b), int(d[a, b])) for a, b in zip(i, j)]
    assert len(i) >= 26  # the planted pairs within 3 bits are found


def test_dhash_is_stable_under_reencoding_and_differs_between_images():
    a = smooth(1, 128, 128)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=80)
    b = np.asarray(Image.open(buf))
    assert bin(dhash(a) ^ dhash(b)).count("1") <= NEAR_DUPLICATE_BITS
    assert bin(dhash(a) ^ dhash(smooth(2, 128, 128))).count("1") > 10
