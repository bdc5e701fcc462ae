"""autoglm-engine: PyTorch checkpoint -> ONNX -> parity -> INT8 -> TensorRT engine, each artefact with
a manifest (``<artefact>.manifest.json``).

Modules, one concept each: ``checkpoint`` (digest, tiny GLM), ``export`` (torch -> ONNX), ``verify``
(parity measures), ``quantize`` (INT8 with ONNX Runtime), ``tensorrt_build`` (engine and its parity),
``manifest`` (standard library only), ``pipeline`` (the CPU steps of a build Job), ``serving`` (the
Triton Python-backend model) and ``cli``. Importing the package imports nothing heavy.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
