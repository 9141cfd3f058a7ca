"""Tests of the documentation site (mkdocs.yml, docs/).

The site is built once with `mkdocs build --strict`; the tests check that
every public name has its place in the API reference, that every ```python
block of the pages and of the public docstrings runs, and that the built
pages render in headless Chromium. A docs block marked
```` ```python {.no-run} ```` (pretrained weights, the network) is shown but
not run; keep those few.

The docs do not depend on the Keras backend, so these tests run once, under
KERAS_BACKEND=jax, and are skipped under the other backends.
"""

import contextlib
import functools
import http.server
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import threading
import types
import zlib

import keras
import numpy as np
import pytest

import keras_ersm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
CONFIG = os.path.join(ROOT, "mkdocs.yml")
ARTIFACTS = os.path.join(ROOT, "artifacts", "docs")
CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="The docs do not depend on the Keras backend: the docs tests "
        "run once, under KERAS_BACKEND=jax.",
    ),
    pytest.mark.skipif(
        not os.path.isfile(CONFIG),
        reason="mkdocs.yml not found: the docs tests need a source checkout.",
    ),
]

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)


def python_blocks(text):
    """Returns the code of every ```python fenced block of a Markdown text.

    A block marked ```` ```python {.no-run} ```` (code that needs the network
    or pretrained weights) is shown highlighted on the site but not run.
    """
    blocks = []
    for match in _FENCE.finditer(text):
        info = match.group("info").strip()
        language = re.split(r"[\s}]", info.lstrip("{").strip(), maxsplit=1)[0]
        if language.lstrip(".") not in ("python", "py") or ".no-run" in info:
            continue
        indent = match.group("indent")
        lines = match.group("body").splitlines()
        lines = [
            line[len(indent) :] if line.startswith(indent) else line for line in lines
        ]
        blocks.append("\n".join(lines) + "\n")
    return blocks


def test_python_blocks_parser():
    text = (
        "a\n```python\nx = 1\n```\n\n```bash\nls\n```\n  ```py\n  y = 2\n  ```\n"
        "```python {.no-run}\nz = 3\n```\n```{.python .no-run}\nz = 4\n```\n"
        "```{.python}\nw = 5\n```\n"
    )
    assert python_blocks(text) == ["x = 1\n", "y = 2\n", "w = 5\n"]


# ---------------------------------------------------------------------------
# The public API, read from the package's __all__ lists.


def public_modules():
    """Returns `{name: module}` for each subpackage in `keras_ersm.__all__`."""
    modules = {}
    for name in keras_ersm.__all__:
        obj = getattr(keras_ersm, name)
        if isinstance(obj, types.ModuleType):
            modules[name] = obj
    return modules


def public_names():
    """Every documented public name, as dotted paths."""
    names = []
    for name in keras_ersm.__all__:
        if name.startswith("__"):
            continue
        names.append(f"keras_ersm.{name}")
    for name, module in public_modules().items():
        for member in module_members(module):
            names.append(f"keras_ersm.{name}.{member}")
    return names


def module_members(module):
    """The module's `__all__`, or its public classes and functions."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    ]


def public_objects():
    """`(dotted_path, object)` of every public class, function and method."""
    found = []
    for path in public_names():
        module_path, _, attr = path.rpartition(".")
        obj = getattr(importlib.import_module(module_path), attr)
        if isinstance(obj, types.ModuleType):
            continue
        found.append((path, obj))
        if inspect.isclass(obj):
            for member_name, member in vars(obj).items():
                if member_name.startswith("_"):
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member):
                    found.append((f"{path}.{member_name}", member))
    # Public modules documented although not in keras_ersm.__all__.
    for module_name in ("ops", "saving"):
        module = importlib.import_module(f"keras_ersm.{module_name}")
        for member_name in module_members(module):
            member = getattr(module, member_name)
            if inspect.isfunction(member):
                found.append((f"keras_ersm.{module_name}.{member_name}", member))
    return found


# ---------------------------------------------------------------------------
# (1) The strict build.


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Builds the site once with `mkdocs build --strict`; returns its path."""
    for module in ("mkdocs", "mkdocstrings", "latex2mathml"):
        pytest.importorskip(module, reason=f"{module} is not installed (extra `docs`)")
    site_dir = str(tmp_path_factory.mktemp("site"))
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # The build must not need the network: any HTTP(S) attempt fails fast.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[var] = "http://127.0.0.1:9"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean"]
        + ["--config-file", CONFIG, "--site-dir", site_dir],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    return types.SimpleNamespace(
        path=site_dir, returncode=result.returncode, output=output
    )


def test_mkdocs_build_strict(site):
    assert site.returncode == 0, f"mkdocs build --strict failed:\n{site.output}"
    warnings = [line for line in site.output.splitlines() if "WARNING" in line]
    assert not warnings, "mkdocs build warned:\n" + "\n".join(warnings)
    for page in ("index.html", "api/energy_mask/index.html", "objects.inv"):
        assert os.path.isfile(os.path.join(site.path, page)), page


def test_equations_are_typeset_at_build_time(site):
    """docs/hooks/math.py turns every TeX span into MathML: no JS needed."""
    if site.returncode != 0:
        pytest.skip("the site did not build (see test_mkdocs_build_strict)")
    with open(os.path.join(site.path, "concepts", "index.html"), encoding="utf-8") as f:
        page = f.read()
    assert page.count("<math ") >= 20
    assert 'display="block"' in page
    assert not re.search(r'class="arithmatex">\\[(\[]', page), "TeX left untypeset"
    assert "mathjax" not in page.lower(), "the site should not load MathJax"


# ---------------------------------------------------------------------------
# (2) Every public name is in the API reference.


def read_inventory(path):
    """Returns `{name: (role, uri)}` from a Sphinx objects.inv (version 2)."""
    with open(path, "rb") as f:
        data = f.read()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    entries = {}
    for line in zlib.decompress(data[header_end:]).decode("utf-8").splitlines():
        match = re.match(r"(?P<name>\S+)\s+(?P<role>\S+)\s+-?\d+\s+(?P<uri>\S*)", line)
        if match:
            entries[match.group("name")] = (match.group("role"), match.group("uri"))
    return entries


def test_every_public_name_in_api_reference(site):
    if site.returncode != 0:
        pytest.skip("the site did not build (see test_mkdocs_build_strict)")
    inventory = read_inventory(os.path.join(site.path, "objects.inv"))
    missing = [name for name in public_names() if name not in inventory]
    assert not missing, (
        "Public names missing from the API reference (give each a docstring; "
        "a new subpackage in keras_ersm.__all__ gets its page automatically): "
        f"{missing}"
    )
    for name in public_modules():
        assert inventory[f"keras_ersm.{name}"][0] == "py:module", name
    # The page of each name is an API page that exists.
    for name in public_names():
        uri = inventory[name][1].split("#")[0]
        assert uri.startswith("api/"), (name, uri)
        assert os.path.isfile(os.path.join(site.path, uri, "index.html")), (name, uri)
    with open(os.path.join(site.path, "api", "index.html"), encoding="utf-8") as f:
        overview = f.read()
    for name in public_names():
        assert f"#{name}" in overview, f"{name} is not listed on the API overview"
    assert "keras_ersm.__version__" in overview


def test_public_docstrings_follow_the_standard():
    """Summary, Args, Returns and a runnable `Examples:` for public names."""
    problems = []
    entries = dict(public_objects())
    for path in public_names():
        obj = entries.get(path)
        if obj is None or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # Modules and constants: their docstrings are optional.
        doc = inspect.getdoc(obj) or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        if not summary.endswith("."):
            problems.append(f"{path}: no one-line summary ending with a period")
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue  # Exceptions: a summary is enough.
        if inspect.isclass(obj) and "Attributes:" in doc and "Args:" not in doc:
            continue  # Result records, returned rather than built by users.
        if "Examples:" not in doc or not python_blocks(doc):
            problems.append(f"{path}: no `Examples:` with a ```python block")
        if re.search(r"^\s*Example:", doc, re.M):
            problems.append(f"{path}: `Example:` should be `Examples:`")
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            signature = inspect.Signature()
        params = [p for p in signature.parameters.values() if p.name != "self"]
        if params and "Args:" not in doc:
            problems.append(f"{path}: no `Args:` section")
        if inspect.isfunction(obj) and "Returns:" not in doc:
            problems.append(f"{path}: no `Returns:` section")
    assert not problems, "Docstrings below the standard:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------
# (3) Every ```python block of the docs and of the docstrings runs.


def doc_pages(with_code=False):
    """Markdown pages under docs/, relative paths; optionally only with code."""
    pages = []
    for directory, _, files in os.walk(DOCS):
        for name in sorted(files):
            if name.endswith(".md"):
                path = os.path.join(directory, name)
                if with_code:
                    with open(path, encoding="utf-8") as f:
                        if not python_blocks(f.read()):
                            continue
                pages.append(os.path.relpath(path, DOCS))
    return sorted(pages)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Runs examples in a temporary directory and restores Keras' globals."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    policy = keras.mixed_precision.global_policy().name
    distribution = keras.distribution.distribution()
    yield
    keras.mixed_precision.set_global_policy(policy)
    keras.distribution.set_distribution(distribution)
    keras.utils.clear_session()
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def run_blocks(blocks, where):
    namespace = {"__name__": "__docs__"}
    for index, code in enumerate(blocks):
        try:
            compiled = compile(code, f"<{where}, python block {index + 1}>", "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compiled, namespace)
        except Exception as error:  # noqa: BLE001 - report which block failed
            raise AssertionError(
                f"{where}: python block {index + 1} failed with "
                f"{type(error).__name__}: {error}\n--- block ---\n{code}"
            ) from error


def test_docs_pages_exist():
    assert "index.md" in doc_pages() and "concepts.md" in doc_pages()


@pytest.mark.slow
@pytest.mark.parametrize("page", doc_pages(with_code=True))
def test_docs_page_code_runs(page, sandbox):
    with open(os.path.join(DOCS, page), encoding="utf-8") as f:
        run_blocks(python_blocks(f.read()), f"docs/{page}")


def _docstring_ids():
    return [
        path
        for path, obj in public_objects()
        if python_blocks(inspect.getdoc(obj) or "")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("path", _docstring_ids())
def test_docstring_examples_run(path, sandbox):
    obj = dict(public_objects())[path]
    run_blocks(python_blocks(inspect.getdoc(obj)), f"docstring of {path}")


# ---------------------------------------------------------------------------
# (4) The built site renders in headless Chromium.


@pytest.fixture(scope="module")
def served_site(site):
    if site.returncode != 0:
        pytest.skip("the site did not build (see test_mkdocs_build_strict)")
    handler = functools.partial(_QuietHandler, directory=site.path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def chromium(tmp_path, *args):
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium with "
            "`bash scripts/install_chromium.sh` to run the rendering test."
        )
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        # Offline: every host but the local server fails to resolve at once.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return result.stdout.decode("utf-8", errors="replace")


def visible_text(html):
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", html)
    import html as html_lib

    return re.sub(r"\s+", " ", html_lib.unescape(text))


PAGES = {
    "home": (
        "",
        ["keras_ersm", "Energy-Regularized Spatial Masking", "Getting started"],
    ),
    "concepts": (
        "concepts/",
        ["The reference layer", "The coherent extension", "Deliberate differences"],
    ),
    "energy_mask": (
        "api/energy_mask/",
        [
            "keras_ersm.EnergyMask",
            "Energy-Regularized Spatial Masking (ERSM) of a 4-D feature map",
            "patch_size",
            "energy_terms",
            "Examples:",
            "keras_ersm.EnergyMask.paper",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(PAGES))
def test_site_renders_in_chromium(page, served_site, tmp_path):
    path, expected = PAGES[page]
    url = f"{served_site}/{path}"
    dom = chromium(tmp_path, "--dump-dom", url)
    text = visible_text(dom)
    missing = [phrase for phrase in expected if phrase not in text]
    assert not missing, f"{url} rendered without {missing}:\n{text[:2000]}"
    # Material's JavaScript ran: it turns <html class="no-js"> into "js" and
    # adds the copy buttons of the code blocks.
    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert "no-js" not in html_tag and " js" in html_tag, html_tag
    assert "md-code__button" in dom, "code blocks without copy buttons"
    if page == "concepts":
        assert "<math" in dom, "equations not rendered as MathML"
    os.makedirs(ARTIFACTS, exist_ok=True)
    screenshot = os.path.join(ARTIFACTS, f"{page}.png")
    if os.path.exists(screenshot):
        os.remove(screenshot)
    chromium(
        tmp_path,
        "--window-size=1280,1600",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        url,
    )
    assert os.path.isfile(screenshot), screenshot
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (1600, 1280), pixels.shape
    # Not a blank page: the rendered text makes many distinct pixel values.
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 20
