"""The index of the trained models shipped in ``data/models``: what each file is (experiment, model, seed, latent
dimension, temperature, classes), read from its own recorded provenance, and loading one by those fields. Every
file is checked against ``data/models/SHA256SUMS`` and read with ``weights_only=True`` (``rhvae.persistence``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rhvae.models import VAE
from rhvae.paths import SHIPPED_DIR
from rhvae.persistence import json_field, load_model, read_model_file, shipped_checksums


@dataclass(frozen=True)
class ShippedModel:
    """One trained model committed in ``data/models``: what it is, from its own recorded provenance."""

    experiment: str
    model: str  # "vae", "hvae" or "rhvae"
    seed: int
    temperature: float | None  # the RHVAE's metric temperature T (None for the VAE and HVAE)
    classes: tuple[int, ...]
    n_per_class: int
    objective: str | None
    path: Path
    latent_dim: int = 2  # the latent_dimension experiment ships models of d > 2 beside the experiments' own

    def __str__(self) -> str:
        t = "" if self.temperature is None else f" T={self.temperature:g}"
        where = self.path.relative_to(SHIPPED_DIR.parent.parent)
        return (
            f"{self.experiment:<21} {self.model:<5} seed {self.seed}{t:<7} d={self.latent_dim:<3} classes "
            f"{','.join(map(str, self.classes))} x{self.n_per_class}  {where}"
        )


class ShippedModels(list):
    """The list that ``shipped_models`` returns; printed as one line per model."""

    def __str__(self) -> str:
        return "\n".join(map(str, self))


def shipped_models() -> ShippedModels:
    """Every model shipped in ``data/models`` (listed in its SHA256SUMS), with its experiment, model type, seed,
    metric temperature, classes and images per class read from the file's provenance, in experiment, model and
    seed order. ``load_shipped`` loads one by these fields."""
    rows = []
    for name in sorted(shipped_checksums()):
        # the augmentation experiment's classifiers are not generative models, and stored evaluations are not models
        if "/classifiers/" in name or not name.endswith(".pt"):
            continue
        path = SHIPPED_DIR / name
        provenance = json_field(read_model_file(path), "provenance", path, default="{}")
        spec = provenance.get("spec", {})
        config, subset = spec.get("config", {}), spec.get("subset", {})
        rows.append(
            ShippedModel(
                experiment=name.split("/")[0],
                model=spec.get("model", name.split("/")[-1].split("_")[0]),
                seed=spec.get("training", {}).get("seed"),
                temperature=config.get("temperature"),
                classes=tuple(subset.get("classes", ())),
                n_per_class=subset.get("n_per_class"),
                objective=config.get("objective"),
                path=path,
                latent_dim=config.get("latent_dim", 2),
            )
        )
    return ShippedModels(
        sorted(
            rows,
            key=lambda r: (r.experiment, r.model, r.latent_dim, r.seed, r.temperature or 0, r.n_per_class, r.classes),
        )
    )


def shipped_path(experiment: str, model: str, seed: int = 0, latent_dim: int = 2, **fields) -> Path:
    """The file of the shipped model of ``experiment`` (e.g. "reconstruction"), ``model`` ("vae", "hvae", "rhvae"),
    ``seed`` and ``latent_dim`` (the paper's 2 by default; the latent_dimension experiment ships reconstruction and
    generation_5 models at 4, 8 and 16). Where several match (the metric experiment's three temperatures, the
    augmentation experiment's classes and sizes) name the field too: ``temperature=0.6``, ``classes=(3,)``,
    ``n_per_class=20``. ``ValueError`` listing the choices when none or several match."""
    wanted = {"experiment": experiment, "model": str(model).lower(), "seed": seed, "latent_dim": latent_dim, **fields}
    unknown = set(fields) - set(ShippedModel.__dataclass_fields__) - {"path"}
    if unknown:
        raise TypeError(
            f"unknown field(s) {sorted(unknown)}; the fields are latent_dim, temperature, classes, n_per_class"
        )
    if "classes" in wanted:
        wanted["classes"] = tuple(wanted["classes"])
    rows = shipped_models()
    matches = [r for r in rows if all(getattr(r, k) == v for k, v in wanted.items())]
    if len(matches) != 1:
        near = [r for r in rows if r.experiment == experiment and r.model == wanted["model"]] or rows
        choices = "\n  ".join(str(r) for r in near[:12]) + ("\n  …" if len(near) > 12 else "")
        what = "no shipped model matches" if not matches else f"{len(matches)} shipped models match"
        raise ValueError(f"{what} {wanted}; name more fields. Shipped:\n  {choices}")
    return matches[0].path


def load_shipped(experiment: str, model: str, seed: int = 0, latent_dim: int = 2, **fields) -> VAE:
    """The shipped model at ``shipped_path(experiment, model, seed, latent_dim, **fields)``, checksum-verified and
    loaded with ``weights_only=True`` (eval mode)."""
    return load_model(shipped_path(experiment, model, seed, latent_dim, **fields), expected_type=str(model))
