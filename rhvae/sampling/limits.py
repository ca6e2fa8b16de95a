"""The work limit the package's samplers share (``rhvae.sampling.hmc`` and ``rhvae.sampling.geometric``)."""

MAX_LEAPFROG_STEPS = 1e10
"""The most chain-leapfrog steps one call of a sampler may take (the paper's 100 samples × 150 steps × 10 is 1.5e5)."""
