"""What a person uses: the command line (``cli``), the notebook widgets (``widgets``), the figures (``plotting``) and
pythae's model folders in and out (``pythae_bridge``). The top layer: no module of the package imports it; the facade
``rhvae/__init__.py`` exports ``from_pythae`` and ``to_pythae`` (tests/test_layering.py)."""
