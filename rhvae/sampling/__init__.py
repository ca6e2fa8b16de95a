"""Generation: prior sampling, the Riemannian HMC on the learned metric (``hmc``), and the two stand-ins for its
target when there are many centroids: the truncated metric (``truncation``) and the grid target (``grid_target``).

Imports the models only (tests/test_layering.py)."""
