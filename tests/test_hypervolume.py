"""The normalised hypervolume: reference from the dense model, Optuna's exact volume against hand-computed
boxes and a Monte Carlo estimate, exclusive contributions, and the JSON round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from study.search.hypervolume import (
    Point,
    ReferencePoint,
    as_point,
    hypervolume,
    hypervolume_contributions,
)

DENSE = {"psnr": 25.0, "train_time": 20.0, "size_mb": 2.0}
REF = ReferencePoint.from_dense(**DENSE)  # psnr 15..35 dB, time 0..22 s, size 0..2.2 MB


def point(psnr_loss: float, time_loss: float, size_loss: float) -> Point:
    """The point whose normalised losses are the given ones (0 ideal, 1 reference)."""
    return (35.0 - 20.0 * psnr_loss, 22.0 * time_loss, 2.2 * size_loss)


def test_reference_follows_the_dense_model_and_its_margins() -> None:
    assert ReferencePoint(psnr=15.0, train_time=22.0, size_mb=2.2, ideal_psnr=35.0) == REF
    wide = ReferencePoint.from_dense(**DENSE, psnr_margin_db=5.0, cost_margin=0.5)
    assert (wide.psnr, wide.ideal_psnr, wide.train_time, wide.size_mb) == (20.0, 30.0, 30.0, 3.0)


def test_reference_round_trips_through_json() -> None:
    assert ReferencePoint.from_dict(json.loads(json.dumps(REF.to_dict()))) == REF


def test_a_reference_no_worse_than_its_ideal_is_refused() -> None:
    with pytest.raises(ValueError):
        ReferencePoint(psnr=30.0, train_time=1.0, size_mb=1.0, ideal_psnr=25.0)


def test_anchor_values_of_the_normalisation() -> None:
    assert hypervolume([(35.0, 0.0, 0.0)], REF) == pytest.approx(1.0)
    assert hypervolume([(25.0, 0.0, 0.0)], REF) == pytest.approx(0.5)  # dense quality at zero cost
    dense = hypervolume([as_point(DENSE)], REF)
    assert dense == pytest.approx(0.5 * (1 - 1 / 1.1) ** 2)


def test_values_beyond_the_ideal_are_clipped() -> None:
    assert hypervolume([(50.0, -3.0, 0.0)], REF) == pytest.approx(1.0)


def test_points_not_strictly_inside_the_reference_count_nothing() -> None:
    assert hypervolume([], REF) == 0.0
    assert hypervolume([(15.0, 1.0, 0.1)], REF) == 0.0  # psnr exactly at the reference
    assert hypervolume([(30.0, 23.0, 0.1)], REF) == 0.0  # slower than the reference
    inside = point(0.5, 0.5, 0.5)
    assert hypervolume([inside, (30.0, 1.0, 5.0), (float("nan"), 1.0, 1.0)], REF) == pytest.approx(0.125)


@pytest.mark.parametrize(
    ("losses", "volume"),
    [
        ([(0.5, 0.5, 0.5)], 0.125),
        # two boxes: 0.5 + 0.25 - overlap 0.125
        ([(0.0, 0.5, 0.5), (0.5, 0.0, 0.0)], 0.25 + 0.5 - 0.125),
        # three corner slabs: inclusion-exclusion
        (
            [(0.2, 0.6, 0.6), (0.6, 0.2, 0.6), (0.6, 0.6, 0.2)],
            3 * 0.8 * 0.4 * 0.4 - 3 * 0.4 * 0.4 * 0.4 + 0.4**3,
        ),
        # a dominated box adds nothing
        ([(0.5, 0.5, 0.5), (0.6, 0.7, 0.5)], 0.125),
    ],
)
def test_hand_computed_boxes(losses: list[tuple[float, float, float]], volume: float) -> None:
    assert hypervolume([point(*loss) for loss in losses], REF) == pytest.approx(volume)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_monte_carlo_estimate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 15))
    # raw units, some points outside the reference and beyond the ideal
    points = [
        (float(rng.uniform(12, 37)), float(rng.uniform(0, 24)), float(rng.uniform(0, 2.4))) for _ in range(n)
    ]
    losses = np.minimum(REF.losses(points), 2.0)
    samples = rng.random((200_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for loss in losses[np.all(losses < 1, axis=1)]:
        covered |= np.all(samples >= loss, axis=1)
    estimate = covered.mean()
    stderr = math.sqrt(max(estimate * (1 - estimate), 1e-12) / len(samples))
    assert abs(hypervolume(points, REF) - estimate) < 5 * stderr + 1e-9


def test_contributions_are_exclusive_volumes() -> None:
    a, b, dominated, outside = (
        point(0.0, 0.5, 0.5),
        point(0.5, 0.0, 0.0),
        point(0.6, 0.6, 0.6),
        (14.0, 1.0, 1.0),
    )
    contributions = hypervolume_contributions([a, b, dominated, outside, b], REF)
    # a alone beyond b: 0.25 - overlap 0.125; b (twice) adds nothing the other copy lacks
    assert contributions == pytest.approx([0.125, 0.0, 0.0, 0.0, 0.0])
    assert hypervolume_contributions([a, b], REF) == pytest.approx([0.125, 0.375])


def test_contributions_match_leave_one_out_on_random_points() -> None:
    rng = np.random.default_rng(7)
    points = [point(*rng.random(3).tolist()) for _ in range(12)]
    total = hypervolume(points, REF)
    expected = [total - hypervolume(points[:i] + points[i + 1 :], REF) for i in range(len(points))]
    assert hypervolume_contributions(points, REF) == pytest.approx(expected, abs=1e-12)
