"""MkDocs hook: typesets the pages' TeX as MathML when the site is built.

`pymdownx.arithmatex` (generic mode) wraps inline math in
`<span class="arithmatex">\\( ... \\)</span>` and display math in
`<div class="arithmatex">\\[ ... \\]</div>`. This hook converts both to
MathML with `latex2mathml`, which every current browser renders natively,
so the equations need no JavaScript and no network (no MathJax from a CDN):
the site renders the same offline, in headless Chromium included.
"""

import html
import re

try:
    from latex2mathml.converter import convert
except ImportError as error:  # pragma: no cover - exercised by the build
    raise ImportError(
        "The docs need `latex2mathml` to typeset their equations: "
        'pip install -e ".[docs]" (or pip install latex2mathml).'
    ) from error

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(tex, display):
    tex = html.unescape(tex).strip()
    mathml = convert(tex, display="block" if display else "inline")
    # The TeX source as alternative text, for screen readers.
    alt = html.escape(" ".join(tex.split()), quote=True)
    mathml = mathml.replace("<math ", f'<math alttext="{alt}" ', 1)
    tag = "div" if display else "span"
    return f'<{tag} class="arithmatex">{mathml}</{tag}>'


def on_page_content(content, page, config, files):
    content = _DISPLAY.sub(lambda m: _mathml(m.group(1), True), content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), False), content)
