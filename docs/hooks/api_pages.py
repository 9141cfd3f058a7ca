"""MkDocs hook: one API reference page per public name of keras_ersm.

The pages are derived from `keras_ersm.__all__` (read with `ast`, nothing is
imported): a page per top-level class or function (`::: keras_ersm.Name`), a
page per public subpackage (`::: keras_ersm.sub`, whose own `__all__` decides
what it shows, so a new name appears without touching the docs), a page for
the low-level `keras_ersm.ops`, and an overview listing every name. A
hand-written `docs/api/<slug>.md` replaces the generated page of that slug.
"""

import ast
import os
import re

from mkdocs.structure.files import File

PACKAGE = "keras_ersm"
SECTION = "API reference"
# Documented although not re-exported in keras_ersm.__all__.
EXTRA_MODULES = ("ops", "saving")


def _root(config):
    return os.path.dirname(os.path.abspath(config["config_file_path"]))


def _module_file(root, dotted):
    base = os.path.join(root, *dotted.split("."))
    for candidate in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _read_all(path):
    """Returns the module's public names and its docstring summary."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = None
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", None) == "__all__" for t in targets):
                names = list(ast.literal_eval(node.value))
    if names is None:
        # No __all__: the public classes and functions defined here.
        names = [
            node.name
            for node in tree.body
            if isinstance(node, (ast.ClassDef, ast.FunctionDef))
            and not node.name.startswith("_")
        ]
    doc = (ast.get_docstring(tree) or "").strip().splitlines()
    return names, (doc[0] if doc else "")


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def api_entries(root):
    """Lists `(title, slug, dotted_path, kind, members)` for every API page."""
    top, _ = _read_all(_module_file(root, PACKAGE))
    objects, modules = [], []
    for name in top:
        if name.startswith("__"):
            continue
        path = _module_file(root, f"{PACKAGE}.{name}")
        if path is None:
            objects.append((name, _snake(name), f"{PACKAGE}.{name}", "object", []))
        else:
            members, _ = _read_all(path)
            modules.append(
                (f"{PACKAGE}.{name}", name, f"{PACKAGE}.{name}", "module", members)
            )
    for name in EXTRA_MODULES:
        path = _module_file(root, f"{PACKAGE}.{name}")
        if path is not None and name not in top:
            members, _ = _read_all(path)
            modules.append(
                (f"{PACKAGE}.{name}", name, f"{PACKAGE}.{name}", "module", members)
            )
    return objects + modules


def _page(title, dotted, kind):
    if kind == "object":
        return f"# {title}\n\n::: {dotted}\n    options:\n      heading_level: 2\n"
    return (
        f"# {dotted}\n\n::: {dotted}\n    options:\n      show_root_heading: false\n"
        "      heading_level: 2\n"
    )


def _summary(root, dotted, name, depth=0):
    """First docstring line of `dotted.name`, following `from ... import`."""
    path = _module_file(root, dotted)
    if path is None or depth > 5:
        return ""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    body = tree.body
    for index, node in enumerate(body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            doc = ast.get_docstring(node) or ""
            return doc.strip().splitlines()[0] if doc.strip() else ""
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == name for t in node.targets
        ):
            following = body[index + 1] if index + 1 < len(body) else None
            if isinstance(following, ast.Expr) and isinstance(
                getattr(following, "value", None), ast.Constant
            ):
                return str(following.value.value).strip().splitlines()[0]
            return ""
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _summary(root, node.module, alias.name, depth + 1)
    return ""


def _cell(text):
    return text.replace("|", "\\|")


def _overview(root, entries):
    top_doc = _read_all(_module_file(root, PACKAGE))[1]
    lines = [
        "# API reference",
        "",
        f"{top_doc} Every public name is listed here, with the first line of "
        "its docstring; each page is generated from the docstrings. "
        "`keras_ersm.__version__` holds the installed version.",
        "",
        "## keras_ersm",
        "",
        "| Name | Description |",
        "| --- | --- |",
    ]
    # Plain page links: a name without a docstring is caught by
    # keras_ersm/docs_test.py with a clear message, not by a broken link.
    for title, slug, dotted, kind, _ in entries:
        if kind == "object":
            summary = _summary(root, PACKAGE, title)
            lines.append(f"| [`{title}`]({slug}.md#{dotted}) | {_cell(summary)} |")
    for _, slug, dotted, kind, members in entries:
        if kind != "module":
            continue
        module_doc = _read_all(_module_file(root, dotted))[1]
        lines += ["", f"## [{dotted}]({slug}.md)", "", module_doc, ""]
        if members:
            lines += ["| Name | Description |", "| --- | --- |"]
        for member in members:
            summary = _summary(root, dotted, member)
            lines.append(
                f"| [`{member}`]({slug}.md#{dotted}.{member}) | {_cell(summary)} |"
            )
    return "\n".join(lines) + "\n"


def on_config(config):
    entries = api_entries(_root(config))
    pages = [{"Overview": "api/index.md"}] + [
        {title: f"api/{slug}.md"} for title, slug, *_ in entries
    ]
    for item in config["nav"]:
        if isinstance(item, dict) and SECTION in item:
            item[SECTION] = pages
    return config


def on_files(files, config):
    root = _root(config)
    entries = api_entries(root)
    generated = {"api/index.md": _overview(root, entries)}
    for title, slug, dotted, kind, _ in entries:
        generated[f"api/{slug}.md"] = _page(title, dotted, kind)
    for src_uri, content in generated.items():
        if files.get_file_from_path(src_uri) is None:
            files.append(File.generated(config, src_uri, content=content))
    return files
