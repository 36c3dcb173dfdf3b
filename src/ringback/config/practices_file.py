"""The practices file (YAML): read, validated, with errors that name the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ringback.domain import consent, recipes, templates
from ringback.domain.practice import Practice, PracticesFile


class ConfigError(ValueError):
    """A practices file that cannot be used; the message names the field path."""


def parse_practices(data: Any) -> PracticesFile:
    try:
        parsed = PracticesFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"]) or "(file)"
            lines.append(f"{path}: {err['msg']}")
        raise ConfigError("invalid practices file:\n  " + "\n  ".join(lines)) from None
    problems = [line for i, p in enumerate(parsed.practices) for line in template_problems(p, f"practices.{i}")]
    if problems:
        raise ConfigError("invalid practices file:\n  " + "\n  ".join(problems))
    return parsed


def template_problems(practice: Practice, at: str) -> list[str]:
    """What is wrong with a practice's patient SMS texts, one line per problem with its field
    path: an unknown message name, a placeholder that message does not have, a default
    language without a text for every message, a text set twice, and (with the FCC
    healthcare profile) any text, the practice's or a shipped one, in any language, that
    breaks the profile once rendered. Checked here, at `config apply`, rather than in the
    model, so a configuration already on the config topic always loads."""
    default = practice.default_language
    problems = []
    for name in practice.templates_by_language.get(default, {}):
        if name in practice.templates:
            problems.append(
                f"{at}.templates_by_language.{default}.{name}: also set in templates "
                f"(the texts of the default language {default!r}); keep one"
            )
    for lang, texts in [(default, practice.templates), *practice.templates_by_language.items()]:
        path = f"{at}.templates" if texts is practice.templates else f"{at}.templates_by_language.{lang}"
        for name, text in texts.items():
            if name not in templates.TEMPLATE_NAMES:
                known = ", ".join(sorted(templates.TEMPLATE_NAMES))
                problems.append(f"{path}.{name}: no such message (the messages are {known})")
                continue
            try:
                templates.check_placeholders(text, templates.PLACEHOLDERS[name])
            except ValueError as exc:
                problems.append(f"{path}.{name}: {exc}")
    default_texts = templates.texts_for(default, default, practice.templates, practice.templates_by_language)
    missing = sorted(templates.TEMPLATE_NAMES - set(default_texts))
    if missing:
        shipped = ", ".join(sorted(templates.SHIPPED))
        problems.append(
            f"{at}.default_language: no text in {default!r} for {', '.join(missing)}; set them in "
            f"templates, or use a language ringback ships texts in ({shipped})"
        )
    if problems or not practice.sms_caps.fcc_healthcare_exemption:
        return problems
    for lang in sorted({default, *templates.SHIPPED, *practice.templates_by_language}):
        texts = templates.texts_for(lang, default, practice.templates, practice.templates_by_language)
        own = practice.templates_by_language.get(lang, {})
        for name in sorted(templates.TEMPLATE_NAMES - templates.PROFILE_EXEMPT):
            if name not in texts:
                continue  # this language falls back to the default language's text, checked there
            # Every placeholder is the practice's own value (name, links, urgent window): the
            # rendered text is exactly what a patient would get.
            violation = consent.fcc_profile_violation(recipes.render_text(practice, texts[name]), practice.name)
            if not violation:
                continue
            if lang == default and name in practice.templates:
                path, whose = f"{at}.templates.{name}", ""
            else:
                path = f"{at}.templates_by_language.{lang}.{name}"
                whose = "" if name in own else f" (the shipped {lang!r} text, with this practice's values)"
            problems.append(f"{path}: {violation}{whose}; set a text that fits here")
    return problems


def load_practices(path: str | Path) -> PracticesFile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_practices(data)
