"""Quality metrics: KID's estimator on synthetic features, the reference-feature cache, and eval's scores."""

import numpy as np
import pytest
import torch

from sr3infer.quality import metrics
from sr3infer.train.evaluate import score_images


def _features(n: int, d: int = 64, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def test_kid_of_a_set_with_itself_is_about_zero():
    a = _features(50)
    assert abs(metrics.kernel_inception_distance(a, a.clone())) < 0.05 * metrics.kernel_inception_distance(a, a + 1)


def test_kid_grows_with_the_shift_between_sets():
    a = _features(60, seed=1)
    values = [metrics.kernel_inception_distance(a, _features(60, shift=s, seed=2)) for s in (0.0, 0.3, 1.0)]
    assert values[0] < values[1] < values[2]
    assert values[1] > 0


def test_kid_is_unbiased_on_small_sets():
    # Two independent draws from one distribution: the unbiased MMD^2 averages to 0 even with 8 samples per set,
    # where the biased (V-statistic) estimate is clearly positive.
    unbiased, biased = [], []
    for trial in range(300):
        a, b = _features(8, d=16, seed=2 * trial), _features(8, d=16, seed=2 * trial + 1)
        unbiased.append(metrics.kernel_inception_distance(a, b))
        k = lambda x, y: (x @ y.T / 16 + 1) ** 3  # noqa: E731
        biased.append(float(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()))
    u = np.array(unbiased)
    assert abs(u.mean()) < 5 * u.std() / np.sqrt(len(u))
    assert np.mean(biased) > 10 * u.std() / np.sqrt(len(u))


def test_kid_needs_two_images_per_set():
    with pytest.raises(ValueError, match="at least 2 images"):
        metrics.kernel_inception_distance(_features(1), _features(5))


def test_score_images_without_reference_has_no_perceptual_metrics():
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    lowres = torch.rand(2, 3, 8, 8) * 2 - 1
    scores = score_images(hr, hr, lowres)
    assert set(scores) == {"psnr", "ssim", "consistency_1e5"}
    assert scores["ssim"] == pytest.approx(1.0)


def test_reference_features_are_cached_and_keyed_by_file_contents(tmp_path, monkeypatch):
    from PIL import Image

    from sr3infer.train import evaluate

    face_folder = tmp_path / "faces"
    face_folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(face_folder / f"{i:06d}.png")

    calls = []

    def fake_features(images):  # the Inception network is optional; the cache logic is ours
        calls.append(len(images))
        return images.flatten(1)[:, :8].double()

    monkeypatch.setenv("SR3INFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(metrics, "inception_features", fake_features)
    first = evaluate.reference_features([face_folder], "faces", 32)
    again = evaluate.reference_features([face_folder], "faces", 32)
    assert len(calls) == 1 and torch.equal(first, again)
    victim = sorted(p for p in face_folder.iterdir() if p.suffix == ".png")[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # same pixels, different file: recomputed
    evaluate.reference_features([face_folder], "faces", 32)
    assert len(calls) == 2
