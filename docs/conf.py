"""Sphinx configuration of the cookbook's documentation site.

Build it with ``make docs`` (``sphinx-build -W --keep-going -b html docs build/docs/html``
inside the CPU stack). The notebook pages, the support matrix and the API pages are
generated at every build by ``_ext/cookbook_docs.py``; the troubleshooting page runs its
cases at every build (``_ext/troubleshooting.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path[:0] = [str(REPO), str(DOCS / "_ext")]

import cookbook  # noqa: E402  (after the path set-up above)

project = "InternVL on Ascend NPUs with vLLM"
author = "The cookbook's maintainers"
copyright = "the cookbook's maintainers, Apache-2.0"  # noqa: A001  (Sphinx's setting name)
release = cookbook.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "cookbook_docs",
]

exclude_patterns = ["_build", "_ext", "_generated", "**/.ipynb_checkpoints", "README.md"]

# MyST (markdown) and MyST-NB (notebooks). Notebooks are never executed by the docs build:
# the pages show the outputs of the notebook runner's latest CPU run (see _ext/cookbook_docs.py).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True
# vLLM's and torch's warnings on stderr are noise on a page (the kernel log keeps them).
nb_output_stderr = "remove"

# API reference from Google-style docstrings. `cookbook` imports neither torch nor vLLM.
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

html_theme = "furo"
html_title = "InternVL cookbook"
html_static_path = ["_static"]
html_css_files = ["cookbook.css"]
html_show_sourcelink = False
