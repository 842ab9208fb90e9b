"""The tools: users of the library, each with a command line (``python -m fastnst.NAME``, ``fastnst-NAME``).

export (ONNX / .pt2 for deployment), evaluate (a quality report), optimize (Gatys et al.'s pixel optimisation,
the quality reference), prepare (a pre-resized dataset), info (what a model file holds), bench (speed,
side by side with a baseline), demo (``make demo``).
"""
