"""The probes: one module per probe, each registering one function with ``nncheck.registry.probe``.

``nncheck.registry.registry()`` imports every module of this package whose name does not start with ``_``; modules
starting with ``_`` hold helpers shared by several probes. See ``nncheck/kit.py`` for what a probe author uses.
"""
