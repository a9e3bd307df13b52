"""Duplicates among prepared images: exact ones by SHA-1, near ones by a 64-bit dHash.

``prepare`` drops exact duplicates (same SHA-1 of the resized pixels): a face in the training
set twice is seen twice as often, and the same image in train and test inflates scores.
Near duplicates (re-encodings, small crops, tiny edits) are found with a 64-bit difference
hash (dHash: the signs of horizontal gradients of a 9x8 grey thumbnail; Krawetz 2013) and
reported, not dropped, because a large threshold would also match different photographs
of the same person. Two images are near duplicates when their hashes differ in at most
:data:`NEAR_DUPLICATE_BITS` bits. Pairs are found by multi-index hashing (Norouzi et al.
2012): split the hash into ``bits + 1`` blocks; by the pigeonhole principle two hashes
within ``bits`` agree exactly on at least one block, so only images that share a block
value are compared, instead of all n^2 pairs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["NEAR_DUPLICATE_BITS", "dhash", "find_near_duplicates"]

#: Hamming distance (of 64 bits) up to which two dHashes are reported as near duplicates.
#: Measured on 100 synthetic 64-px faces (20 people): re-encoding as JPEG q70 moves the
#: hash by <= 3 bits in 97.5 % of images (0.9 on average), a +10 brightness shift by
#: <= 1; 11 of 4,750 pairs of different people fall within 3 bits (0.23 %), 16 within 4.
#: Faces share a layout, so a larger threshold mostly adds false alarms.
NEAR_DUPLICATE_BITS = 3


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash of an ``uint8 [H, W, 3]`` image (Krawetz 2013).

    A 9x8 grey thumbnail; bit ``8*y + x`` is set when pixel ``x + 1`` of row ``y`` is
    brighter than pixel ``x``. Robust to re-encoding, mild blur and brightness changes.
    """
    grey = Image.fromarray(rgb).convert("L").resize((9, 8), Image.Resampling.BOX)
    px = np.asarray(grey, dtype=np.int16)  # [8, 9]
    bits = (px[:, 1:] > px[:, :-1]).reshape(-1)  # [64]
    return int(np.packbits(bits.astype(np.uint8), bitorder="little").view("<u8")[0])


def find_near_duplicates(hashes: Sequence[int], max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, ``i < j``, whose 64-bit hashes differ in <= ``max_bits`` bits.

    Multi-index hashing: the hash is split into ``max_bits + 1`` blocks and only images
    that agree exactly on some block are compared (pigeonhole), so the cost grows with the
    sizes of the block buckets rather than with n^2. Each pair is reported once, from
    the first block on which it agrees.
    """
    n = len(hashes)
    if n < 2:
        return []
    h = np.asarray([int(x) & 0xFFFFFFFFFFFFFFFF for x in hashes], dtype=np.uint64)  # [n]
    nblocks = max_bits + 1
    edges = [round(64 * k / nblocks) for k in range(nblocks + 1)]
    keys = []
    for k in range(nblocks):
        width = edges[k + 1] - edges[k]
        keys.append((h >> np.uint64(edges[k])) & np.uint64((1 << width) - 1))  # [n]
    pairs: list[tuple[int, int, int]] = []
    for k in range(nblocks):
        order = np.argsort(keys[k], kind="stable")
        sorted_keys = keys[k][order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e - s < 2:
                continue
            members = np.sort(order[s:e])  # [g]
            # Compare in row chunks so a huge bucket cannot allocate g^2 at once.
            for r0 in range(0, len(members), 1024):
                rows = members[r0:r0 + 1024]
                dist = np.bitwise_count(h[rows][:, None] ^ h[members][None, :])  # [r, g]
                ii, jj = np.nonzero(dist <= max_bits)
                for a, b in zip(ii.tolist(), jj.tolist()):
                    i, j = int(rows[a]), int(members[b])
                    if i >= j:
                        continue
                    # Reported from the first block the pair shares, so exactly once.
                    if any(keys[m][i] == keys[m][j] for m in range(k)):
                        continue
                    pairs.append((i, j, int(dist[a, b])))
    pairs.sort()
    return pairs
