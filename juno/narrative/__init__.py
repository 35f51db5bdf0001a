"""Drafting the brief's words: the model when configured, the Jinja2 template otherwise."""

from __future__ import annotations

import os

from juno.brief import Facts, Narrative, Provenance
from juno.config import Narrative as NarrativeConfig
from juno.errors import ConfigError
from juno.narrative.template import template_narrative


def draft_narrative(
    facts: Facts, cfg: NarrativeConfig, mode: str | None = None
) -> tuple[Narrative, Provenance]:
    """Words for the brief. Never raises for a model failure: the template takes over."""
    mode = mode or cfg.mode
    key = os.environ.get("OPENAI_API_KEY")
    if mode == "template" or (mode == "auto" and not key):
        reason = "template requested" if mode == "template" else "no OPENAI_API_KEY set"
        return template_narrative(facts), Provenance(
            method="template", model=None, attempts=0, reason=reason
        )
    if not key:
        raise ConfigError(
            "--narrative model needs a model: OPENAI_API_KEY is not set",
            hint="set OPENAI_API_KEY (and OPENAI_BASE_URL for a local server), or use --narrative template",
        )
    from juno.narrative.model import draft_with_model

    return draft_with_model(facts, cfg)
