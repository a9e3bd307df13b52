"""A stand-in generator whose latent space holds known attribute axes.

The demo GAN (32 px, a few kimg on a CPU) is too weak to judge attribute tools: on it CAS,
class-centre truncation and edit monotonicity change sign from one seed to the next. This
module has the :class:`gan.networks.Generator` interface (``mapping`` z, c -> ws with a
tracked ``w_avg`` and truncation; ``synthesis`` ws -> images in [-1, 1]) and draws its faces
with the synthetic renderer of :mod:`gan.synthetic`, from attributes read off ``w``:

* ``w[0]``, **gender**: the class (``c``, classes ``Female``, ``Male``) puts it at -2 or +2, plus
  ``0.5 z[0]``; the face is male where ``w[0] > 0``.
* ``w[1]``, **age**: ``z[1] + 0.5``; the face is ``Old`` where ``w[1] > 0`` (69% of draws).
* ``w[2]``, **race**: ``z[2]`` cut at its quartiles into the four MTF races, then the nearest
  race (in MTF's class order) among the people of that gender and age (below).
* ``w[3:]``: the photo (pose, light, ...), hashed from ``w`` rounded to 0.1.

The faces are new photos of the people of the shared curated test set (``synthetic_curated``:
``make_people(CURATED_PEOPLE, CURATED_SEED)``), the one of the drawn gender and age whose race
is nearest: the fixture classifiers know these people, so their labels of the stand-in's faces
are good enough to judge the tools (on new people the tiny classifiers reach 61% for gender,
and their errors, not the tools, would decide the tests). Race is therefore tied to gender and
age in the stand-in (the set has, e.g., no old White person); no test uses a race direction.

``w_avg`` is the mean ``w`` under a label mix of 75% ``Male`` (:data:`MALE_SHARE`), as a GAN
trained on such data would track it: global truncation towards it turns women into men
(``w[0]`` crosses 0 for psi < 1/3) and everyone old (``w[1] -> 0.5``), while truncation
towards a class's own mean keeps the class. So the right answers are known:
``TRUE_AXES`` are the attribute directions, and the shifts under truncation follow.
"""

from __future__ import annotations

import hashlib
import math
from typing import Optional

import numpy as np
import torch

from gan.synthetic import AGES, GENDERS, RACES, make_people, render_face
from tests._settings import CURATED_PEOPLE, CURATED_SEED

W_DIM = 8
NUM_WS = 4
RESOLUTION = 32
MALE_SHARE = 0.75
GENDER_OFFSET = 2.0
AGE_OFFSET = 0.5
#: Unit attribute directions in W, pointing from the task's first class to its second
#: (``Female -> Male``, ``Old -> Young``).
TRUE_AXES = {"gender": torch.eye(W_DIM)[0], "age": -torch.eye(W_DIM)[1]}
_RACE_CUTS = (-0.6745, 0.0, 0.6745)  # quartiles of N(0, 1)


class StandInMapping(torch.nn.Module):
    """z ``[N, W_DIM]``, c ``[N, 2]`` one-hot -> ws ``[N, NUM_WS, W_DIM]`` (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = W_DIM, 2, W_DIM, NUM_WS
        w_avg = torch.zeros(W_DIM)
        w_avg[0] = GENDER_OFFSET * (2 * MALE_SHARE - 1)  # 1.0: the mean under 75% men
        w_avg[1] = AGE_OFFSET
        self.register_buffer("w_avg", w_avg)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_w_avg: bool = False) -> torch.Tensor:
        z = z.to(torch.float32)
        w = z.clone()  # [N, W_DIM]
        male = c[:, 1] > 0.5 if c is not None and c.shape[1] == 2 else torch.rand(len(z)) < MALE_SHARE
        w[:, 0] = torch.where(male, GENDER_OFFSET, -GENDER_OFFSET) + 0.5 * z[:, 0]
        w[:, 1] = z[:, 1] + AGE_OFFSET
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)  # [N, NUM_WS, W_DIM]
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([self.w_avg.lerp(ws[:, :cut], truncation_psi), ws[:, cut:]], dim=1)
        return ws


_PEOPLE = make_people(CURATED_PEOPLE, CURATED_SEED)


def people_of(w: torch.Tensor) -> list:
    """The person drawn for each row of ``w`` ``[N, W_DIM]``: of the drawn gender and age, the
    nearest race to ``w[2]``'s quartile (ties by name)."""
    w = w.detach().cpu()
    race_idx = np.searchsorted(np.asarray(_RACE_CUTS), w[:, 2].numpy())
    out = []
    for g, a, r in zip(w[:, 0].tolist(), w[:, 1].tolist(), race_idx.tolist()):
        gender, age = GENDERS[int(g > 0)], (AGES[0] if a > 0 else AGES[1])
        same = [p for p in _PEOPLE if p.gender == gender and p.age == age]
        out.append(min(same, key=lambda p: (abs(RACES.index(p.race) - int(r)), p.name)))
    return out


def attributes_of(w: torch.Tensor) -> dict[str, list[str]]:
    """The attribute classes the stand-in draws for ``w`` ``[N, W_DIM]``: the ground truth."""
    people = people_of(w)
    return {"gender": [p.gender for p in people], "age": [p.age for p in people], "race": [p.race for p in people]}


class StandInSynthesis(torch.nn.Module):
    """ws ``[N, NUM_WS, W_DIM]`` -> ``[N, 3, RESOLUTION, RESOLUTION]`` in [-1, 1], rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.w_dim, self.num_ws, self.img_resolution, self.img_channels = W_DIM, NUM_WS, RESOLUTION, 3

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", **_ignored) -> torch.Tensor:
        w = ws[:, 0].detach().cpu()  # [N, W_DIM]
        out = []
        for i, person in enumerate(people_of(w)):
            key = hashlib.sha256(np.round(w[i, 3:].numpy(), 1).tobytes()).digest()
            img = render_face(person, RESOLUTION, int.from_bytes(key[4:10], "little"))  # [R, R, 3] uint8
            out.append(torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
        return torch.stack(out).to(ws.device)


class StandInGenerator(torch.nn.Module):
    """The :class:`gan.networks.Generator` interface over :class:`StandInMapping` and
    :class:`StandInSynthesis`; conditional on gender (``class_names`` Female, Male)."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = W_DIM, 2, W_DIM
        self.img_resolution, self.img_channels, self.num_ws = RESOLUTION, 3, NUM_WS
        self.mapping = StandInMapping()
        self.synthesis = StandInSynthesis()
        self.class_names = list(GENDERS)
        self.cur_nimg = 0

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, noise_mode: str = "const", **_ignored) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm() + 1e-12))


def old_share_under_global_truncation(psi: float) -> float:
    """P(Old) for the stand-in at truncation ``psi`` towards ``w_avg``: w1 = 0.5 + psi z1 > 0."""
    return 0.5 * (1 + math.erf((AGE_OFFSET / max(psi, 1e-9)) / math.sqrt(2)))
