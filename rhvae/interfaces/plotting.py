"""Figures of the metric, of images and of geodesics (docs/design.md §2.6), with matplotlib's object API only.

Every function returns a ``matplotlib.figure.Figure``; none calls ``plt.show`` and none closes a figure, so
they work headless (Agg backend, papermill) and in notebooks alike. Functions that draw into a given ``ax``
return that axes' figure. New figures are made with ``pyplot.figure``, so a notebook's inline backend shows
them at the end of the cell (do not also evaluate the figure as the cell's last expression, or it shows
twice); a script that makes many figures should ``fig.savefig(...)`` then ``plt.close(fig)``.

The pictures of the latent plane (the metric's magnitude and ellipses, a geodesic over the map, latent samples,
partitions of codes) need a 2-D latent space and refuse any other in one line before drawing anything
(``require_2d_picture``); the pictures of images (grids, reconstructions, interpolation strips) work at any d.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from rhvae.evaluation.geometry import (
    GeodesicResult,
    LatentGrid,
    ellipse_parameters,
    latent_grid,
    metric_magnitude,
    metric_orientation,
    require_2d_latent,
)
from rhvae.models.metric import LearnedMetric

if TYPE_CHECKING:
    from rhvae.models import RHVAE
    from rhvae.sampling.hmc import Generated

IMAGE_SHAPE = (28, 28)
CLASS_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]  # tab10: digit c is always drawn in CLASS_COLORS[c]


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


#: What to use instead of a latent-space picture at d ≠ 2: the values these pictures draw, at any latent_dim.
_METRIC_VALUES = (
    "rhvae.evaluation.geometry.metric_magnitude and metric_orientation at given points, which work at any latent_dim"
)


def require_2d_picture(function: str, latent_dim: int, owner: str, alternative: str = _METRIC_VALUES) -> None:
    """Refuse, in one line, a picture of a latent space that is not 2-D (the pictures are drawn on the plane
    (z₁, z₂)): "plot_metric_magnitude draws a 2-D latent space: the metric's latent_dim must be 2, got 3 (use
    ...)"."""
    require_2d_latent(latent_dim, f"{function} draws a 2-D latent space", owner, alternative)


def _new_figure(figsize) -> Figure:
    return plt.figure(figsize=figsize, layout="constrained")


def _grid_for(metric: LearnedMetric, codes, grid_n: int, margin: float, grid: LatentGrid | None) -> LatentGrid:
    if grid is not None:
        return grid
    points = metric.centroids if codes is None else torch.as_tensor(codes)
    return latent_grid(points.detach().to(metric.centroids.dtype), n=grid_n, margin=margin)


def _scatter_codes(ax: Axes, codes, labels, size: float = 10.0, legend: bool = True) -> None:
    if codes is None:
        return
    codes = _numpy(codes)
    if labels is None:
        ax.scatter(codes[:, 0], codes[:, 1], s=size, c="white", edgecolors="black", linewidths=0.4, label="codes")
    else:
        labels = _numpy(labels).astype(int)
        for c in np.unique(labels):
            sel = labels == c
            ax.scatter(
                codes[sel, 0],
                codes[sel, 1],
                s=size,
                color=CLASS_COLORS[c % 10],
                edgecolors="black",
                linewidths=0.3,
                label=f"digit {c}",
            )
    if legend:
        ax.legend(loc="upper right", fontsize="small", markerscale=1.5, framealpha=0.8)


def _draw_magnitude(ax: Axes, metric, grid: LatentGrid, norm: Normalize | None, cmap: str):
    values = _numpy(metric_magnitude(metric, grid))
    return ax.imshow(
        values, origin="lower", extent=grid.extent, aspect="auto", cmap=cmap, norm=norm, interpolation="bilinear"
    )


def _metric_panel(metric, codes, labels, ax, grid_n, margin, grid, cmap, norm, colorbar, legend, code_size, title):
    """The heat map of log √det G⁻¹ with the codes, colour bar, labels and limits: the base of the metric plots.
    Returns (figure, axes, grid)."""
    fig = ax.figure if ax is not None else _new_figure((6, 5))
    ax = ax if ax is not None else fig.add_subplot()
    grid = _grid_for(metric, codes, grid_n, margin, grid)
    image = _draw_magnitude(ax, metric, grid, norm, cmap)
    _scatter_codes(ax, codes, labels, size=code_size, legend=legend)
    if colorbar:
        fig.colorbar(image, ax=ax, label=r"$\log\sqrt{\det G^{-1}(z)}$")
    ax.set(xlabel="$z_1$", ylabel="$z_2$", title=title)
    ax.set_xlim(grid.extent[:2])
    ax.set_ylim(grid.extent[2:])
    return fig, ax, grid


def plot_metric_magnitude(
    metric: LearnedMetric,
    codes=None,
    labels=None,
    ax: Axes | None = None,
    grid_n: int = 100,
    margin: float = 0.2,
    grid: LatentGrid | None = None,
    cmap: str = "viridis",
    norm: Normalize | None = None,
    colorbar: bool = True,
    legend: bool = True,
    title: str | None = None,
) -> Figure:
    """Heat map of log √det G⁻¹(z) over a grid around ``codes`` (default: the metric's centroids), with the
    training ``codes`` (N, 2) coloured by class ``labels`` (N,) and a colour bar. 2-D latent spaces only."""
    require_2d_picture("plot_metric_magnitude", metric.dim, "the metric's")
    title = title or f"metric magnitude (T = {metric.temperature:g})"
    fig, _, _ = _metric_panel(
        metric, codes, labels, ax, grid_n, margin, grid, cmap, norm, colorbar, legend, 10.0, title
    )
    return fig


def ellipse_scale(metric: LearnedMetric, points, extent: tuple[float, float, float, float], fraction=0.04) -> float:
    """A scale that makes the largest semi-axis √e_max at ``points`` equal to ``fraction`` of the plot width."""
    eigenvalues, _ = metric_orientation(metric, torch.as_tensor(points).to(metric.centroids.dtype))
    largest = float(eigenvalues[:, -1].max().sqrt())
    return fraction * (extent[1] - extent[0]) / largest


def _ellipse_points(metric: LearnedMetric, points, grid: LatentGrid, ellipse_grid_n: int) -> torch.Tensor:
    if isinstance(points, str):
        if points == "centroids":
            points = metric.centroids
        elif points == "grid":
            box = torch.tensor([[grid.extent[0], grid.extent[2]], [grid.extent[1], grid.extent[3]]])
            points = latent_grid(box, n=ellipse_grid_n, bounds=box).points
        else:
            raise ValueError(f"points must be 'centroids', 'grid' or an (n, 2) array, got {points!r}")
    return torch.as_tensor(points).detach().to(metric.centroids.dtype)


def plot_metric_orientation(
    metric: LearnedMetric,
    codes=None,
    labels=None,
    ax: Axes | None = None,
    points="centroids",
    grid_n: int = 100,
    ellipse_grid_n: int = 12,
    margin: float = 0.2,
    grid: LatentGrid | None = None,
    scale: float | None = None,
    cmap: str = "viridis",
    norm: Normalize | None = None,
    colorbar: bool = True,
    legend: bool = True,
    title: str | None = None,
) -> Figure:
    """Ellipses of G⁻¹ over the magnitude heat map: at each point z an ellipse with semi-axes
    ``scale`` · √eⱼ along the eigenvectors vⱼ of G⁻¹(z).

    ``points`` is ``"centroids"`` (the metric's cᵢ), ``"grid"`` (an ``ellipse_grid_n`` × ``ellipse_grid_n``
    grid of the plotted box) or an (n, 2) array. ``scale`` defaults to ``ellipse_scale`` (largest semi-axis
    = 4 % of the plot width, or 45 % of the grid spacing); pass the same scale to compare panels. 2-D latent
    spaces only.
    """
    require_2d_picture("plot_metric_orientation", metric.dim, "the metric's")
    title = title or f"metric orientation (T = {metric.temperature:g})"
    fig, ax, grid = _metric_panel(
        metric, codes, labels, ax, grid_n, margin, grid, cmap, norm, colorbar, legend, 4.0, title
    )
    grid_mode = isinstance(points, str) and points == "grid"
    points = _ellipse_points(metric, points, grid, ellipse_grid_n)
    eigenvalues, eigenvectors = metric_orientation(metric, points)
    if scale is None:
        fraction = 0.45 / (ellipse_grid_n - 1) if grid_mode else 0.04
        scale = ellipse_scale(metric, points, grid.extent, fraction)
    width, height, angle = (_numpy(v) for v in ellipse_parameters(eigenvalues, eigenvectors, scale))
    pts = _numpy(points)
    for (x, y), w, h, a in zip(pts, width, height, angle, strict=True):
        ax.add_patch(Ellipse((x, y), w, h, angle=a, fill=False, edgecolor="white", linewidth=0.7, alpha=0.9))
    return fig


def plot_metric_panels(
    metrics_by_temperature: Mapping[float, LearnedMetric],
    codes,
    labels=None,
    grid_n: int = 80,
    margin: float = 0.2,
    points="centroids",
    ellipse_grid_n: int = 12,
    panel_size: float = 4.0,
) -> Figure:
    """One column per temperature (e.g. 0.6, 0.8, 1.0): the magnitude heat map (top row) and the ellipses
    of G⁻¹ (bottom row), on the same latent box, with one colour scale and one ellipse scale for all panels
    (so that the panels compare). The figure has 2 × n_T panels and one colour bar per row. 2-D latent spaces
    only."""
    if not metrics_by_temperature:
        raise ValueError("metrics_by_temperature must hold at least one metric")
    temperatures = sorted(metrics_by_temperature)
    metrics = [metrics_by_temperature[t] for t in temperatures]
    for metric in metrics:
        require_2d_picture("plot_metric_panels", metric.dim, "the metric's")
    codes = torch.as_tensor(codes).detach()
    grid = latent_grid(codes.to(metrics[0].centroids.dtype), n=grid_n, margin=margin)
    values = [metric_magnitude(m, grid) for m in metrics]
    norm = Normalize(vmin=min(float(v.min()) for v in values), vmax=max(float(v.max()) for v in values))
    ell_points = [_ellipse_points(m, points, grid, ellipse_grid_n) for m in metrics]
    fraction = 0.45 / (ellipse_grid_n - 1) if isinstance(points, str) and points == "grid" else 0.04
    scale = min(ellipse_scale(m, p, grid.extent, fraction) for m, p in zip(metrics, ell_points, strict=True))
    n = len(metrics)
    fig = _new_figure((panel_size * n + 1.2, 2 * panel_size * 0.9))
    axes = fig.subplots(2, n, squeeze=False, sharex=True, sharey=True)
    for j, (t, m) in enumerate(zip(temperatures, metrics, strict=True)):
        last = j == n - 1
        plot_metric_magnitude(
            m, codes, labels, ax=axes[0, j], grid=grid, norm=norm, colorbar=False, legend=last, title=f"T = {t:g}"
        )
        plot_metric_orientation(
            m,
            codes,
            labels,
            ax=axes[1, j],
            grid=grid,
            points=points,
            ellipse_grid_n=ellipse_grid_n,
            scale=scale,
            norm=norm,
            colorbar=False,
            legend=False,
            title=f"T = {t:g}: ellipses of $G^{{-1}}$",
        )
        if j > 0:
            axes[0, j].set_ylabel("")
            axes[1, j].set_ylabel("")
        axes[0, j].set_xlabel("")
    for row in range(2):
        fig.colorbar(axes[row, -1].images[0], ax=axes[row, :], label=r"$\log\sqrt{\det G^{-1}}$", shrink=0.9)
    return fig


def image_mosaic(images, n_cols: int = 10, image_shape=IMAGE_SHAPE, pad: int = 1, pad_value: float = 0.15):
    """Tile images (n, H·W) into one array (rows·(H+pad)−pad, n_cols·(W+pad)−pad); empty cells are blank."""
    images = _numpy(images).astype(np.float64)
    if images.dtype.kind in "ui" or images.max(initial=0.0) > 1.0:
        images = images / 255.0
    h, w = image_shape
    images = images.reshape(-1, h, w)
    n = len(images)
    n_cols = max(1, min(n_cols, n)) if n else 1
    n_rows = max(1, -(-n // n_cols))
    mosaic = np.full((n_rows * (h + pad) - pad, n_cols * (w + pad) - pad), pad_value)
    for k, image in enumerate(images):
        r, c = divmod(k, n_cols)
        mosaic[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return mosaic


def _show_mosaic(ax: Axes, images, n_cols: int, title: str | None, image_shape=IMAGE_SHAPE) -> None:
    ax.imshow(image_mosaic(images, n_cols, image_shape), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def plot_image_grid(
    images, n_cols: int = 10, title: str | None = None, ax: Axes | None = None, image_shape=IMAGE_SHAPE
) -> Figure:
    """Images (n, 784) (values in [0, 1], or 0–255) as a grid with ``n_cols`` columns, in one axes
    (dark digits on white)."""
    images = _numpy(images)
    n_cols = max(1, min(n_cols, len(images)))
    n_rows = max(1, -(-len(images) // n_cols))
    if ax is None:
        fig = _new_figure((0.6 * n_cols + 0.4, 0.6 * n_rows + (0.5 if title else 0.2)))
        ax = fig.add_subplot()
    _show_mosaic(ax, images, n_cols, title, image_shape)
    return ax.figure


def plot_reconstructions(
    originals, reconstructions_by_model: Mapping[str, object], n: int = 10, image_shape=IMAGE_SHAPE
) -> Figure:
    """The first ``n`` ``originals`` (top row) and each model's reconstructions of them (one row per model,
    labelled with its name): 1 + len(reconstructions_by_model) axes."""
    originals = _numpy(originals)[:n]
    rows = [("original", originals)] + [(name, _numpy(r)[:n]) for name, r in reconstructions_by_model.items()]
    fig = _new_figure((0.6 * len(originals) + 1.5, 0.75 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (name, images) in zip(axes, rows, strict=True):
        _show_mosaic(ax, images, len(originals), None, image_shape)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    return fig


def plot_geodesic(
    metric: LearnedMetric,
    geodesic_result: GeodesicResult,
    decoded_geodesic=None,
    decoded_line=None,
    codes=None,
    labels=None,
    grid_n: int = 100,
    margin: float = 0.2,
    n_images: int = 10,
    title: str | None = None,
) -> Figure:
    """The geodesic and the straight line over the magnitude heat map (with their Riemannian lengths), and,
    below, the decoded images along each (``decoded_geodesic`` / ``decoded_line``: (n, 784), e.g.
    ``model.decode(result.path.float())``), ``n_images`` equally spaced ones per row.

    Axes: the latent map, its colour bar, and one row per given decoded sequence. 2-D latent spaces only (at
    another d, ``plot_interpolations`` draws the decoded frames and the lengths are the result's).
    """
    require_2d_picture(
        "plot_geodesic",
        metric.dim,
        "the metric's",
        "plot_interpolations for the decoded frames; the GeodesicResult holds the lengths at any latent_dim",
    )
    strips = [
        (f"geodesic (L = {geodesic_result.length:.3g})", decoded_geodesic),
        (f"straight line (L = {geodesic_result.line_length:.3g})", decoded_line),
    ]
    strips = [(name, images) for name, images in strips if images is not None]
    fig = _new_figure((max(6.0, 0.6 * n_images + 1.5), 5.0 + 0.9 * len(strips)))
    axes = fig.subplots(1 + len(strips), 1, squeeze=False, height_ratios=[5.0] + [0.9] * len(strips))[:, 0]
    ax = axes[0]
    path, line = _numpy(geodesic_result.path), _numpy(geodesic_result.line)
    box_points = torch.as_tensor(np.concatenate([path, line] + ([_numpy(codes)] if codes is not None else [])))
    grid = latent_grid(box_points.to(metric.centroids.dtype), n=grid_n, margin=margin)
    image = _draw_magnitude(ax, metric, grid, None, "viridis")
    _scatter_codes(ax, codes, labels, size=6.0, legend=False)
    ax.plot(line[:, 0], line[:, 1], "--", color="white", linewidth=1.5, label="straight line")
    ax.plot(path[:, 0], path[:, 1], "-o", color="red", markersize=2.5, linewidth=1.5, label="geodesic")
    ax.plot(*path[[0, -1]].T, "s", color="red", markersize=6)
    ax.legend(loc="upper right", fontsize="small")
    fig.colorbar(image, ax=ax, label=r"$\log\sqrt{\det G^{-1}(z)}$")
    ax.set(
        xlabel="$z_1$",
        ylabel="$z_2$",
        title=title
        or f"geodesic L = {geodesic_result.length:.3g} vs straight line L = {geodesic_result.line_length:.3g}",
    )
    for strip_ax, (name, images) in zip(axes[1:], strips, strict=True):
        images = _numpy(images)
        picks = np.unique(np.linspace(0, len(images) - 1, min(n_images, len(images))).round().astype(int))
        _show_mosaic(strip_ax, images[picks], len(picks), name)
    return fig


__all__ = [
    "CLASS_COLORS",
    "ellipse_scale",
    "image_mosaic",
    "plot_geodesic",
    "plot_image_grid",
    "plot_interpolations",
    "plot_latent_samples",
    "plot_metric_magnitude",
    "plot_metric_models",
    "plot_metric_orientation",
    "plot_metric_panels",
    "plot_partitions",
    "plot_reconstructions",
    "plot_samples",
    "require_2d_picture",
]


# ------------------------------------------------------------------------------------ experiment figures
def plot_samples(generated: Mapping[str, Generated], n_cols: int = 10, scores: Mapping[str, dict] | None = None):
    """One panel of generated digits per model, titled with its sampler (and quality score if given)."""
    n = max(len(g.images) for g in generated.values())
    n_rows = -(-n // n_cols)
    fig = _new_figure((0.5 * n_cols * len(generated) + 0.5, 0.5 * n_rows + 1.0))
    axes = fig.subplots(1, len(generated), squeeze=False)[0]
    for ax, (name, gen) in zip(axes, generated.items(), strict=True):
        how = "prior" if gen.info["sampler"] == "prior" else f"{gen.info['mcmc_steps']} MCMC steps"
        title = f"{name} ({how})"
        if scores and name in scores:
            title += f"\nin-class {scores[name]['in_class_fraction']:.2f}, conf. {scores[name]['mean_confidence']:.2f}"
        plot_image_grid(gen.images, n_cols=n_cols, title=title, ax=ax)
    return fig


def plot_metric_models(models: Mapping[str, RHVAE], labels=None, grid_n: int = 80, panel_size: float = 4.0):
    """One column per trained RHVAE (e.g. one per training temperature), each in its own latent space: the
    magnitude of its frozen metric with its training codes (top) and the ellipses of G⁻¹ at the codes
    (bottom). Unlike ``plotting.plot_metric_panels`` (one latent space, several T), every model has its own
    codes, so every column has its own box and colour scale. 2-D latent spaces only."""
    for model in models.values():
        require_2d_picture("plot_metric_models", model.latent_dim, "the model's")
    n = len(models)
    fig = _new_figure((panel_size * n + 1.5, 2 * panel_size * 0.9))
    axes = fig.subplots(2, n, squeeze=False)
    for j, (name, model) in enumerate(models.items()):
        metric = model.metric()
        codes = model.centroids
        plot_metric_magnitude(metric, codes, labels, ax=axes[0, j], grid_n=grid_n, legend=j == n - 1, title=name)
        plot_metric_orientation(
            metric, codes, labels, ax=axes[1, j], grid_n=grid_n, legend=False, title=f"{name}: ellipses of $G^{{-1}}$"
        )
    return fig


def plot_latent_samples(model: RHVAE, labels, generated: Generated, grid_n: int = 80, title: str | None = None):
    """The latent space of a trained RHVAE: the magnitude of its metric, its training codes coloured by class
    and the generated codes (red crosses). 2-D latent spaces only."""
    require_2d_picture(
        "plot_latent_samples",
        model.latent_dim,
        "the model's",
        "plot_image_grid(generated.images) for the samples, or project the codes to 2-D and draw them with "
        "plot_partitions",
    )
    codes = torch.cat([model.centroids, generated.z.to(model.centroids.dtype)])
    grid = latent_grid(codes, n=grid_n)
    fig = plot_metric_magnitude(model.metric(), model.centroids, labels, grid=grid, title=title)
    ax = fig.axes[0]
    z = generated.z.detach().numpy()
    ax.scatter(z[:, 0], z[:, 1], marker="x", s=14, color="red", linewidths=0.8, label="generated")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def plot_images_per_class(sets: Mapping[str, tuple], per_class: int = 6):
    """One panel per image set (``sets``: title → (images, labels)), one row per class with its first
    ``per_class`` images: real and generated digits of every class side by side."""
    fig = _new_figure((0.5 * per_class * len(sets) + 0.5, 0.5 * 10 + 1.0))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (title, (images, labels)) in zip(axes, sets.items(), strict=True):
        images, labels = _numpy(images), _numpy(labels)
        rows = []
        for c in np.unique(labels):
            chosen = images[labels == c][:per_class]
            blank = np.zeros((per_class - len(chosen), chosen.shape[1]), dtype=chosen.dtype)
            rows.append(np.concatenate([chosen, blank]))
        _show_mosaic(ax, np.concatenate(rows), per_class, title)
    return fig


def plot_interpolations(strips: Mapping[str, object], title: str | None = None, image_shape=IMAGE_SHAPE) -> Figure:
    """One row of decoded frames per path (``strips``: label → (n, 784) frames, e.g.
    ``rhvae.experiments.interpolation.decoded_paths``), labelled on the left: interpolations side by side."""
    rows = [(label, _numpy(frames)) for label, frames in strips.items()]
    if not rows:
        raise ValueError("strips must hold at least one path")
    n = max(len(frames) for _, frames in rows)
    fig = _new_figure((0.5 * n + 2.2, 0.6 * len(rows) + (0.5 if title else 0.2)))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, frames) in zip(axes, rows, strict=True):
        _show_mosaic(ax, frames, n, None, image_shape)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_partitions(codes, panels: Mapping[str, object], panel_size: float = 3.6) -> Figure:
    """The latent ``codes`` (n, 2) once per panel (``panels``: title → n labels), coloured by those labels: the
    classes beside the clusters that k-medoids found (``rhvae.experiments.clustering``). 2-D codes only: project
    codes of another latent dimension to 2-D first."""
    if not panels:
        raise ValueError("panels must hold at least one labelling")
    shape = _numpy(codes).shape
    if len(shape) != 2:
        raise ValueError(f"codes must be (n, 2), got shape {shape}")
    require_2d_picture(
        "plot_partitions",
        shape[1],
        "the codes'",
        "codes projected to 2-D first, e.g. their first two principal components",
    )
    fig = _new_figure((panel_size * len(panels) + 0.4, panel_size + 0.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, labels) in zip(axes, panels.items(), strict=True):
        _scatter_codes(ax, codes, labels, size=8.0, legend=False)
        ax.set(title=title, xlabel="$z_1$", ylabel="$z_2$")
    return fig


def plot_over_dimensions(summary: Mapping[str, Mapping], subsets) -> Figure:
    """The latent_dimension experiment's rankings over d (``rhvae.experiments.latent_dimension.tables``): per subset
    (rows), the test log p(x) of each model (exact at d = 2, AIS above) and the classifier FID of each model and
    sampler, mean ± std over seeds against the latent dimension."""
    subsets = list(subsets)
    fig = _new_figure((11.0, 3.6 * len(subsets)))
    axes = fig.subplots(len(subsets), 2, squeeze=False)
    panels = (
        ("likelihood", "log_px", "test log p(x) (nats): exact at d = 2, AIS above"),
        ("samples", "fid_classifier", "classifier FID of the samples ↓"),
    )
    for row, subset in enumerate(subsets):
        for col, (part, key, title) in enumerate(panels):
            ax = axes[row][col]
            series: dict[str, list[tuple[int, float, float]]] = {}
            for label, numbers in summary[part].items():
                owner, dim, name = (s.strip() for s in label.split("·"))
                if owner != subset or key not in numbers:
                    continue
                stat = numbers[key]
                series.setdefault(name, []).append((int(dim.removeprefix("d=")), stat["mean"], stat["std"] or 0.0))
            for name, points in sorted(series.items()):
                points.sort()
                dims, means, stds = (np.array(v, dtype=float) for v in zip(*points, strict=True))
                ax.errorbar(dims, means, yerr=stds, marker="o", capsize=3, label=name)
            ax.set_xscale("log", base=2)
            dims_shown = sorted({d for points in series.values() for d, _, _ in points})
            ax.set_xticks(dims_shown, [str(d) for d in dims_shown])
            ax.set_xlabel("latent dimension d")
            ax.set_title(f"{subset}: {title}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
