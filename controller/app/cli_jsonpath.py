"""`wsctl get -o jsonpath=TEMPLATE`: kubectl's JSONPath templates.

A template is text with `{...}` blocks, as kubectl's: `{.items[*].metadata.name}`
prints every match joined by a space; `{range .items[*]}...{end}` repeats its body
for each match, with `.field` inside it relative to that element (`$` is always the
root); `{"\\t"}` and `{"\\n"}` are literal text; anything outside braces is printed
as is. A field that is absent prints nothing (kubectl's default,
`--allow-missing-template-keys=true`). Strings print bare, other values as JSON.

The expressions themselves (fields, `[n]`, `[*]`, slices, `..name`, filters such as
`[?(@.status.phase=="Online")]`) are evaluated by jsonpath-ng; this module is only
the template around them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    """A template that cannot be parsed: the message names the place and the reason."""


@dataclass
class _Text:
    text: str


@dataclass
class _Expr:
    source: str
    compiled: Any


@dataclass
class _Range:
    source: str
    compiled: Any
    body: list[_Text | _Expr | _Range] = field(default_factory=list)


_Node = _Text | _Expr | _Range
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _blocks(template: str) -> list[tuple[bool, str]]:
    """(is_block, text) pieces: the text between `{` and its `}` (quotes respected)."""
    pieces: list[tuple[bool, str]] = []
    i, literal = 0, []
    while i < len(template):
        c = template[i]
        if c != "{":
            if c == "}":
                raise TemplateError(f"unmatched '}}' at character {i + 1}")
            literal.append(c)
            i += 1
            continue
        if literal:
            pieces.append((False, "".join(literal)))
            literal = []
        j, quote = i + 1, False
        while j < len(template) and (quote or template[j] != "}"):
            if template[j] == "\\" and quote:
                j += 1
            elif template[j] == '"':
                quote = not quote
            j += 1
        if j >= len(template):
            raise TemplateError(f"unclosed '{{' at character {i + 1}")
        pieces.append((True, template[i + 1:j].strip()))
        i = j + 1
    if literal:
        pieces.append((False, "".join(literal)))
    return pieces


def _string(source: str) -> str | None:
    """The text of a `"..."` literal block (escapes applied), or None if it is not one."""
    if len(source) < 2 or source[0] != '"' or source[-1] != '"':
        return None
    out, i, body = [], 0, source[1:-1]
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _compile(source: str) -> Any:
    from jsonpath_ng.ext.parser import parse

    expr = source
    if expr in ("", "@", "."):
        expr = "$"
    elif expr.startswith("@"):
        expr = "$" + expr[1:]
    elif expr.startswith("."):
        expr = "$" + expr
    elif not expr.startswith("$"):
        expr = "$." + expr
    try:
        return parse(expr)
    except Exception as exc:  # its lexer and parser raise plain Exceptions too
        raise TemplateError(f"{{{source}}}: {' '.join(str(exc).split())}") from None


def compile_template(template: str) -> list[_Node]:
    """The template's nodes; a `TemplateError` naming the problem if it is not one."""
    root: list[_Node] = []
    stack: list[list[_Node]] = [root]
    for is_block, text in _blocks(template):
        if not is_block:
            stack[-1].append(_Text(text))
            continue
        literal = _string(text)
        if literal is not None:
            stack[-1].append(_Text(literal))
        elif text == "end":
            if len(stack) == 1:
                raise TemplateError("{end} without a {range ...}")
            stack.pop()
        elif text.startswith("range ") or text == "range":
            source = text[len("range"):].strip()
            if not source:
                raise TemplateError("{range} needs an expression, e.g. {range .items[*]}")
            node = _Range(source, _compile(source))
            stack[-1].append(node)
            stack.append(node.body)
        else:
            stack[-1].append(_Expr(text, _compile(text)))
    if len(stack) > 1:
        raise TemplateError("{range ...} without its {end}")
    return root


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _source_root(source: str) -> bool:
    return source.startswith("$")


def render(nodes: list[_Node], root: Any, current: Any = None) -> str:
    """The template applied to `root` (`current`: the element of the enclosing range)."""
    here = root if current is None else current
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
            continue
        target = root if _source_root(node.source) else here
        matches = [m.value for m in node.compiled.find(target)]
        if isinstance(node, _Range):
            items: list[Any] = []
            for m in matches:  # `range .items` walks the list itself, as `.items[*]`
                items += m if isinstance(m, list) and not node.source.endswith("]") else [m]
            out += [render(node.body, root, item) for item in items]
        else:
            out.append(" ".join(_shown(v) for v in matches))
    return "".join(out)


class Template:
    """A compiled `-o jsonpath=...` template."""

    def __init__(self, template: str) -> None:
        self.text = template
        self.nodes = compile_template(template)

    def __call__(self, root: Any) -> str:
        return render(self.nodes, root)
