"""Hydra's config folder (train.py reads it from here), also installed as the package ``fastnst.conf`` so that
the tools find the presets after a regular install (see fastnst/presets.py and pyproject.toml)."""
