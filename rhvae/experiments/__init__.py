"""The paper's experiments: their registry and parameters, the real MNIST subsets, the quality classifier, the
model cache, a notebook's run folder, the tables and the report, the augmentation experiment, the papermill
command and the Dask sweep.

Above the models, sampling, evaluation, training and persistence; below the interfaces (tests/test_layering.py)."""
