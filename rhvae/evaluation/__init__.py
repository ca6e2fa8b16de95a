"""What a trained model is worth: log-likelihoods (exact in 2-D and importance-sampled), the ELBO and
reconstruction errors (``likelihood``), flow diagnostics (``diagnostics``) and the latent geometry of a learned
metric (``geometry``).

Imports the models only (tests/test_layering.py)."""
