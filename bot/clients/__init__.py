"""The only modules that do network or process I/O: hub (Hugging Face Hub or the local target), github,
process (worker subprocesses in the quantize and serve interpreters)."""
