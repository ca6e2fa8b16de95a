r"""Latent geometry of a learned metric: grids, magnitude, orientation and geodesics (docs/design.md §2.1, §2.6).

For the metric G⁻¹(z) = Σᵢ Mᵢ exp(−‖z − cᵢ‖²/T²) + λ I of an RHVAE (``LearnedMetric``):

* **magnitude**: log √det G⁻¹(z) = ½ log det G⁻¹(z), high near the training codes (where the learned Mᵢ add
  up) and tending to (d/2) log λ far from them. It is the log of the sampler's unnormalised target.
* **orientation**: the eigen-decomposition G⁻¹(z) = V diag(e) Vᵀ. An ellipse with semi-axes ∝ √eⱼ along the
  columns vⱼ of V is the unit ball {v : vᵀ G(z) v ≤ 1} of the metric G (up to the common scale): where
  G⁻¹ is large, latent moves are cheap.
* **geodesics**: the length of a curve γ : [0, 1] → R^d under G is L(γ) = ∫ √(γ̇ᵀ G(γ) γ̇) dt and its energy
  E(γ) = ∫ γ̇ᵀ G(γ) γ̇ dt. By Cauchy–Schwarz L² ≤ E, with equality exactly for constant-speed curves, so the
  minimisers of E between two fixed end points are the constant-speed shortest paths. With n points
  z₀ … z_{n−1} (t_k = k/(n−1), Δz_k = z_{k+1} − z_k) and midpoint quadrature:

      E ≈ (n − 1) Σ_k Δz_kᵀ G(m_k) Δz_k,        L ≈ Σ_k √(Δz_kᵀ G(m_k) Δz_k),       m_k = (z_k + z_{k+1}) / 2.

  ``geodesic`` minimises the discrete E over the interior points (end points fixed), starting from the
  straight line, with L-BFGS (default) or Adam, in float64. The reported lengths of the geodesic and of the
  straight line use the same quadrature (``path_length`` with the same ``refine``).

Everything is torch and works for any latent dimension d, except ``latent_grid`` and ``ellipse_parameters``
(d = 2, the paper's case), which refuse any other d in one line naming what works at every d instead
(``require_2d_latent``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rhvae.models.metric import LearnedMetric, quadratic_form
from rhvae.validation import ParameterError, check


def require_2d_latent(latent_dim: int, what: str, owner: str, alternative: str) -> None:
    """Refuse a latent space that is not 2-D: a one-line ``ParameterError`` (a ``ValueError``) that says what needs
    it (``what``), whose latent_dim it is (``owner``, e.g. "the model's") and what to use instead, e.g. "latent_grid
    spans a 2-D latent space: the codes' latent_dim must be 2, got 3 (use latent_bounds ...)". Nothing happens for
    latent_dim 2."""
    if latent_dim != 2:
        raise ParameterError(f"{what}: {owner} latent_dim must be 2, got {latent_dim} (use {alternative})")


# ------------------------------------------------------------------------------------------------ grids
@dataclass
class LatentGrid:
    """A regular n × n grid of a 2-D latent box: ``points`` (n·n, 2) in row-major order of (y, x), so that a
    value per point reshaped with ``reshape`` is an image whose row index is y and column index is x."""

    xs: torch.Tensor  # (n,)
    ys: torch.Tensor  # (n,)
    points: torch.Tensor  # (n*n, 2)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.ys), len(self.xs))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max), the ``extent`` of ``imshow(..., origin="lower")``."""
        return (float(self.xs[0]), float(self.xs[-1]), float(self.ys[0]), float(self.ys[-1]))

    def reshape(self, values: torch.Tensor) -> torch.Tensor:
        """Values per point (n·n, ...) → (n_y, n_x, ...)."""
        return values.reshape(*self.shape, *values.shape[1:])


@torch.no_grad()
def encoder_means(model, x: torch.Tensor) -> torch.Tensor:
    """The encoder means μ(x) of ``model`` for images ``x`` (cast to the model's dtype), in float64: the latent codes
    that the interpolation and clustering analyses measure."""
    dtype = next(model.parameters()).dtype
    return model.encode(x.to(dtype))[0].double()


def latent_bounds(points: torch.Tensor, margin: float = 0.2, min_span: float = 1.0) -> torch.Tensor:
    """Box (2, d) = [lower; upper] around ``points`` (N, d), widened by ``margin`` × its span on every side.
    A span smaller than ``min_span`` (e.g. a single code) is widened to ``min_span`` first."""
    points = torch.as_tensor(points).detach()
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (N, d) tensor, got shape {tuple(points.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    lo, hi = points.min(0).values, points.max(0).values
    centre, half = (lo + hi) / 2, ((hi - lo) / 2).clamp_min(min_span / 2)
    half = half * (1 + 2 * margin)
    return torch.stack((centre - half, centre + half))


def latent_grid(
    centroids: torch.Tensor,
    n: int = 100,
    margin: float = 0.2,
    min_span: float = 1.0,
    bounds: torch.Tensor | None = None,
) -> LatentGrid:
    """An ``n`` × ``n`` grid covering the 2-D ``centroids`` (N, 2) with ``margin`` × span on every side
    (see ``latent_bounds``), or covering ``bounds`` (2, 2) = [[x_min, y_min], [x_max, y_max]] if given."""
    centroids = torch.as_tensor(centroids).detach()
    if centroids.ndim != 2:
        raise ValueError(f"latent_grid needs 2-D codes (N, 2), got shape {tuple(centroids.shape)}")
    require_2d_latent(
        centroids.shape[1],
        "latent_grid spans a 2-D latent space",
        "the codes'",
        "latent_bounds for a box, and metric_magnitude or metric_orientation at given points, at any latent_dim",
    )
    n = check("grid_n", n, "n")
    box = latent_bounds(centroids, margin, min_span) if bounds is None else torch.as_tensor(bounds)
    box = box.to(centroids.dtype if centroids.is_floating_point() else torch.float32)
    xs = torch.linspace(float(box[0, 0]), float(box[1, 0]), n, dtype=box.dtype)
    ys = torch.linspace(float(box[0, 1]), float(box[1, 1]), n, dtype=box.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return LatentGrid(xs, ys, torch.stack((xx.reshape(-1), yy.reshape(-1)), -1))


def _points(grid, metric) -> torch.Tensor:
    """The points (B, d) of ``grid`` (a ``LatentGrid`` or points), checked to have the metric's dimension d."""
    points = grid.points if isinstance(grid, LatentGrid) else torch.as_tensor(grid)
    dim = getattr(metric, "dim", None)
    if points.ndim != 2 or (dim is not None and points.shape[1] != dim):
        raise ValueError(f"points must be (B, {dim}) like the metric's latent_dim, got shape {tuple(points.shape)}")
    return points


# ------------------------------------------------------------------------------------ magnitude, orientation
@torch.no_grad()
def metric_magnitude(metric: LearnedMetric, grid, chunk: int = 16384) -> torch.Tensor:
    """log √det G⁻¹(z) = ½ log det G⁻¹(z) at every point of ``grid``.

    ``grid`` is a ``LatentGrid`` (→ an (n_y, n_x) image) or points (B, d) (→ (B,)). Evaluated in batched
    chunks of ``chunk`` points (no Python loop over points).
    """
    z = _points(grid, metric).to(metric.centroids.dtype)
    values = torch.cat([metric.log_sqrt_det_G_inv(part) for part in torch.split(z, chunk)])
    return grid.reshape(values) if isinstance(grid, LatentGrid) else values


@torch.no_grad()
def metric_orientation(metric: LearnedMetric, points) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition G⁻¹(z) = V diag(e) Vᵀ at ``points`` (B, d) (or a ``LatentGrid``).

    Returns ``eigenvalues`` (B, d) in ascending order (all ≥ λ > 0) and ``eigenvectors`` (B, d, d) whose
    columns are the matching unit eigenvectors. The ellipse of the metric at z has semi-axes ∝ √eⱼ along vⱼ.
    """
    z = _points(points, metric).to(metric.centroids.dtype)
    G_inv = metric.G_inv(z)
    return torch.linalg.eigh(0.5 * (G_inv + G_inv.transpose(-1, -2)))


def ellipse_parameters(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, scale: float = 1.0):
    """Matplotlib ``Ellipse`` parameters for d = 2: full ``width`` along the major axis, full ``height``
    along the minor axis (2 · scale · √e) and ``angle`` of the major axis in degrees, each (B,). Any other
    latent dimension is refused in one line (``require_2d_latent``)."""
    require_2d_latent(
        eigenvalues.shape[-1],
        "ellipse_parameters draws 2-D ellipses",
        "the metric's",
        "the eigenvalues and eigenvectors of metric_orientation, which work at any latent_dim",
    )
    width = 2.0 * scale * eigenvalues[:, 1].sqrt()
    height = 2.0 * scale * eigenvalues[:, 0].sqrt()
    major = eigenvectors[:, :, 1]
    angle = torch.rad2deg(torch.atan2(major[:, 1], major[:, 0]))
    return width, height, angle


# -------------------------------------------------------------------------------------------- geodesics
def _midpoint_quadratic_forms(metric, path: torch.Tensor, refine: int = 1) -> torch.Tensor:
    """Δᵀ G(m) Δ for every (sub-)segment of the piecewise-linear ``path`` (n, d), each segment split into
    ``refine`` equal pieces; shape ((n − 1)·refine,)."""
    if refine > 1:
        t = torch.arange(refine + 1, dtype=path.dtype, device=path.device) / refine  # (r+1,)
        seg = path[:-1, None, :] + t[None, :, None] * (path[1:] - path[:-1])[:, None, :]  # (n-1, r+1, d)
        starts, ends = seg[:, :-1].reshape(-1, path.shape[1]), seg[:, 1:].reshape(-1, path.shape[1])
    else:
        starts, ends = path[:-1], path[1:]
    delta = ends - starts
    return quadratic_form(metric.G(0.5 * (starts + ends)), delta)


def path_length(metric, path: torch.Tensor, refine: int = 1) -> torch.Tensor:
    """Riemannian length Σ_k √(Δz_kᵀ G(m_k) Δz_k) of the piecewise-linear ``path`` (n, d) under G, with
    midpoint quadrature on each segment split into ``refine`` pieces. A 0-dim tensor (differentiable)."""
    path = torch.as_tensor(path)
    if path.ndim != 2 or path.shape[0] < 2:
        raise ValueError(f"path must be (n >= 2, d), got shape {tuple(path.shape)}")
    return _midpoint_quadratic_forms(metric, path, refine).clamp_min(0.0).sqrt().sum()


def path_energy(metric, path: torch.Tensor, refine: int = 1) -> torch.Tensor:
    """Discrete energy E = (n − 1)·r Σ Δᵀ G(m) Δ of ``path`` (n, d) on [0, 1] (r = ``refine``); L² ≤ E."""
    n_segments = (path.shape[0] - 1) * refine
    return n_segments * _midpoint_quadratic_forms(metric, path, refine).sum()


@dataclass
class GeodesicResult:
    """A discrete geodesic and the straight line between the same end points.

    ``length`` and ``line_length`` are Riemannian lengths under G with the same quadrature (midpoint rule,
    each segment split into ``refine`` pieces); ``euclidean_length`` is ‖z_end − z_start‖.
    """

    path: torch.Tensor  # (n, d), float64
    line: torch.Tensor  # (n, d), the straight line with the same number of points
    length: float
    line_length: float
    energy: float
    line_energy: float
    euclidean_length: float
    refine: int
    n_steps: int

    @property
    def ratio(self) -> float:
        """length / line_length (≤ 1 up to the optimiser's tolerance)."""
        return self.length / self.line_length

    @property
    def max_deviation(self) -> float:
        """Largest Euclidean distance between corresponding points of the geodesic and the line."""
        return float((self.path - self.line).norm(dim=-1).max())

    @property
    def max_distance_to_line(self) -> float:
        """Largest Euclidean distance of a geodesic point to the straight line through the end points
        (insensitive to how the points are spaced along the path)."""
        z0, z1 = self.line[0], self.line[-1]
        direction = (z1 - z0) / (z1 - z0).norm().clamp_min(1e-300)
        offset = self.path - z0
        return float((offset - (offset @ direction)[:, None] * direction).norm(dim=-1).max())


def _double(metric):
    if isinstance(metric, LearnedMetric):
        return LearnedMetric(
            metric.centroids.detach().double(), metric.M.detach().double(), metric.temperature, metric.regularization
        )
    return metric


def geodesic(
    metric,
    z_start: torch.Tensor,
    z_end: torch.Tensor,
    n_points: int = 32,
    steps: int = 300,
    lr: float | None = None,
    optimizer: str = "lbfgs",
    refine: int = 4,
    tolerance: float = 1e-10,
) -> GeodesicResult:
    r"""Shortest path under G between the codes ``z_start`` and ``z_end`` (each (d,)).

    Minimises the discrete energy E = (n − 1) Σ_k Δz_kᵀ G(m_k) Δz_k over the n − 2 interior points (the end
    points stay fixed), starting from the straight line with equally spaced points. ``optimizer`` is
    ``"lbfgs"`` (strong-Wolfe line search, at most ``steps`` iterations, default ``lr`` 1) or ``"adam"``
    (``steps`` steps, default ``lr`` = 1 % of ‖z_end − z_start‖, cosine-decayed). All in float64.

    If the straight line is an exact critical point of E by symmetry (e.g. a metric symmetric about the line),
    the optimiser stays on it: the result is then a critical path, not necessarily the shortest one.
    """
    metric = _double(metric)
    z0 = torch.as_tensor(z_start).detach().double().reshape(-1)
    z1 = torch.as_tensor(z_end).detach().double().reshape(-1)
    if z0.shape != z1.shape:
        raise ValueError(f"z_start and z_end must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if not isinstance(n_points, int) or n_points < 3:
        raise ValueError(f"n_points must be an integer >= 3, got {n_points!r}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    t = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)[:, None]
    line = (1 - t) * z0 + t * z1
    distance = float((z1 - z0).norm())
    interior = line[1:-1].clone().requires_grad_(True)

    def energy() -> torch.Tensor:
        return path_energy(metric, torch.cat((z0[None], interior, z1[None])))

    n_steps = 0
    if distance > 0:
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(
                [interior],
                lr=1.0 if lr is None else lr,
                max_iter=steps,
                tolerance_grad=tolerance,
                tolerance_change=tolerance * 1e-3,
                history_size=50,
                line_search_fn="strong_wolfe",
            )

            def closure():
                opt.zero_grad()
                value = energy()
                value.backward()
                return value

            opt.step(closure)
            n_steps = int(opt.state[opt._params[0]].get("n_iter", 0))
        else:
            lr = 0.01 * distance if lr is None else lr
            opt = torch.optim.Adam([interior], lr=lr)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            for _ in range(steps):
                opt.zero_grad()
                energy().backward()
                opt.step()
                schedule.step()
            n_steps = steps
    with torch.no_grad():
        path = torch.cat((z0[None], interior.detach(), z1[None]))
        return GeodesicResult(
            path=path,
            line=line,
            length=float(path_length(metric, path, refine)),
            line_length=float(path_length(metric, line, refine)),
            energy=float(path_energy(metric, path, refine)),
            line_energy=float(path_energy(metric, line, refine)),
            euclidean_length=distance,
            refine=refine,
            n_steps=n_steps,
        )


def straight_line(z_start: torch.Tensor, z_end: torch.Tensor, n_points: int = 32) -> torch.Tensor:
    """n equally spaced points (n, d) on the segment from ``z_start`` to ``z_end``."""
    z0, z1 = torch.as_tensor(z_start).reshape(-1), torch.as_tensor(z_end).reshape(-1)
    t = torch.linspace(0.0, 1.0, n_points, dtype=z0.dtype if z0.is_floating_point() else torch.float32)[:, None]
    return (1 - t) * z0 + t * z1


__all__ = [
    "GeodesicResult",
    "LatentGrid",
    "encoder_means",
    "ellipse_parameters",
    "geodesic",
    "latent_bounds",
    "latent_grid",
    "metric_magnitude",
    "metric_orientation",
    "path_energy",
    "path_length",
    "require_2d_latent",
    "straight_line",
]
