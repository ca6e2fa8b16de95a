r"""pythae 0.1.2 model folders in and out: ``from_pythae(folder)`` reads the folder that pythae's ``model.save``
wrote for its VAE, HVAE or RHVAE with its default MLPs; ``to_pythae(model, folder)`` writes one that
``pythae.models.AutoModel.load_from_folder`` loads. Neither imports pythae: the folder is ``model_config.json``
(JSON), ``model.pt`` (a dict of tensors, read with ``weights_only=True``) and ``environment.json``.

The networks are the same functions. pythae's ``Encoder_VAE_MLP`` is Linear(D, 512)–ReLU → (μ, log σ²) heads,
its ``Decoder_AE_MLP`` Linear(d, 512)–ReLU–Linear(512, D)–sigmoid, whose output is our decoder mean σ(π(z)), and
its ``Metric_MLP`` Linear(D, 400)–ReLU → L(x) with exp(diag head) on the diagonal and the lower head below it in
``torch.tril_indices`` order, as ours. pythae's RHVAE keeps its frozen metric (cᵢ, Mᵢ) beside the state dict in
``model.pt`` (``centroids``, ``M``), set by its ``update()`` at the end of every training epoch.

Settings (docs/usage.md, "Models from pythae", states what differs in the flows):

* β₀: pythae's HVAE config holds β₀, its RHVAE config √β₀ (both keep √β₀ in the weight ``beta_zero_sqrt``);
  this package's ``beta_zero`` is β₀ in every model.
* pythae's RHVAE steps ``eps_lf`` with 3 fixed-point iterations and trains on the release's objective: it is read
  as ``step_bound="none"``, ``n_fixed_point=3``, ``objective="authors"``.
* pythae's default likelihood is ``reconstruction_loss="mse"`` (p(x|z) = N(D(z), I)); this package's is Bernoulli
  with mean D(z). An MSE-trained folder is refused unless ``mse_as_bernoulli=True`` reads its decoder means as
  Bernoulli means (a different model of the same networks).
* pythae's default MLPs are 512 wide (encoder, decoder) and 400 (metric); a narrower model of ours is exported
  with zero-padded hidden units, which compute exactly the same function (a ReLU of 0 is 0).
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path

import torch

from rhvae.files import as_path, atomic_write_set, text_writer, writable_folder
from rhvae.models import HVAE, RHVAE, VAE, ConfigError, check_model
from rhvae.persistence import ModelFileError
from rhvae.validation import check_bool

#: The hidden widths of pythae's default ``Encoder_VAE_MLP``/``Decoder_AE_MLP`` and of its ``Metric_MLP``.
PYTHAE_HIDDEN = 512
PYTHAE_METRIC_HIDDEN = 400
#: pythae's RHVAE leapfrog: 3 fixed-point iterations, the plain step, the release's objective.
PYTHAE_RHVAE_FLOW = {"step_bound": "none", "n_fixed_point": 3, "objective": "authors"}
#: pythae's config name of each model class this bridge reads and writes.
CONFIG_NAMES = {"VAEConfig": VAE, "HVAEConfig": HVAE, "RHVAEConfig": RHVAE}
#: The files in which pythae pickles custom networks (cloudpickle: loading them runs arbitrary code).
PICKLES = ("encoder.pkl", "decoder.pkl", "metric.pkl")
#: Our layer → pythae's layer in its state dict (``.weight``/``.bias`` appended).
LAYERS = {
    "enc_hidden": "encoder.layers.0.0",
    "enc_mu": "encoder.embedding",
    "enc_log_var": "encoder.log_var",
    "dec_hidden": "decoder.layers.0.0",
    "dec_out": "decoder.layers.1.0",
}
METRIC_LAYERS = {"metric_hidden": "metric.layers.0", "metric_diag": "metric.diag", "metric_lower": "metric.lower"}


# ------------------------------------------------------------------------------------------------------ import
def from_pythae(folder, *, mse_as_bernoulli: bool = False) -> VAE:
    """The model of a pythae 0.1.2 ``model.save`` folder as this package's VAE, HVAE or RHVAE (eval mode).

    Reads ``model_config.json`` and the tensors of ``model.pt`` only; refuses, in one ``ModelFileError`` line, a
    missing or unreadable file, another pythae model class, pickled custom networks, weights whose shapes do not
    fit pythae's default MLPs, non-finite weights, an RHVAE whose metric was never updated, and settings outside
    this package's ranges. ``mse_as_bernoulli=True`` accepts a model trained with pythae's default
    ``reconstruction_loss="mse"`` and reads its decoder means as Bernoulli means."""
    folder = as_path(folder, "folder")
    mse_as_bernoulli = check_bool("mse_as_bernoulli", mse_as_bernoulli)
    config = _read_config(folder, mse_as_bernoulli)
    cls = CONFIG_NAMES[config["name"]]
    payload = _read_weights(folder)
    state = payload["model_state_dict"]
    try:
        model = cls(**_settings(cls, config, state, folder))
    except ConfigError as err:
        raise ModelFileError(f"{folder / 'model_config.json'}: {err}") from None
    ours = _our_state(model, state, folder)
    if isinstance(model, RHVAE):
        ours.update(_frozen_metric(payload, model.latent_dim, folder))
    model.load_trained_state(ours)
    return model.eval()


def _read_config(folder: Path, mse_as_bernoulli: bool) -> dict:
    path = folder / "model_config.json"
    if not folder.is_dir():
        raise ModelFileError(f"{folder} is not a folder (a pythae model folder holds model_config.json and model.pt)")
    if not path.is_file():
        raise ModelFileError(f"{folder} holds no model_config.json: not a folder written by pythae's model.save")
    pickled = [name for name in PICKLES if (folder / name).exists()]
    if pickled:
        raise ModelFileError(
            f"{folder} holds {', '.join(pickled)}: custom pythae networks are cloudpickled, and unpickling runs "
            "arbitrary code, so only pythae's default MLPs (tensors in model.pt) are read"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(config, dict) or config.get("name") not in CONFIG_NAMES:
        name = config.get("name") if isinstance(config, dict) else None
        raise ModelFileError(f"{path} is a pythae {name!r}; from_pythae reads {', '.join(CONFIG_NAMES)}")
    custom = [
        key
        for key in ("uses_default_encoder", "uses_default_decoder", "uses_default_metric")
        if not config.get(key, True)
    ]
    if custom:
        raise ModelFileError(
            f"{path} has {', '.join(f'{k}=false' for k in custom)}: only pythae's default MLPs are read (its custom "
            "networks are cloudpickled, and unpickling runs arbitrary code)"
        )
    loss = config.get("reconstruction_loss", "mse")
    if loss == "mse" and not mse_as_bernoulli:
        raise ModelFileError(
            f"{path} has reconstruction_loss='mse' (a Gaussian decoder N(D(z), I)); this package's decoder is "
            "Bernoulli: train in pythae with reconstruction_loss='bce', or pass mse_as_bernoulli=True "
            "(CLI --mse-as-bernoulli) to read its decoder means as Bernoulli means"
        )
    if loss not in ("bce", "mse"):
        raise ModelFileError(f"{path} has reconstruction_loss={loss!r}; pythae's are 'bce' and 'mse'")
    shape = config.get("input_dim")
    if not isinstance(shape, list) or not shape or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ModelFileError(
            f"{path} has input_dim={shape!r}; expected a list of positive integers such as [1, 28, 28]"
        )
    return config


def _read_weights(folder: Path) -> dict:
    path = folder / "model.pt"
    if not path.is_file():
        raise ModelFileError(f"{folder} holds no model.pt: not a folder written by pythae's model.save")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or pickled objects other than tensors (never run)
        why = "truncated or corrupted, or not a torch file"
        if isinstance(err, pickle.UnpicklingError) and "unsupported global" in str(err).lower():
            why = "it holds pickled objects other than tensors, refused unread (they could run code)"
        raise ModelFileError(f"{path} is not a pythae weights file ({why})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model_state_dict"), dict):
        raise ModelFileError(f"{path} holds no 'model_state_dict': not a file written by pythae's model.save")
    return payload


def _scalar(state: dict, key: str, folder: Path) -> float:
    """A one-element weight of pythae's state dict (its eps_lf, beta_zero_sqrt, temperature, lbd) as a float."""
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ModelFileError(f"{folder / 'model.pt'} has no one-element weight {key!r}")
    return float(value)


def _settings(cls: type[VAE], config: dict, state: dict, folder: Path) -> dict:
    """Our constructor's keywords for pythae's config (and, where pythae learns them, its weights)."""
    settings = {"latent_dim": config.get("latent_dim"), "input_dim": math.prod(config["input_dim"])}
    settings["hidden_dim"] = PYTHAE_HIDDEN
    if cls is VAE:
        return settings
    settings.update(n_lf=config.get("n_lf"), eps_lf=config.get("eps_lf"), beta_zero=config.get("beta_zero"))
    if cls is HVAE:  # the config holds β₀; a learned ε or √β₀ (learn_eps_lf, learn_beta_zero) is in the weights
        if config.get("learn_eps_lf"):
            settings["eps_lf"] = _scalar(state, "eps_lf", folder)
        if config.get("learn_beta_zero"):
            settings["beta_zero"] = _scalar(state, "beta_zero_sqrt", folder) ** 2
        return settings
    if isinstance(settings["beta_zero"], float | int) and not isinstance(settings["beta_zero"], bool):
        settings["beta_zero"] **= 2  # pythae's RHVAE: the config's beta_zero is √β₀
    return {
        **settings,
        **PYTHAE_RHVAE_FLOW,
        "temperature": config.get("temperature"),
        "regularization": config.get("regularization"),
        "metric_hidden_dim": PYTHAE_METRIC_HIDDEN,
    }


def _layers(model: VAE) -> dict[str, str]:
    """Our layer → pythae's, for the layers ``model`` has."""
    return {**LAYERS, **(METRIC_LAYERS if isinstance(model, RHVAE) else {})}


def _our_state(model: VAE, state: dict, folder: Path) -> dict:
    """pythae's network weights under our names, each checked against our model's shape and for finiteness."""
    path = folder / "model.pt"
    own = model.state_dict()
    ours, expected = {}, set()
    for name, theirs in _layers(model).items():
        for part in ("weight", "bias"):
            key = f"{theirs}.{part}"
            expected.add(key)
            tensor = state.get(key)
            want = tuple(own[f"{name}.{part}"].shape)
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise ModelFileError(f"{path} has no floating-point weight {key!r} of pythae's default MLPs")
            if tuple(tensor.shape) != want:
                raise ModelFileError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, pythae's default MLP for this config has {want}"
                )
            if not torch.isfinite(tensor).all():
                raise ModelFileError(f"{path}: {key} holds non-finite values (NaN or inf): refusing it")
            ours[f"{name}.{part}"] = tensor
    unknown = sorted(set(state) - expected - set(SCALARS[type(model)]))
    if unknown:
        raise ModelFileError(
            f"{path} holds weights that pythae's default {model.model_type} lacks: {', '.join(unknown)}"
        )
    return ours


def _frozen_metric(payload: dict, latent_dim: int, folder: Path) -> dict:
    """The frozen (cᵢ, Mᵢ) of pythae's RHVAE (``centroids`` (N, d), ``M`` (N, d, d) in model.pt), checked: finite,
    matching shapes, every Mᵢ symmetric positive semi-definite (pythae's Mᵢ = L(xᵢ) L(xᵢ)ᵀ; a model whose
    ``update()`` never ran holds the random M of its constructor)."""
    path = folder / "model.pt"
    centroids, M = payload.get("centroids"), payload.get("M")
    if not isinstance(centroids, torch.Tensor) or not isinstance(M, torch.Tensor):
        raise ModelFileError(f"{path} has no frozen metric ('centroids' and 'M' tensors): not a pythae RHVAE file")
    n = len(centroids)
    if centroids.shape != (n, latent_dim) or M.shape != (n, latent_dim, latent_dim) or n == 0:
        raise ModelFileError(
            f"{path}: centroids {tuple(centroids.shape)} and M {tuple(M.shape)} are not (N, {latent_dim}) and "
            f"(N, {latent_dim}, {latent_dim})"
        )
    if not (torch.isfinite(centroids).all() and torch.isfinite(M).all()):
        raise ModelFileError(f"{path}: the frozen metric holds non-finite values (NaN or inf): refusing it")
    M64 = M.double()
    scale = M64.abs().amax(dim=(-2, -1)).clamp(min=1e-30)
    asymmetric = ((M64 - M64.mT).abs().amax(dim=(-2, -1)) > 1e-5 * scale).any()
    if asymmetric or (torch.linalg.eigvalsh(0.5 * (M64 + M64.mT)).amin(-1) < -1e-5 * scale).any():
        raise ModelFileError(
            f"{path}: the frozen M is not symmetric positive semi-definite: pythae's RHVAE sets it in update(), at "
            "the end of each training epoch; this one was never trained"
        )
    return {"centroids": centroids, "M": M}


# ------------------------------------------------------------------------------------------------------ export
#: pythae's one-element weights of each class: name → its value for our model.
SCALARS = {
    VAE: {},
    HVAE: {"eps_lf": lambda m: m.eps_lf, "beta_zero_sqrt": lambda m: math.sqrt(m.beta_zero)},
    RHVAE: {
        "temperature": lambda m: m.temperature,
        "lbd": lambda m: m.regularization,
        "beta_zero_sqrt": lambda m: math.sqrt(m.beta_zero),
    },
}


def to_pythae(model: VAE, folder, *, input_shape: tuple[int, ...] | None = None, pythae_flow: bool = False) -> Path:
    """Write ``model`` as a pythae 0.1.2 model folder (``model_config.json``, ``model.pt``, ``environment.json``,
    all or none: atomic) that ``pythae.models.AutoModel.load_from_folder(folder)`` loads; returns the folder.

    ``input_shape`` is pythae's ``input_dim``, the shape its decoder gives its images (default ``(input_dim,)``;
    MNIST users of pythae write ``(1, 28, 28)``). The likelihood is written as ``reconstruction_loss="bce"``.
    Refused in one line, what pythae's classes cannot express: wider networks than its default MLPs, a stack, an
    RHVAE without a frozen metric, ``learn_step=True`` or ``metric_scale`` other than ``"free"``, and an RHVAE flow
    other than pythae's (``step_bound="none"``, ``n_fixed_point=3``, ``objective="authors"``), unless
    ``pythae_flow=True``, which writes the networks and the metric to run under pythae's own flow."""
    model = check_model(model)
    folder = as_path(folder, "folder")
    pythae_flow = check_bool("pythae_flow", pythae_flow)
    shape = (model.input_dim,) if input_shape is None else tuple(input_shape)
    if not all(isinstance(n, int) and n > 0 for n in shape) or math.prod(shape) != model.input_dim:
        raise ValueError(
            f"input_shape must be positive integers whose product is input_dim={model.input_dim}, got {input_shape!r}"
        )
    _check_exportable(model, pythae_flow)
    writable_folder(folder, "folder")
    config, payload = _pythae_config(model, list(shape)), {"model_state_dict": _pythae_state(model)}
    if isinstance(model, RHVAE):
        payload.update(M=model.M.detach().float().clone(), centroids=model.centroids.detach().float().clone())
    environment = {"name": "EnvironmentConfig", "python_version": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    atomic_write_set(
        {
            folder / "model_config.json": text_writer(json.dumps(config)),
            folder / "environment.json": text_writer(json.dumps(environment)),
            folder / "model.pt": lambda tmp: torch.save(payload, tmp),
        }
    )
    return folder


def _check_exportable(model: VAE, pythae_flow: bool) -> None:
    if model.members is not None:
        raise ValueError(f"a stack of {model.members} models cannot be written as one pythae model: unstack() it first")
    widths = {"hidden_dim": (model.hidden_dim, PYTHAE_HIDDEN)}
    if isinstance(model, RHVAE):
        widths["metric_hidden_dim"] = (model.metric_hidden.out_features, PYTHAE_METRIC_HIDDEN)
    for name, (width, pythae) in widths.items():
        if width > pythae:
            raise ValueError(
                f"{name}={width} is wider than pythae's default MLP ({pythae} units): pythae cannot load it"
            )
    if not isinstance(model, RHVAE):
        return
    if not model.has_frozen_metric:
        raise ValueError(
            "this RHVAE has no frozen metric yet (train it or call freeze_metric): pythae needs its M and centroids"
        )
    lacking = {k: v for k, v in model.scheme().items() if k != "gradient" and v != SCHEME_FREE[k]}
    if lacking:
        raise ValueError(
            f"pythae's RHVAE has no {', '.join(f'{k}={v!r}' for k, v in lacking.items())}: it cannot express this model"
        )
    flow = {k: getattr(model, k) for k in PYTHAE_RHVAE_FLOW if getattr(model, k) != PYTHAE_RHVAE_FLOW[k]}
    if flow and not pythae_flow:
        raise ValueError(
            f"pythae's RHVAE has no {', '.join(f'{k}={v!r}' for k, v in flow.items())} (its flow: "
            f"{', '.join(f'{k}={v!r}' for k, v in PYTHAE_RHVAE_FLOW.items())}): pass pythae_flow=True to write the "
            "networks and the metric to run under pythae's flow"
        )


#: The RHVAE training-scheme options pythae's RHVAE has (the gradient is how a trainer differentiates, not the model).
SCHEME_FREE = {"metric_scale": "free", "learn_step": False}


def _pythae_config(model: VAE, shape: list[int]) -> dict:
    config = {
        "name": f"{model.model_type}Config",
        "input_dim": shape,
        "latent_dim": model.latent_dim,
        "uses_default_encoder": True,
        "uses_default_decoder": True,
        "reconstruction_loss": "bce",
    }
    if isinstance(model, RHVAE):  # pythae's RHVAE config holds √β₀
        return {
            **config,
            "n_lf": model.n_lf,
            "eps_lf": model.eps_lf,
            "beta_zero": math.sqrt(model.beta_zero),
            "temperature": model.temperature,
            "regularization": model.regularization,
            "uses_default_metric": True,
        }
    if isinstance(model, HVAE):
        return {
            **config,
            "n_lf": model.n_lf,
            "eps_lf": model.eps_lf,
            "beta_zero": model.beta_zero,
            "learn_eps_lf": False,
            "learn_beta_zero": False,
        }
    return config


def _padded(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``tensor`` in float32 at the top-left of zeros of ``shape``: extra hidden units with zero weights and bias
    are 0 after the ReLU and add nothing downstream, so the padded network is the same function."""
    out = torch.zeros(shape, dtype=torch.float32)
    out[tuple(slice(0, n) for n in tensor.shape)] = tensor.detach().float()
    return out


def _pythae_state(model: VAE) -> dict:
    """Our weights under pythae's names and at its default MLPs' shapes, with its one-element weights."""
    hidden = {"enc": PYTHAE_HIDDEN, "dec": PYTHAE_HIDDEN, "metric": PYTHAE_METRIC_HIDDEN}
    state = {}
    for name, theirs in _layers(model).items():
        layer = getattr(model, name)
        width = hidden[name.split("_")[0]]
        rows = width if name.endswith("_hidden") else layer.out_features
        cols = layer.in_features if name.endswith("_hidden") else width
        state[f"{theirs}.weight"] = _padded(layer.weight, (rows, cols))
        state[f"{theirs}.bias"] = _padded(layer.bias, (rows,))
    state.update(
        {key: torch.tensor([value(model)], dtype=torch.float32) for key, value in SCALARS[type(model)].items()}
    )
    return state
