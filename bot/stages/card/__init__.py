"""The card stage: model cards (and chart) rendered from a run's manifests alone.

data (RunData: the manifests read once) -> compare/view (what the card says) -> format (one place for how numbers
read) -> render (Jinja, StrictUndefined) ; checks (checkpoint checks), meta (front matter), snippets (usage).
"""

from bot.stages.card.render import render_card, render_cards, render_collection

__all__ = ["render_card", "render_cards", "render_collection"]
