"""The card's "Serve it fastest" part, rendered from the serving search in the manifest: every number is the record's,
best-of-N is labelled, the bandwidth limit is the record's, nothing is named fastest that the record did not choose,
and the part is hidden when no search ran."""

from __future__ import annotations

from card_tables import md_tables, number
from test_card_render import readme

from bot.stages.card.render import render_card


def _section(text: str) -> str:
    start = text.index("## Serve it fastest")
    return text[start:text.index("## All variants", start)]


def test_the_part_reads_the_record(gpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "w4a16-gptq", settings)
    text = readme(rundir, "w4a16-gptq")
    part = _section(text)
    search = rundir.read_variant("w4a16-gptq").validate_.serve_search
    assert "the best of 4 configurations" in part and "NVIDIA H100 80GB HBM3" in part and "vLLM 0.26.0" in part
    rows = {row["Workload"]: row for row in md_tables(part)["Workload"]}
    latency = rows["Latency (batch 1, 128 in / 256 out)"]
    chosen = search.choices["batch1"]
    marlin = search.config(chosen.config_id)
    assert chosen.separated and marlin.label in latency["Fastest measured"]
    assert number(latency["Tokens/s (95% interval)"]) == round(marlin.stats["batch1"].mean, 1)
    assert f"{marlin.stats['batch1'].low:.1f}–{marlin.stats['batch1'].high:.1f}" in latency["Tokens/s (95% interval)"]
    assert number(latency["vs vLLM defaults"]) == round(chosen.gain, 2)
    assert number(latency["vs BF16 base (its defaults)"]) == round(chosen.vs_base, 2)
    throughput = rows["Throughput (256 × 1,024 in / 256 out)"]
    assert not search.choices["batched"].separated
    assert throughput["Fastest measured"].startswith("the defaults") and throughput["vs vLLM defaults"] == "—"
    long = rows["Long context, batched (16 × 16,384 in / 256 out)"]
    assert "accuracy was not measured with it" in long["Fastest measured"]  # the FP8 KV cache is flagged
    assert "--linear-backend marlin\n" in part and "# batched output: the defaults are as fast" in part
    r = search.roofline
    assert f"at most {r.limit_tokens_per_s:.1f} tokens/s" in part and r.bandwidth_source in part
    configs = {row["Configuration"]: row for row in md_tables(part)["Configuration"]}
    assert set(configs) == {c.label for c in search.configs}
    for c in search.configs:
        assert number(configs[c.label]["Batch-1 decode"]) == round(c.stats["batch1"].mean, 1)
    for s in search.skipped:
        assert s.label in part
    assert 'The fastest configurations measured are under "Serve it fastest"' in text
    assert "at **its default configuration**" in text  # the speed table is the defaults, labelled


def test_hidden_without_a_search(gpu_run, cpu_run):
    rundir, settings = gpu_run
    render_card(rundir, "fp8-dynamic", settings)
    text = readme(rundir, "fp8-dynamic")
    assert "## Serve it fastest" not in text and "Serve it fastest" not in text
    rundir, settings = cpu_run
    render_card(rundir, "w4a16-gptq", settings)
    assert "Serve it fastest" not in readme(rundir, "w4a16-gptq")


def test_a_search_that_did_not_run_is_hidden(gpu_run):
    rundir, settings = gpu_run
    vm = rundir.read_variant("w4a16-gptq")
    vm.validate_.serve_search.status = "not-run"
    rundir.write_variant(vm)
    render_card(rundir, "w4a16-gptq", settings)
    assert "## Serve it fastest" not in readme(rundir, "w4a16-gptq")


def test_nothing_is_named_fastest_that_the_record_did_not_choose(gpu_run):
    rundir, settings = gpu_run
    vm = rundir.read_variant("w4a16-gptq")
    search = vm.validate_.serve_search
    search.choices["batch1"] = search.choices["batch1"].model_copy(update={"config_id": "default", "separated": False,
                                                                          "gain": None})
    search.skipped[0] = search.skipped[0].model_copy(update={"kind": "budget", "reason": "over the time budget"})
    search.status = "partial"
    rundir.write_variant(vm)
    render_card(rundir, "w4a16-gptq", settings)
    part = _section(readme(rundir, "w4a16-gptq"))
    latency = md_tables(part)["Workload"][0]
    assert latency["Fastest measured"].startswith("the defaults") and latency["vs vLLM defaults"] == "—"
    assert "--linear-backend marlin\n" not in part.split("```")[1]  # the commands block holds the defaults' command
    assert "not of every configuration" in part  # a partial search says so
