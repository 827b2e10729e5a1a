"""The task's labeling guidelines (Markdown) as HTML that is safe to insert into a page: aal-web's Guidelines panel
and a Label Studio project's instructions both show this rendering. Also what both show of the classes: each one's
description, and its key.

No raw HTML passes through (it is shown as text), links and images may not use javascript:, vbscript:, file: or
data: (other than pictures) URLs, and links open in a new tab so that following one never ends a labeling page.
"""

from __future__ import annotations

import functools

from markdown_it import MarkdownIt


def _link_open(self, tokens, idx, options, env):
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")  # tables: a class per row, with examples
_MARKDOWN.add_render_rule("link_open", _link_open)


@functools.lru_cache(maxsize=8)  # one task's guidelines, rendered for every page that opens
def guidelines_html(markdown: str) -> str:
    """`markdown` rendered as HTML with any raw HTML in it escaped; "" for none."""
    return _MARKDOWN.render(markdown) if markdown.strip() else ""


def class_descriptions(class_names, descriptions) -> list[str]:
    """One description per class ("" where none): a task without descriptions records ()."""
    descriptions = list(descriptions)[:len(class_names)]
    return descriptions + [""] * (len(class_names) - len(descriptions))


KEYS = "1234567890"  # the keys that label, in the order of the classes


def class_keys(class_names) -> list[str]:
    """The key that labels each class ("" where none), the same in aal-web and in a Label Studio project: classes
    that are themselves the digits 0-9 each their own digit; otherwise 1-9, 0 for the first ten classes in order,
    and none for the rest (aal-web offers its find box, Label Studio its own keys)."""
    names = list(class_names)
    if len(names) <= len(KEYS) and len(set(names)) == len(names) and all(n in KEYS and len(n) == 1 for n in names):
        return names
    return [KEYS[i] if i < len(KEYS) else "" for i in range(len(names))]
