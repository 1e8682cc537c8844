"""The package version, in a module of its own so that every layer may read it: the package's
``__init__`` re-exports the top-level API (``train``, ``evaluate``, ``Segmenter``) and so sits
above everything (docs/architecture.md)."""

__version__ = "0.1.0"
