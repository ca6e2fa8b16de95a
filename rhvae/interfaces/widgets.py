"""ipywidgets controls that redraw a notebook's figures from its trained (or cached) models.

Built only when a notebook runs with ``interactive=True``; batch runs (papermill, CI) draw every figure by a
direct call instead (docs/design.md §5: exceptions inside a widget callback are swallowed in headless runs).

* ``MetricExplorer``: a temperature box that redraws the magnitude and orientation of a trained RHVAE's
  metric. The model is **not** retrained: its frozen centroids cᵢ and matrices Mᵢ are re-evaluated at the
  chosen T, i.e. ``LearnedMetric(model.centroids, model.M, T, model.regularization)``. Cheap: redraws when a new
  value is entered. Above ``rhvae.sampling.truncation.MIN_CENTROIDS`` centroids the truncated metric is drawn (error
  ≤ 10⁻⁵ λ); the sampler's target is then the grid of ``rhvae.sampling.grid_target`` (2-D, above 1,000 centroids).
* ``SamplerExplorer``: MCMC steps, number of samples, seed and metric temperature; the (possibly slow)
  re-sampling runs only when the **Sample** button is pressed.
* ``InterpolationExplorer``: two test digits (by index) and the decoded paths between them, the RHVAE's geodesic
  and straight line beside the other models' straight lines.
* ``AugmentationExplorer``: generated images per class; **Train** fits a quick classifier on real + generated
  images and plots its test accuracy against the number of generated images.

Every number is typed into a text box and checked, when it is used, against the range the rest of the package
accepts (``rhvae.validation.RANGES``, the notebooks' parameters): a value out of range shows the red error naming it,
it is never clamped to the nearest allowed value (as a slider or a bounded box would do silently).

Figures are rendered to PNG into an ``Image`` widget (so nothing lands in hidden widget state and tests can see
them change). An exception in a callback is shown in the explorer's ``message`` widget (red) and printed into
its ``log`` ``Output``; it is never swallowed.
"""

from __future__ import annotations

import html
import io
import traceback
from collections.abc import Callable, Mapping

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib import pyplot as plt

from rhvae.experiments.augmentation import generated_images, train_classifier
from rhvae.experiments.interpolation import decoded_paths
from rhvae.experiments.parameters import check_parameter
from rhvae.experiments.quality import accuracy
from rhvae.experiments.registry import PARAMETERS
from rhvae.interfaces.plotting import (
    plot_image_grid,
    plot_interpolations,
    plot_metric_magnitude,
    plot_metric_orientation,
    require_2d_picture,
)
from rhvae.models import RHVAE
from rhvae.sampling.hmc import DEFAULT_MCMC_STEPS, DEFAULT_N_SAMPLES, generate
from rhvae.sampling.truncation import truncate_if_large
from rhvae.validation import check

FROZEN_METRIC_NOTE = "frozen metric of the trained model re-evaluated at T (no retraining)"
#: The error box: red, wrapped, and with its own line height (a widget's HTML inherits the 28 px line height of
#: the controls, which double-spaces a traceback).
ERROR_STYLE = "color:#b00020;white-space:pre-wrap;line-height:1.3;margin:0.2em 0;font-size:0.85em"
#: Height in inches of one row of digits in the sampler's figure, and of the two-line panel titles.
SAMPLE_ROW_INCHES = 0.45
TITLE_INCHES = 0.5


def sampler_figsize(n_samples: int, n_cols: int, n_panels: int) -> tuple[float, float]:
    """Figure size (inches) of ``n_panels`` sample grids of ``n_samples`` digits in at most ``n_cols`` columns:
    just the rows that are drawn plus the titles (no blank band when one row is shown)."""
    cols = max(1, min(n_cols, n_samples))
    rows = -(-n_samples // cols)
    return (SAMPLE_ROW_INCHES * cols + 0.2) * n_panels + 0.2, SAMPLE_ROW_INCHES * rows + TITLE_INCHES


def figure_png(fig, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


class _Explorer:
    """Shared machinery: an Image for the figure, an HTML status/error line, an Output log, safe callbacks."""

    def __init__(self):
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.message = widgets.HTML(value="")
        self.log = widgets.Output()
        self.error: str | None = None
        self.redraws = 0

    def _safely(self, action: Callable[[], str]) -> bool:
        """Run ``action`` (which draws and returns a status text); on an exception show it and return False."""
        self.message.value = "<i>working…</i>"
        try:
            status = action()
        except Exception as err:  # shown to the user, never swallowed
            self.error = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            self.message.value = (
                f"<pre style='{ERROR_STYLE}'>Error: {html.escape(repr(err))}\n{html.escape(self.error)}</pre>"
            )
            with self.log:
                print(self.error)
            return False
        self.error = None
        self.redraws += 1
        self.message.value = html.escape(status)
        return True


class MetricExplorer(_Explorer):
    """The metric temperature T (a number box); redraws magnitude and orientation of ``model``'s frozen metric
    re-evaluated at T. A model of another latent dimension than 2 is refused in one line when the explorer is built
    (its pictures are of the plane); the other explorers work at any latent dimension."""

    def __init__(self, model: RHVAE, codes=None, labels=None, temperature: float | None = None, grid_n: int = 60):
        super().__init__()
        if not isinstance(model, RHVAE):
            raise TypeError(f"MetricExplorer needs a trained RHVAE, got {type(model).__name__}")
        require_2d_picture("MetricExplorer", model.latent_dim, "the model's")
        self.model, self.codes, self.labels, self.grid_n = model, codes, labels, grid_n
        t0 = float(model.temperature if temperature is None else temperature)
        self.temperature = widgets.FloatText(value=t0, step=0.05, description="T")
        self.label = widgets.HTML(
            f"<b>Metric temperature T</b> — {FROZEN_METRIC_NOTE}; trained at T = {model.temperature:g}"
        )
        self.temperature.observe(self.on_change, names="value")
        self.widget = widgets.VBox([self.label, self.temperature, self.message, self.image, self.log])
        self.redraw()

    def on_change(self, change=None) -> bool:
        return self.redraw()

    def draw(self, temperature: float):
        metric = truncate_if_large(self.model.metric(temperature))  # many centroids: rhvae.sampling.truncation
        fig = plt.figure(figsize=(10, 4.2), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        plot_metric_magnitude(metric, self.codes, self.labels, ax=ax1, grid_n=self.grid_n)
        plot_metric_orientation(metric, self.codes, self.labels, ax=ax2, grid_n=self.grid_n, legend=False)
        fig.suptitle(f"{FROZEN_METRIC_NOTE}: T = {temperature:g} (trained at {self.model.temperature:g})")
        return fig

    def redraw(self) -> bool:
        def action():
            t = check("temperature", self.temperature.value)
            self.image.value = figure_png(self.draw(t))
            return f"metric drawn at T = {t:g}"

        return self._safely(action)


class SamplerExplorer(_Explorer):
    """MCMC steps, samples, seed and metric temperature for the given models; the **Sample** button re-samples
    (RHVAE: Riemannian HMC on the frozen metric re-evaluated at T; VAE/HVAE: the prior) and redraws."""

    def __init__(
        self,
        models: Mapping[str, object],
        mcmc_steps: int = DEFAULT_MCMC_STEPS,
        n_samples: int = DEFAULT_N_SAMPLES,
        seed: int = 0,
        temperature: float | None = None,
        score: Callable | None = None,
        n_cols: int = 10,
    ):
        super().__init__()
        self.models = {name: m for name, m in models.items() if m is not None}
        if not self.models:
            raise ValueError("SamplerExplorer needs at least one trained model")
        self.score, self.n_cols = score, n_cols
        rhvae = next((m for m in self.models.values() if isinstance(m, RHVAE)), None)
        t0 = float(temperature if temperature is not None else (rhvae.temperature if rhvae is not None else 1.0))
        self.mcmc_steps = widgets.IntText(value=mcmc_steps, step=5, description="MCMC steps")
        self.n_samples = widgets.IntText(value=n_samples, description="samples")
        self.seed = widgets.IntText(value=seed, description="seed")
        self.temperature = widgets.FloatText(value=t0, step=0.05, description="T")
        self.button = widgets.Button(description="Sample", button_style="primary", icon="refresh")
        self.button.on_click(self.on_click)
        note = widgets.HTML(
            "<b>Generation</b> — RHVAE: Riemannian HMC; T is the "
            f"{FROZEN_METRIC_NOTE}. VAE/HVAE: prior samples (MCMC steps and T do not apply). "
            "Press <b>Sample</b> to recompute."
        )
        controls = widgets.HBox(
            [widgets.VBox([self.mcmc_steps, self.n_samples]), widgets.VBox([self.temperature, self.seed])]
        )
        self.widget = widgets.VBox([note, controls, self.button, self.message, self.image, self.log])
        self.last: dict = {}
        self.on_click()

    def draw(self) -> tuple:
        sampling = PARAMETERS["generation_5"]  # the notebooks' ranges: at least 1 MCMC step (0 shows the codes)
        steps = check_parameter("mcmc_steps", self.mcmc_steps.value, sampling["mcmc_steps"])
        n = check_parameter("n_samples", self.n_samples.value, sampling["n_samples"])
        seed, t = check("seed", self.seed.value), check("temperature", self.temperature.value)
        fig = plt.figure(figsize=sampler_figsize(n, self.n_cols, len(self.models)), layout="constrained")
        axes = fig.subplots(1, len(self.models), squeeze=False)[0]
        lines = []
        for ax, (name, model) in zip(axes, self.models.items(), strict=True):
            gen = generate(model, n, steps, seed=seed, temperature=t if isinstance(model, RHVAE) else None)
            title = name
            if gen.info["sampler"] == "riemannian_hmc":
                title += f"\n{steps} MCMC steps, T = {t:g}"
            else:
                title += "\nprior"
            plot_image_grid(gen.images, n_cols=self.n_cols, title=title, ax=ax)
            line = f"{name}: {gen.info['sampler']} ({gen.info['seconds']:.1f} s"
            if "acceptance_rate" in gen.info:
                line += f", acceptance {gen.info['acceptance_rate']:.2f}"
            if self.score is not None:
                line += f", score {self.score(gen.images)}"
            lines.append(line + ")")
            self.last[name] = gen
        return fig, "; ".join(lines)

    def on_click(self, button=None) -> bool:
        def action():
            fig, status = self.draw()
            self.image.value = figure_png(fig)
            return status

        self.button.disabled = True
        try:
            return self._safely(action)
        finally:
            self.button.disabled = False


class AugmentationExplorer(_Explorer):
    """Generated images per class (a number box, 0 = real only) for a quick classifier: the **Train** button generates
    that many images of each class with the per-class RHVAE (Riemannian HMC, ``mcmc_steps``), trains the MLP on
    the real + generated images with a budget of ``steps`` updates (early stopping on the real validation images)
    and adds its test accuracy to a plot of accuracy against the number of generated images."""

    def __init__(
        self,
        models: Mapping[int, RHVAE],
        fit,
        val,
        test,
        mcmc_steps: int = DEFAULT_MCMC_STEPS,
        seed: int = 0,
        steps=500,
    ):
        super().__init__()
        if not models:
            raise ValueError("AugmentationExplorer needs the trained per-class models")
        self.models, self.fit, self.val, self.test = dict(models), fit, val, test
        self.mcmc_steps, self.seed, self.steps = mcmc_steps, seed, steps
        self.n_generated = widgets.IntText(value=100, step=50, description="per class")
        self.button = widgets.Button(description="Train", button_style="primary", icon="refresh")
        self.button.on_click(self.on_click)
        note = widgets.HTML(
            "<b>Augmentation</b> — generated images per class (RHVAE, Riemannian HMC) added to the real ones; "
            f"a quick MLP ({steps} steps at most). Press <b>Train</b>."
        )
        self.accuracies: dict[int, float] = {}
        self.widget = widgets.VBox([note, self.n_generated, self.button, self.message, self.image, self.log])

    def generated_per_class(self) -> int:
        """The typed number of generated images per class: 0 (real only) up to the notebook's ``n_generated``
        bound."""
        value = self.n_generated.value
        if value == 0 and not isinstance(value, bool):
            return 0
        return check_parameter("per class", value, PARAMETERS["augmentation"]["n_generated"])

    def accuracy_with(self, n: int) -> float:
        """Test accuracy of the quick MLP trained on the real images + ``n`` generated images per class."""

        x, y = self.fit.x, self.fit.y
        if n > 0:
            gx, gy, _ = generated_images(self.models, "hmc", n, self.mcmc_steps, self.seed)
            x, y = torch.cat([x, gx]), torch.cat([y, gy])
        fitted = train_classifier("mlp", x, y, self.val.x, self.val.y, self.steps, self.seed)
        return accuracy(fitted.model, self.test.x, self.test.y)

    def on_click(self, button=None) -> bool:
        def action():
            n = self.generated_per_class()
            self.accuracies[n] = self.accuracy_with(n)
            fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
            points = sorted(self.accuracies.items())
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
            ax.set_xlabel("generated images per class (RHVAE, HMC)")
            ax.set_ylabel("test accuracy (quick MLP)")
            self.image.value = figure_png(fig)
            return f"{n} generated per class: test accuracy {self.accuracies[n]:.3f}"

        self.button.disabled = True
        try:
            return self._safely(action)
        finally:
            self.button.disabled = False


class InterpolationExplorer(_Explorer):
    """Two test digits, picked by their index in the test split, and the decoded paths between their codes: the
    RHVAE's geodesic and straight line, every other model's straight line
    (``rhvae.experiments.interpolation.decoded_paths``). Redraws when a value changes; an index outside the test
    split is refused in the red error line (never clamped)."""

    def __init__(self, models: Mapping[str, object], test, n_points: int = 12, first: int = 0, second: int = -1):
        super().__init__()
        self.models = {name: m for name, m in models.items() if m is not None}
        if not self.models:
            raise ValueError("InterpolationExplorer needs at least one trained model")
        if len(test) < 2:
            raise ValueError(f"InterpolationExplorer needs at least 2 test digits, got {len(test)}")
        self.test = test
        n = len(test)
        for name, index in (("first", first), ("second", second)):  # an index past the end never wraps
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
                raise ValueError(
                    f"{name} must be a test-digit index in -{n}..{n - 1} (negative counts from the end), got {index!r}"
                )
        self.first = widgets.IntText(value=int(first) % n, description="digit A")
        self.second = widgets.IntText(value=int(second) % n, description="digit B")
        self.n_points = widgets.IntText(value=n_points, description="frames")
        for control in (self.first, self.second, self.n_points):
            control.observe(self.on_change, names="value")
        note = widgets.HTML(
            f"<b>Interpolation</b> — two of the {len(test)} test digits (index 0 to {len(test) - 1}); frames at "
            "equal Riemannian arc length under the RHVAE's metric, equal Euclidean spacing for the other models."
        )
        self.widget = widgets.VBox(
            [note, widgets.HBox([self.first, self.second, self.n_points]), self.message, self.image, self.log]
        )
        self.redraw()

    def draw(self):
        i, j = int(self.first.value), int(self.second.value)
        n = check_parameter("frames", self.n_points.value, PARAMETERS["interpolation"]["n_points"])
        for name, index in (("digit A", i), ("digit B", j)):
            if not 0 <= index < len(self.test):
                raise ValueError(f"{name} must be a test-digit index in 0..{len(self.test) - 1}, got {index}")
        strips = decoded_paths(self.models, self.test.x[i], self.test.x[j], n_points=n)
        y = self.test.y
        return plot_interpolations(strips, title=f"test digit {i} (a {int(y[i])}) → test digit {j} (a {int(y[j])})")

    def on_change(self, change=None) -> bool:
        return self.redraw()

    def redraw(self) -> bool:
        def action():
            self.image.value = figure_png(self.draw())
            return f"paths between test digits {self.first.value} and {self.second.value}"

        return self._safely(action)


def controls(explorers) -> widgets.Widget:
    """One box with every explorer's widget."""
    return widgets.VBox([e.widget for e in explorers])


__all__ = [
    "FROZEN_METRIC_NOTE",
    "AugmentationExplorer",
    "InterpolationExplorer",
    "MetricExplorer",
    "SamplerExplorer",
    "controls",
    "figure_png",
    "sampler_figsize",
]
