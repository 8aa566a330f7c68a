"""The ``cookbook-run`` directive: run a code block at build time, show it and what it gave.

The troubleshooting page types no message by hand: each case is a ``cookbook-run`` block
(``:raises: ValueError`` when it must raise). The build runs it (the blocks of a page share
their variables, in order), shows the code and the exception it raised or what it printed,
and warns, which fails the ``-W`` build, when a block stops raising, raises another class,
or prints nothing. The page is re-read at every build. No block starts an engine.
"""

from __future__ import annotations

import contextlib
import io
import os

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM's INFO lines would fill the log


class RunDirective(SphinxDirective):
    """Run the block's Python code; show the code and the exception raised or the output printed."""

    has_content = True
    option_spec = {"raises": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        """Return the code block and the message block; warn when it is not as expected."""
        self.env.note_reread()  # messages come from this build's code, never from a cache
        code = "\n".join(self.content)
        expected = self.options.get("raises")
        namespace = self.env.temp_data.setdefault("cookbook-run", {"__name__": "troubleshooting"})
        printed = io.StringIO()
        problem, shown = "", ""
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(code, f"<{self.env.docname} line {self.lineno}>", "exec"), namespace)
        except Exception as exc:  # any kind: the page names the one raised
            kind = type(exc)
            name = (
                kind.__name__
                if kind.__module__ == "builtins"
                else f"{kind.__module__}.{kind.__name__}"
            )
            shown = f"{name}: {exc}"
            if expected not in {c.__name__ for c in kind.__mro__}:
                problem = f"expected {expected or 'no exception'}, it raised {shown[:300]}"
        else:
            shown = printed.getvalue().rstrip()
            if expected:
                problem = f"expected {expected}, it raised nothing"
            elif not shown:
                problem = "it printed nothing"
        if problem:
            self.reporter.warning(f"cookbook-run block: {problem}", line=self.lineno)
        block = nodes.literal_block(code, code, language="python")
        label = "The exception, as this build raised it:" if expected else "What it printed:"
        message = nodes.literal_block(shown, shown, language="text", classes=["cookbook-error"])
        return [block, nodes.paragraph(text=label), message]
