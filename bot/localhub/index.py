"""`index.html` at the root of the local Hub: the published repos, their cards rendered, their history."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import markdown
import yaml

from bot.atomicfile import atomic_write_text

if TYPE_CHECKING:
    from bot.localhub.storage import HubStorage

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_RELATIVE_LINK = re.compile(r'(src|href)="(?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)([^"]+)"')
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
section{border-top:2px solid #444;margin-top:2rem}code,pre{background:#f4f4f4}pre{padding:.5rem;overflow:auto}
.card img{max-width:100%}.muted{color:#777}
"""


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(front matter as a dict, body). Unparseable or non-mapping YAML counts as no front matter."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}, text[match.end():]
    return (data if isinstance(data, dict) else {}), text[match.end():]


def render_card(text: str, files_prefix: str) -> str:
    """README body as HTML; relative links and images point into the repo's `files/` checkout."""
    _meta, body = split_front_matter(text)
    rendered = markdown.markdown(body, extensions=["tables", "fenced_code"])
    return _RELATIVE_LINK.sub(lambda m: f'{m.group(1)}="{files_prefix}{m.group(2)}"', rendered)


def render_index(storage: "HubStorage") -> str:
    esc = html.escape
    rows: list[str] = []
    sections: list[str] = []
    repos = storage.list_repos()
    for repo_id in repos:
        meta = storage.meta(repo_id)
        head = storage.refs(repo_id)["branches"].get("main")
        history = storage.history(repo_id, head) if head else []
        prefix = f"repos/{repo_id}/files/"
        anchor = repo_id.replace("/", "--")
        rows.append(
            f'<tr><td><a href="#{esc(anchor)}">{esc(repo_id)}</a></td><td>{esc(meta["lastModified"])}</td>'
            f"<td><code>{esc((head or '')[:12])}</code></td><td>{len(history)}</td>"
            f'<td><a href="{esc(prefix)}">files</a></td></tr>'
        )
        readme = storage.repo_dir(repo_id) / "files" / "README.md"
        card = render_card(readme.read_text(encoding="utf-8", errors="replace"), prefix) if readme.exists() else (
            '<p class="muted">no README.md</p>'
        )
        meta_yaml = ""
        if readme.exists():
            front, _ = split_front_matter(readme.read_text(encoding="utf-8", errors="replace"))
            if front:
                dumped = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
                meta_yaml = f"<details><summary>metadata</summary><pre>{esc(dumped)}</pre></details>"
        commits = "".join(
            f"<li><code>{esc(c.sha[:12])}</code> {esc(c.date)} {esc(c.author)}: {esc(c.title)}"
            f' <span class="muted">(+{len(c.changed)} / -{len(c.deleted)})</span></li>'
            for c in history
        )
        sections.append(
            f'<section id="{esc(anchor)}"><h2>{esc(repo_id)}</h2>{meta_yaml}<div class="card">{card}</div>'
            f"<details><summary>history ({len(history)} commits)</summary><ul>{commits}</ul></details></section>"
        )
    collections = "".join(
        f"<li>{esc(c['title'])} <span class=\"muted\">({esc(c['slug'])})</span><ul>"
        + "".join(
            f"<li>{esc(i['id'])}{': ' + esc(i['note']['text']) if i.get('note') else ''}</li>" for i in c["items"]
        )
        + "</ul></li>"
        for c in storage.collections.by_owner()
    )
    table = (
        "<table><tr><th>repo</th><th>last modified</th><th>head</th><th>commits</th><th></th></tr>"
        + "".join(rows) + "</table>" if rows else '<p class="muted">nothing published yet</p>'
    )
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Local Hub</title>"
        f"<style>{_STYLE}</style></head><body><h1>Local Hub</h1>"
        f'<p class="muted">{len(repos)} repos under {esc(str(storage.root))}</p>{table}'
        + (f"<h2>Collections</h2><ul>{collections}</ul>" if collections else "")
        + "".join(sections) + "</body></html>\n"
    )


def write_index(storage: "HubStorage") -> None:
    with storage.lock:
        atomic_write_text(storage.root / "index.html", render_index(storage))
