"""EM Arena: score defenses against emergent misalignment, identically.

Importing this package is cheap: it never imports torch, transformers or vLLM.
Heavy backends are registered as "module:attr" strings and imported on first use.
"""

__version__ = "0.1.0"
