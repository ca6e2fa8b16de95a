"""What a training run leaves: its settings, one record per epoch and its status (``rhvae.training`` writes it, a
model file keeps it as JSON: ``rhvae.persistence``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    test_loss: float | None
    seconds: float
    max_latent_norm: float
    fixed_point_residual: float
    step_size: float = 0.0  # median leapfrog step of the epoch's last batch (RHVAE: the stability-bounded ε)
    diagnostics: dict | None = (
        None  # HVAE/RHVAE, every rhvae.training.DIAGNOSTICS_EVERY epochs and the last: rhvae.evaluation.diagnostics
    )


@dataclass
class History:
    """Per-epoch records and the settings of the run (JSON-ready through ``to_dict``)."""

    settings: dict = field(default_factory=dict)
    epochs: list[EpochRecord] = field(default_factory=list)
    status: str = "running"

    @property
    def train_loss(self) -> list[float]:
        return [r.train_loss for r in self.epochs]

    @property
    def test_loss(self) -> list[float | None]:
        return [r.test_loss for r in self.epochs]

    @property
    def diagnostics(self) -> dict | None:
        """The flow diagnostics of the last epoch that has them (HVAE/RHVAE trained with test images), or None."""
        return next((r.diagnostics for r in reversed(self.epochs) if r.diagnostics is not None), None)

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.epochs)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "status": self.status, "epochs": [asdict(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(data.get("settings", {}), [EpochRecord(**r) for r in data.get("epochs", [])], data["status"])
