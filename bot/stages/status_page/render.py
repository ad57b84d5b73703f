"""Write the status site: `index.html`, `style.css` and `runs/<run id>/index.html` (with the run's chart).

The chart is the card stage's PNG when it drew one under `<variant>/card/`, else drawn here with the same
module (`bot.stages.card.chart`). The site is built in a sibling folder and swapped in whole, so a reader (or
the Pages upload) never sees half of it; a directory that is not a status site is never replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2

from bot.config import DEFAULT_TEMPLATES, Settings
from bot.errors import ConfigError, StageError
from bot.rundir import RunDir, atomic_write_text
from bot.stages.card.chart import draw_chart
from bot.stages.card.data import RunData
from bot.stages.status_page.model import STATES, RunView, SiteView

TEMPLATES = DEFAULT_TEMPLATES / "status"
MARKER = ".bot-status-site"  # written into every site: only such a directory is replaced
CHART_FILE = "chart.png"


def _env(templates: Path) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                              autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _render(env: jinja2.Environment, name: str, **context: Any) -> str:
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"status template {name} not found", path=str(TEMPLATES),
                          hint="reinstall the bot (templates/status/ ships with it)") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"undefined status template variable: {exc.message}", path=str(TEMPLATES / name),
                          hint="a status template may use only the fields of bot.stages.status_page.model") from None


def _chart(run: RunView, settings: Settings, page_dir: Path) -> RunView:
    """Put the run's chart beside its page: the card stage's PNG, or one drawn from the manifests."""
    target = page_dir / CHART_FILE
    if run.chart_source is not None:
        shutil.copyfile(run.chart_source, target)
        return replace(run, chart=CHART_FILE)
    if run.rundir is None:
        return run
    try:
        drawn = draw_chart(RunData.load(RunDir(run.rundir), settings), current="", path=target)
    except (StageError, KeyError, ValueError):
        drawn = False  # a run without the facts a chart needs: its page says so
    return replace(run, chart=CHART_FILE if drawn else None)


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file", hint="pass a directory for --html")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise ConfigError(f"{out_dir} is not empty and holds no status site written by bot",
                          hint="pass a new or empty directory for --html (its content is replaced each time)")


def _swap(staging: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_site(settings: Settings, out_dir: Path) -> Path:
    """Collect the site from the ledger and the run manifests and write it (`bot status --html`, the demo)."""
    from bot.stages.status_page.model import collect_site

    return write_site(collect_site(settings), settings, out_dir)


def write_site(site: SiteView, settings: Settings, out_dir: Path) -> Path:
    """Render the whole site into `out_dir` (replaced in one rename); returns the index page."""
    out_dir = Path(out_dir).absolute()
    _check_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    env = _env(TEMPLATES)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        runs = []
        for run in site.runs:
            page_dir = staging / Path(run.page).parent
            page_dir.mkdir(parents=True, exist_ok=True)
            run = _chart(run, settings, page_dir)
            runs.append(run)
            atomic_write_text(staging / run.page, _render(env, "run.html.j2", site=site, run=run, root="../../",
                                                          states=STATES))
        site = replace(site, runs=tuple(runs))
        atomic_write_text(staging / "index.html", _render(env, "index.html.j2", site=site, root="", states=STATES))
        shutil.copyfile(TEMPLATES / "style.css", staging / "style.css")
        (staging / MARKER).write_text("written by `bot status --html`; replaced whole on each run\n")
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would keep a web server out
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "index.html"
