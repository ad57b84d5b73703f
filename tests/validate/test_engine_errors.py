"""Root causes of vLLM start-up failures, read from worker logs as vLLM 0.26 writes them (the lines below are from
an H100 run where two engines started at once; paths shortened)."""

from __future__ import annotations

from bot.stages.validate.engine_errors import explain_load_error, last_run, root_cause

FAILED_RUN = """
=== validate_worker 2026-11-24 01:20:18
(EngineCore pid=2669) INFO 11-24 01:20:52 [model_runner.py:305] Model loading took 0.18 GiB and 2.682059 seconds
(EngineCore pid=2669) INFO 11-24 01:20:55 [gpu_worker.py:560] Available KV cache memory: -8.27 GiB
(EngineCore pid=2669) ERROR 11-24 01:20:55 [core.py:1330] EngineCore failed to start.
(EngineCore pid=2669) ERROR 11-24 01:20:55 [core.py:1330]     raise ValueError(
(EngineCore pid=2669) ERROR 11-24 01:20:55 [core.py:1330] ValueError: No available memory for the cache blocks. Try \
increasing `gpu_memory_utilization` when initializing the engine.
"""
GOOD_RUN = """
=== validate_worker 2026-11-24 01:33:10
(EngineCore pid=6411) INFO 11-24 01:33:48 [gpu_worker.py:560] Available KV cache memory: 23.15 GiB
"""
ENGINE_ERROR = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"


def test_negative_kv_cache_names_the_other_process():
    cause = root_cause(FAILED_RUN)
    assert cause.startswith("vLLM found no GPU memory left for the KV cache (-8.27 GiB)")
    assert "another process" in cause and "gpu_memory_utilization" in cause


def test_only_the_last_worker_run_counts():
    assert last_run(FAILED_RUN + GOOD_RUN).startswith("=== validate_worker 2026-11-24 01:33:10")
    assert root_cause(FAILED_RUN + GOOD_RUN) is None  # the rerun loaded: the old failure is not its cause
    assert root_cause(GOOD_RUN + FAILED_RUN) is not None


def test_memory_released_by_another_process_during_profiling():
    log = ("=== validate_worker 2026-11-24 01:26:40\n(EngineCore pid=4576) ERROR 11-24 01:27:09 [core.py:1330] "
           "AssertionError: Error in memory profiling. Initial free memory 53.96 GiB, current free memory 75.85 GiB. "
           "This happens when other processes sharing the same container release GPU memory while vLLM is "
           "profiling during initialization.\n")
    assert root_cause(log) == ("vLLM's memory profile was upset by another process (free GPU memory went from 53.96 "
                               "to 75.85 GiB while this engine started): validate with the GPU to itself")


def test_out_of_memory_and_other_engine_errors():
    oom = ("=== validate_worker x\n(EngineCore pid=1) ERROR 11-24 [core.py:1] torch.OutOfMemoryError: CUDA out of "
           "memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB\n")
    assert root_cause(oom).startswith("the GPU ran out of memory while the engine started: torch.OutOfMemoryError")
    other = ("=== validate_worker x\n(EngineCore pid=7) ERROR 11-24 01:00:00 [core.py:1330] "
             "NotImplementedError: no kernel for this scheme\n")
    assert root_cause(other) == "engine error: NotImplementedError: no kernel for this scheme"
    assert root_cause("=== validate_worker x\nINFO all fine\n") is None


def test_explain_load_error_puts_the_cause_first(tmp_path):
    log = tmp_path / "validate-fp8-dynamic.log"
    log.write_text(FAILED_RUN)
    explained = explain_load_error(ENGINE_ERROR, log)
    assert explained.startswith("vLLM found no GPU memory left") and explained.endswith(f"[{ENGINE_ERROR}]")
    assert explain_load_error(explained, log) == explained  # not appended twice
    assert explain_load_error(ENGINE_ERROR, tmp_path / "missing.log") == ENGINE_ERROR
    log.write_text(GOOD_RUN)
    assert explain_load_error(ENGINE_ERROR, log) == ENGINE_ERROR
