"""Every public function that takes images checks its pixels as the models' forward does (one
``rhvae.validation.check_pixels``): finite values in [0, 1], the shape it accepts, at least one image (two for the
distribution metrics). Float pixels of 0–255 get a line that says so; each refusal is one line naming the argument.
Real MNIST digits (the ``metric`` experiment's), an untrained small VAE and the shipped quality classifier."""

import numpy as np
import pytest
import torch

import rhvae
from rhvae.experiments import augmentation, clustering, data, interpolation, quality
from rhvae.validation import check_pixels

DATA = rhvae.experiment_data("metric", n_per_class=10)  # 3 classes: 24 training and 6 test digits
X, Y = DATA.train.x, DATA.train.y
torch.manual_seed(0)
VAE = rhvae.VAE(hidden_dim=8)
CODES = {"VAE": VAE.encode(X)[0].detach()}
CLF = quality.load_classifier()
KNOWN = (X[:12], Y[:12])


def first(x):
    """The first image of a batch (anything else as it is)."""
    return x[0] if isinstance(x, torch.Tensor) and x.ndim == 2 else x


def call(function, argument):
    """``function`` called with ``argument`` for the images it is tested on (named ``name``), good values for the
    rest: (call, name)."""
    calls = {
        "quality_score": (lambda x: quality.quality_score(x, [0, 1, 2], CLF), "images"),
        "generation_score": (lambda x: quality.generation_score(x, [0, 1, 2], CLF), "images"),
        "features": (lambda x: quality.features(x, CLF), "images"),
        "predict_proba": (lambda x: CLF.predict_proba(x), "images"),
        "accuracy": (lambda x: quality.accuracy(CLF.net, x, Y), "x"),
        "generation_metrics(generated)": (lambda x: quality.generation_metrics(x, X, CLF), "generated_images"),
        "generation_metrics(real)": (lambda x: quality.generation_metrics(X, x, CLF), "real_images"),
        "labelled_images": (lambda x: data.labelled_images(x, Y), "x"),
        "classic_augmentation": (lambda x: augmentation.classic_augmentation(x, Y, 2), "x"),
        "train_classifier(x)": (lambda x: augmentation.train_classifier("mlp", x, Y, *KNOWN, steps=1), "x"),
        "train_classifier(x_val)": (lambda x: augmentation.train_classifier("cnn", *KNOWN, x, Y, steps=1), "x_val"),
        "arm_classifier": (lambda x: augmentation.arm_classifier({}, x, Y, DATA.test, "unused", False), "x"),
        "interpolation_table": (
            lambda x: interpolation.interpolation_table({"VAE": VAE}, None, x, Y, CODES, CLF, n_pairs=1, n_points=3),
            "x_test",
        ),
        "decoded_paths": (
            lambda x: interpolation.decoded_paths({"VAE": VAE}, first(x), X[1], n_points=3),
            "x_a",
        ),
        "clustering_table": (lambda x: clustering.clustering_table({"VAE": VAE}, x, Y, n_init=1), "x"),
        "VAE forward": (lambda x: VAE(x), "x"),
    }
    function, name = calls[function]
    return (lambda: function(argument)), name


FUNCTIONS = [
    "quality_score",
    "generation_score",
    "features",
    "predict_proba",
    "accuracy",
    "generation_metrics(generated)",
    "generation_metrics(real)",
    "labelled_images",
    "classic_augmentation",
    "train_classifier(x)",
    "train_classifier(x_val)",
    "arm_classifier",
    "interpolation_table",
    "decoded_paths",
    "clustering_table",
    "VAE forward",
]


def with_nan(x):
    x = x.clone()
    x[0, 100] = float("nan")
    return x


def with_inf(x):
    x = x.clone()
    x[0, 0] = float("inf")
    return x


#: (case, images from the good ones, error, words the message must hold)
BAD = [
    ("x * 255", lambda x: x * 255, ValueError, ["must hold pixel values in [0, 1]", "[0, 255]", "divide", "by 255"]),
    ("negative pixels", lambda x: x - 0.5, ValueError, ["must hold pixel values in [0, 1]", "got pixels in [-0.5, "]),
    ("a NaN pixel", with_nan, ValueError, ["must hold pixel values in [0, 1]", "1 non-finite pixel"]),
    ("an infinite pixel", with_inf, ValueError, ["must hold pixel values in [0, 1]", "1 non-finite pixel"]),
    ("x * 1000", lambda x: x * 1000, ValueError, ["must hold pixel values in [0, 1]", "got pixels in [0, 1000]"]),
    ("a (n, 700) tensor", lambda x: x[:, :700], ValueError, ["must be a tensor of shape (batch, 784)", "(24, 700)"]),
    ("a boolean tensor", lambda x: x > 0.5, TypeError, ["must hold real pixel values in [0, 1]", "torch.bool"]),
    ("None", lambda x: None, TypeError, ["must be a tensor or an array of numbers, got NoneType"]),
    ("a string", lambda x: "digits.png", TypeError, ["must be a tensor or an array of numbers, got str"]),
]


@pytest.mark.parametrize("case, make, error, words", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_bad_pixels_are_refused_in_one_line_naming_the_argument(function, case, make, error, words):
    run, name = call(function, make(X))
    if function == "decoded_paths" and case.startswith("a (n, 700)"):
        words = ["x_a must be one flattened image of shape (784,), got (700,)"]
    with pytest.raises(error) as caught:
        run()
    message = str(caught.value)
    assert message.startswith(f"{name} ") and "\n" not in message, message
    for word in words:
        assert word in message, message
    if case != "x * 255":
        assert "255" not in message, message  # the 0-255 hint only where the pixels look like it


@pytest.mark.parametrize("function", [f for f in FUNCTIONS if f != "decoded_paths"])
def test_an_empty_batch_is_refused_in_one_line(function):
    run, name = call(function, X[:0])
    with pytest.raises(ValueError) as caught:
        run()
    message = str(caught.value)
    assert message.startswith(f"{name} ") and "\n" not in message, message
    assert "at least one image, got an empty batch of shape (0, 784)" in message or "needs at least 2 images" in message


@pytest.mark.parametrize("function", [f for f in FUNCTIONS if f != "arm_classifier"])  # it needs a whole spec
def test_the_good_digits_pass(function):
    """The check refuses only bad pixels: the real digits themselves go through every function."""
    run, _ = call(function, X)
    run()


def test_the_quality_scores_of_valid_images_are_those_of_before_the_check():
    """uint8 0-255 images are still divided by 255, and (n, 28, 28) and (n, 1, 28, 28) images are flattened: the
    same scores as the (n, 784) floats."""
    as_uint8 = (X * 255).round().to(torch.uint8)
    assert torch.equal(quality.as_images(as_uint8), as_uint8.float() / 255)
    flat = quality.quality_score(X, [0, 1, 2], CLF)
    for images in (X.reshape(-1, 28, 28), X.reshape(-1, 1, 28, 28), X.double(), X.numpy()):
        assert quality.quality_score(images, [0, 1, 2], CLF) == flat
    metrics = quality.generation_metrics(X, DATA.test.x, CLF)
    assert metrics == quality.generation_metrics(X.reshape(-1, 1, 28, 28), DATA.test.x.numpy(), CLF)


def test_the_255_hint_appears_only_for_pixels_that_look_like_0_255():
    hint = "they look like 0-255 pixels: divide 0-255 images by 255"
    for x, hinted in ((X * 255, True), (X * 2, True), (X * 256, False), (X - 0.5, False), (X * 255 - 1, False)):
        with pytest.raises(ValueError) as caught:
            check_pixels(x, "images")
        assert (hint in str(caught.value)) is hinted, str(caught.value)
    with pytest.raises(ValueError, match="images must hold pixel values in"):
        check_pixels(torch.full((2, 784), 255, dtype=torch.uint8))  # integer pixels must be 0 or 1 unless uint8=True
    assert torch.equal(check_pixels(torch.full((2, 784), 255, dtype=torch.uint8), uint8=True), torch.ones(2, 784))
    assert torch.equal(check_pixels(np.zeros((3, 784), dtype=np.int64)), torch.zeros(3, 784, dtype=torch.int64))
