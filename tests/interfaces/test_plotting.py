"""The plot helpers make figures headless (Agg), with the expected panels and data, and show nothing."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from rhvae.evaluation.geometry import geodesic, metric_magnitude  # noqa: E402
from rhvae.interfaces.plotting import (  # noqa: E402
    image_mosaic,
    plot_geodesic,
    plot_image_grid,
    plot_interpolations,
    plot_metric_magnitude,
    plot_metric_orientation,
    plot_metric_panels,
    plot_partitions,
    plot_reconstructions,
)
from rhvae.models.metric import LearnedMetric  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(0)
    codes = torch.cat([torch.randn(10, 2, generator=g) + torch.tensor(c) for c in ([0.0, 0.0], [3.0, 1.0], [1, 3])])
    labels = torch.repeat_interleave(torch.tensor([1, 2, 3]), 10)
    L = torch.randn(30, 2, 2, generator=g).tril()
    metrics = {T: LearnedMetric(codes, L @ L.transpose(1, 2), T, 0.1) for T in (0.6, 0.8, 1.0)}
    return codes, labels, metrics


def _main_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_plot_metric_magnitude_draws_the_heat_map_and_codes(toy, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show must not be called"))
    codes, labels, metrics = toy
    fig = plot_metric_magnitude(metrics[1.0], codes, labels, grid_n=30)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heat map + colour bar
    ax = _main_axes(fig)[0]
    image = ax.images[0].get_array()
    assert image.shape == (30, 30)
    assert len(ax.collections) == 3  # one scatter per class
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["digit 1", "digit 2", "digit 3"]
    # the picture is the metric magnitude, not something else
    x0, x1, y0, y1 = ax.images[0].get_extent()
    assert x0 <= codes[:, 0].min() and x1 >= codes[:, 0].max() and y0 <= codes[:, 1].min()
    corner = metric_magnitude(metrics[1.0], torch.tensor([[x0, y0]]))
    assert image[0, 0] == pytest.approx(corner.item(), rel=1e-5)
    fig.canvas.draw()  # renders headless


def test_plot_into_given_axes_returns_its_figure(toy):
    codes, labels, metrics = toy
    fig, (a, b) = plt.subplots(1, 2)
    assert plot_metric_magnitude(metrics[0.6], codes, labels, ax=a, colorbar=False, grid_n=20) is fig
    assert plot_metric_orientation(metrics[0.6], codes, labels, ax=b, colorbar=False, grid_n=20) is fig
    assert len(fig.axes) == 2


def test_plot_metric_orientation_ellipses(toy):
    codes, labels, metrics = toy
    fig = plot_metric_orientation(metrics[1.0], codes, labels, grid_n=20)
    ax = _main_axes(fig)[0]
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 30  # one per centroid
    # axes ratio of each ellipse is √(e_max / e_min) of G⁻¹ at its centre
    G_inv = metrics[1.0].G_inv(codes)
    e = torch.linalg.eigvalsh(G_inv)
    ratios = np.array([el.width / el.height for el in ellipses])
    assert np.allclose(ratios, (e[:, 1] / e[:, 0]).sqrt().numpy(), rtol=1e-4)
    fig = plot_metric_orientation(metrics[1.0], codes, labels, points="grid", ellipse_grid_n=7, grid_n=20)
    assert len([p for p in _main_axes(fig)[0].patches if isinstance(p, Ellipse)]) == 49
    with pytest.raises(ValueError):
        plot_metric_orientation(metrics[1.0], codes, labels, points="everywhere")


def test_plot_metric_panels_one_column_per_temperature(toy):
    codes, labels, metrics = toy
    fig = plot_metric_panels(metrics, codes, labels, grid_n=20)
    panels = _main_axes(fig)
    assert len(panels) == 6 and len(fig.axes) == 8  # 2 rows x 3 temperatures + one colour bar per row
    assert [ax.get_title() for ax in panels[:3]] == ["T = 0.6", "T = 0.8", "T = 1"]
    # one shared colour scale, and a lower temperature gives a lower peak magnitude here (less overlap)
    limits = {ax.images[0].get_clim() for ax in panels}
    assert len(limits) == 1
    peaks = [ax.images[0].get_array().max() for ax in panels[:3]]
    assert peaks[0] < peaks[2]
    fig.canvas.draw()


def test_image_grid_and_mosaic():
    images = torch.rand(23, 784)
    fig = plot_image_grid(images, n_cols=5, title="samples")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (5 * 29 - 1, 5 * 29 - 1)
    assert np.allclose(mosaic[29:57, 29:57], images[6].reshape(28, 28).numpy())  # row 1, column 1
    assert fig.axes[0].get_title() == "samples"
    # uint8 images are rescaled to [0, 1]
    assert image_mosaic(np.full((2, 784), 255, dtype=np.uint8)).max() == 1.0


def test_plot_reconstructions_rows():
    originals = torch.rand(8, 784)
    fig = plot_reconstructions(originals, {"VAE": originals * 0.5, "RHVAE": originals})
    assert len(fig.axes) == 3
    assert [ax.get_ylabel() for ax in fig.axes] == ["original", "VAE", "RHVAE"]


def test_plot_geodesic(toy):
    codes, labels, metrics = toy
    metric = metrics[1.0]
    result = geodesic(metric, codes[0], codes[15], n_points=12, steps=50)
    decoded = torch.rand(12, 784)
    fig = plot_geodesic(metric, result, decoded, decoded, codes, labels, grid_n=20, n_images=6)
    assert len(fig.axes) == 4  # latent map, its colour bar, two image strips
    ax = _main_axes(fig)[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert np.allclose(lines["geodesic"].get_xydata(), result.path.numpy())
    assert np.allclose(lines["straight line"].get_xydata(), result.line.numpy())
    fig = plot_geodesic(metric, result, codes=codes, labels=labels, grid_n=20)
    assert len(fig.axes) == 2
    fig.canvas.draw()


def test_plot_interpolations_one_labelled_strip_per_path():
    strips = {"VAE line": torch.rand(7, 784), "RHVAE geodesic": torch.rand(7, 784)}
    fig = plot_interpolations(strips, title="a → b")
    assert [ax.get_ylabel() for ax in fig.axes] == list(strips)
    mosaic = fig.axes[1].images[0].get_array()
    assert mosaic.shape == (28, 7 * 29 - 1)
    assert np.allclose(mosaic[:, 29:57], strips["RHVAE geodesic"][1].reshape(28, 28).numpy())
    assert fig._suptitle.get_text() == "a → b"
    with pytest.raises(ValueError, match="strips"):
        plot_interpolations({})


def test_plot_partitions_colours_the_codes_by_each_labelling(toy):
    codes, labels, _ = toy
    clusters = torch.tensor([0, 1] * 15)
    fig = plot_partitions(codes, {"classes": labels, "k-medoids": clusters})
    assert [ax.get_title() for ax in fig.axes] == ["classes", "k-medoids"]
    for ax in fig.axes:
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        assert sorted(map(tuple, points)) == sorted(map(tuple, codes.numpy()))
    with pytest.raises(ValueError, match="panels"):
        plot_partitions(codes, {})
