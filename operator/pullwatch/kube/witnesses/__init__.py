"""The operator's witnesses: each a room of its own (stream -> decode -> observation) that hands
the core one kind of observation through the engine's one interface, ``Engine.observe``.

* ``pods.py``: the Pod witness - what actually runs (``Running``), by digest, at start-up too.
"""
