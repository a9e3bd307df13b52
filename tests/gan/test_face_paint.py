"""The face painter: a pure function of appearance, resolution and generator state, whose
painters only touch the pixels of their own shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gan.face_paint import FaceParams, paint_face


def _params(**changes) -> FaceParams:
    """A middle-of-the-road person (the means :mod:`gan.synthetic` draws around)."""
    base = FaceParams(
        skin=(0.78, 0.58, 0.44), hair=(0.2, 0.13, 0.08), iris=(0.35, 0.2, 0.09),
        head_rx=0.46, head_ry=0.61, jaw=0.8, chin=1.6, eye_dx=0.175, eye_y=-0.04, eye_rx=0.085,
        eye_ry=0.042, eye_tilt=0.0, lid=1.2, brow_thick=0.024, brow_arch=1.2, brow_gap=0.075,
        nose_w=0.055, nose_len=0.2, mouth_w=0.13, lip_u=0.022, lip_l=0.03,
        lip_colour=(0.7, 0.45, 0.36), ear_r=0.075, hair_len=1, hair_curly=0.1, hairline=-0.36,
        bangs=0.0, part=0.0, grey=0.0, wrinkles=0.0, sag=0.0, beard=0.0, earrings=False, neck_w=0.18,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("res", [16, 64, 129])
def test_paint_face_is_a_pure_function_of_params_resolution_and_generator_state(res):
    a = paint_face(_params(), res, np.random.default_rng(5))
    b = paint_face(_params(), res, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == (res, res, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, paint_face(_params(), res, np.random.default_rng(6)))


def test_paint_face_draws_a_fixed_amount_from_its_generator_whatever_the_person():
    # Only the clothing, background, pose, light, noise and earring metal are drawn, so
    # the shape of a person changes no other photo's draws.
    ends = []
    for params in (_params(), _params(beard=0.8, wrinkles=0.9, sag=0.7, grey=0.6), _params(hair_len=2)):
        rng = np.random.default_rng(11)
        paint_face(params, 32, rng)
        ends.append(rng.bit_generator.state)
    assert ends[0] == ends[1] == ends[2]


@pytest.mark.parametrize("change", [{"beard": 0.8}, {"sag": 0.7}, {"lip_u": 0.035, "lip_l": 0.045}])
def test_painters_below_the_eyes_leave_the_top_of_the_photo_untouched(change):
    plain = paint_face(_params(), 96, np.random.default_rng(3)).astype(int)
    changed = paint_face(_params(**change), 96, np.random.default_rng(3)).astype(int)
    top = slice(0, int(96 * 0.4))  # canvas y < -0.2: above the eyes whatever the pose
    assert np.array_equal(plain[top], changed[top])
    assert np.abs(plain - changed).sum() > 0
