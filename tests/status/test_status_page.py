"""`bot status --html DIR`: the static status site, built from real run directories and a real ledger
(tests/status/statusfakes.py), read back with html.parser, then rendered by a headless Chromium."""

from __future__ import annotations

import functools
import http.server
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from sitehtml import internal_targets, parse, variant_rows  # noqa: E402
from statusfakes import (  # noqa: E402
    AWQ_ERROR, GPTQ_COLLECTION, GPTQ_URL, NEXT_ID, SKIP_ID, SKIP_REASON, make_runs,
)

from bot.cli import main  # noqa: E402
from bot.stages.card.chart import CHART_NAME  # noqa: E402

RUN = "acme--Llama-Demo-8B-Instruct@0123456789ab"
NEXT_RUN = "acme--Next-3B@feedfacecafe"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("status")
    settings, rundir = make_runs(root)
    out = root / "site"
    assert main(["status", "--runs-dir", str(settings.runs_dir), "--html", str(out)]) == 0
    return out, rundir


def _manifest(rundir, variant):
    vm = rundir.read_variant(variant)
    return vm, vm.validate_.comparison if vm.validate_ else None


def test_index_rows_hold_the_manifests_numbers(site):
    out, rundir = site
    html = (out / "index.html").read_text(encoding="utf-8")
    rows = variant_rows(parse(html), RUN)
    assert set(rows) == set(rundir.variants())

    vm, comp = _manifest(rundir, "w4a16-gptq")
    gptq = rows["w4a16-gptq"].cells
    lo, hi = comp.mean_recovery_ci
    assert gptq["c-recovery"] == f"{comp.mean_recovery:.1f}% [{lo:.1f}, {hi:.1f}]" == "98.3% [96.9, 99.4]"
    fid = vm.validate_.fidelity
    assert gptq["c-fidelity"] == f"KL {fid.kl_mean:.3g}, top-1 {fid.top1_agreement:.1%}" == "KL 0.0214, top-1 94.1%"
    assert gptq["c-speedup1"] == f"{comp.speedup_batch1:.2f}×" and gptq["c-speedupn"] == f"{comp.speedup_batched:.2f}×"
    assert gptq["c-size"].startswith(f"{vm.quantize.size_bytes / 1e9:.2f} GB") and f"{comp.size_ratio:.2f}×" in gptq["c-size"]
    assert gptq["c-state"] == "published"
    assert rows["w4a16-gptq"].links["c-repo"] == GPTQ_URL == vm.publish.url
    assert rows["w4a16-gptq"].links["c-collection"] == f"https://huggingface.co/collections/{GPTQ_COLLECTION}"
    assert gptq["c-last"] == "2026-11-03 10:44 UTC"  # the publish record's finish

    # an older bot's manifest: no CI, no fidelity, speed measured differently: "-", the reason as the cell's title
    vm, comp = _manifest(rundir, "w8a8-int8")
    int8 = rows["w8a8-int8"]
    assert int8.cells["c-recovery"] == f"{comp.mean_recovery:.1f}%" and "[" not in int8.cells["c-recovery"]
    assert int8.cells["c-fidelity"] == "-"
    assert int8.cells["c-speedup1"] == int8.cells["c-speedupn"] == "-"
    assert int8.titles["c-speedup1"] == comp.speed_incomparable_reason
    assert int8.cells["c-state"] == "validated" and int8.cells["c-repo"] == "-"

    vm, comp = _manifest(rundir, "fp8-dynamic")
    fp8 = rows["fp8-dynamic"].cells
    assert fp8["c-state"].startswith("inconclusive") and vm.validate_.gate.reasons[0] in fp8["c-state"]
    assert fp8["c-recovery"] == "99.7% [95.1, 100.3]"

    nv = rows["nvfp4"].cells
    assert nv["c-state"] == "rejected accuracy not measured: lm-eval failed"
    assert nv["c-recovery"] == nv["c-fidelity"] == "-"
    assert rows["w4a16-autoround"].cells["c-state"] == "running quantize since 2026-11-03 11:02 UTC"

    awq = rows["w4a16-awq"].cells
    assert awq["c-state"] == f"failed quantize: {AWQ_ERROR}"  # the markup reads back as text...
    assert "<script>" not in html and "&lt;script&gt;" in html  # ...because it was escaped

    head = {r.run: r for r in parse(html).rows if r.kind == "model"}[RUN].cells["c-run"]
    assert head.startswith("acme/Llama-Demo-8B-Instruct 0123456789ab watcher: in-flight (running here)")
    assert "last run 2026-11-03 11:02 UTC" in head and "failures: 1 of 6 variants" in head

    # the watcher's dispatched model: ledger states only, no number
    nxt = variant_rows(parse(html), NEXT_RUN)
    assert set(nxt) == {"w4a16-gptq", "fp8-dynamic"}
    for row in nxt.values():
        assert row.cells["c-state"] == "queued"
        assert {row.cells[c] for c in ("c-recovery", "c-fidelity", "c-speedup1", "c-speedupn", "c-size")} == {"-"}
    assert NEXT_ID in html
    skips = [r for r in parse(html).rows if r.kind == "skip"]
    assert [(s.cells["model"], s.cells["why"]) for s in skips] == [(SKIP_ID, SKIP_REASON)]


def test_every_internal_link_resolves_and_the_run_page_has_the_cards_chart(site):
    out, rundir = site
    pages = sorted(out.rglob("*.html"))
    assert {p.relative_to(out).as_posix() for p in pages} == {
        "index.html", f"runs/{RUN}/index.html", f"runs/{NEXT_RUN}/index.html"}
    checked = 0
    for page in pages:
        parsed = parse(page.read_text(encoding="utf-8"))
        for target in internal_targets(page, parsed.refs):
            assert target.is_file(), f"{page.relative_to(out)} links to missing {target}"
            assert out.resolve() in target.parents, f"{page} links outside the site: {target}"
            checked += 1
    assert checked >= 8  # stylesheets, index <-> run pages, the chart
    run_page = out / "runs" / RUN / "index.html"
    parsed = parse(run_page.read_text(encoding="utf-8"))
    assert "chart.png" in parsed.refs
    card_chart = rundir.card_dir("w4a16-gptq") / CHART_NAME
    assert (run_page.parent / "chart.png").read_bytes() == card_chart.read_bytes()  # copied, not redrawn
    gates = {r.variant: r.cells for r in parsed.rows if r.kind == "gate"}
    gate = rundir.read_variant("fp8-dynamic").validate_.gate
    assert gates["fp8-dynamic"]["c-rule"] == gate.rule and gates["fp8-dynamic"]["c-gate"].startswith(
        "inconclusive after 3 round(s): ")
    assert gates["w8a8-int8"]["c-rule"] == "-"  # an older bot recorded no rule
    assert variant_rows(parsed)["w4a16-gptq"].cells == variant_rows(parse((out / "index.html").read_text()), RUN)[
        "w4a16-gptq"].cells
    assert "no variant of this run has a size" in (out / "runs" / NEXT_RUN / "index.html").read_text()


def test_chart_is_drawn_when_the_card_stage_wrote_none_and_the_site_is_replaced_whole(tmp_path, capsys):
    settings, rundir = make_runs(tmp_path)
    (rundir.card_dir("w4a16-gptq") / CHART_NAME).unlink()
    out = tmp_path / "site"
    assert main(["status", "--runs-dir", str(settings.runs_dir), "--html", str(out)]) == 0
    chart = out / "runs" / RUN / "chart.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "stale.html").write_text("from an earlier run")
    assert main(["status", "--runs-dir", str(settings.runs_dir), "--html", str(out)]) == 0
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]  # no staging left behind

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert main(["status", "--runs-dir", str(settings.runs_dir), "--html", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not empty and holds no status site" in err and "hint:" in err
    assert (other / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("chromium is not installed (`bash scripts/install.sh test` installs Debian's chromium with "
                    "apt-get; it could not be installed here)")
    return found


@pytest.fixture
def served(site):
    out, _ = site
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_headless_chromium_renders_the_site_and_a_phone_screenshot(served, site, tmp_path):
    binary = _chromium()
    out, rundir = site
    proc = _browser(binary, tmp_path / "profile", "--dump-dom", f"{served}/index.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = variant_rows(parse(proc.stdout), RUN)  # the DOM the browser built, not the file
    assert set(rows) == set(rundir.variants())
    assert rows["w4a16-gptq"].cells["c-recovery"] == "98.3% [96.9, 99.4]"
    assert set(variant_rows(parse(proc.stdout), NEXT_RUN)) == {"w4a16-gptq", "fp8-dynamic"}

    proc = _browser(binary, tmp_path / "profile", "--dump-dom", f"{served}/runs/{RUN}/index.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "chart.png" in parse(proc.stdout).refs

    shot = tmp_path / "phone.png"
    proc = _browser(binary, tmp_path / "profile", "--hide-scrollbars", "--window-size=390,844",
                    f"--screenshot={shot}", f"{served}/index.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _png_size(shot) == (390, 844)
    assert shot.stat().st_size > 10_000  # a page was drawn, not a blank frame


def test_the_watch_workflow_deploys_the_site_with_the_pages_actions():
    wf = yaml.load((Path(__file__).resolve().parents[2] / ".github" / "workflows" / "watch.yml").read_text(),
                   Loader=yaml.BaseLoader)
    steps = wf["jobs"]["watch"]["steps"]
    build = next(s for s in steps if "bot status --html" in s.get("run", ""))
    site_dir = build["run"].split("--html", 1)[1].split()[0]
    uses = {s.get("uses", "").split("@")[0]: s for s in steps}
    assert "actions/configure-pages" in uses
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == site_dir
    assert steps.index(build) > next(i for i, s in enumerate(steps) if "bot watch" in s.get("run", ""))
    deploy = wf["jobs"]["pages"]
    assert deploy["needs"] == "watch" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
