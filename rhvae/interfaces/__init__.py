"""What a person uses: the command line (``cli``), the notebook widgets (``widgets``) and the figures
(``plotting``). The top layer: nothing in the package imports it (tests/test_layering.py)."""
