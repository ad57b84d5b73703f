"""bot: quantize Hub models with llm-compressor, validate them in vLLM, publish them with model cards."""

__version__ = "0.1.0"
