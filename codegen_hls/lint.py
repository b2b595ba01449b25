"""Synthesizability lint of generated HLS kernels: what C simulation accepts and hardware does not.

Why: emulation compiles the kernels with g++, which happily runs heap allocation, recursion,
unbounded loops, ``std::vector`` or a stream nobody reads. Vitis HLS rejects those, or
worse, synthesizes a design that deadlocks or never writes its results. Without Vitis we
check the source itself. Every finding names the kernel, the line and the rule:

``heap``            ``new``/``delete``/``malloc``/``free``...: hardware has no heap.
``recursion``       a function calling itself (directly): no call stack in hardware.
``virtual``         virtual functions: no dynamic dispatch in hardware.
``unbounded-loop``  ``while``/``do``/``goto``, or a ``for`` whose header is not
                    ``for (T v = A; v < B; ++v)`` (``<=``, ``v++``, ``v += C`` too) with
                    integer constants A, B, C: the trip count must be known.
``std-container``   ``std::vector``/``map``/``string``/smart pointers... and their headers.
``unsupported-type`` I/O streams, threads, atomics, ``long double``, ``wchar_t``.
``stream-balance``  an ``hls::stream`` a function declares must be written and read, and,
                    where the counts are static (constant loop bounds, no enclosing ``if``),
                    the same number of times: otherwise the dataflow region stalls or
                    leaves data behind.
``stream-depth``    the dataflow region, each process's stream reads and writes taken from
                    the text in order, runs to the end with FIFOs of the depths its STREAM
                    pragmas give (a bounded-FIFO simulation, ``codegen_hls.fifo_depths``):
                    otherwise some producer waits forever for room.
``m_axi-port``      every array/pointer argument of the ``extern "C"`` top function has an
                    ``#pragma HLS INTERFACE m_axi``; every port of the design is an argument.
``m_axi-bundle``    every such pragma names a ``bundle``, the one the design records.
``m_axi-bank``      every port has a memory bank in the placement (``connectivity.cfg``),
                    and ports sharing a bundle share the bank.
``m_axi-shared-bank`` the ports of one written argument (a KV cache each layer's process
                    updates in place through its own ``inout`` port) are one buffer object
                    on the card, which XRT can pass to several arguments only when they are
                    connected to one bank: their ``sp=`` lines must name the same bank.
``axis-port``       every ``hls::stream`` argument of an ``extern "C"`` top has an
                    ``#pragma HLS INTERFACE axis``; every AXI-stream port the design records
                    (a stream crossing an SLR boundary) is such an argument of its segment
                    top, of the recorded element type, written (producer side) or read
                    (consumer side) exactly its recorded element count, and never both.
``axis-link``       the two ends of every crossing agree (type, element count) and are
                    linked by exactly one ``stream_connect`` in ``connectivity.cfg`` whose
                    FIFO is as deep as the design's plan for that stream; no
                    ``stream_connect`` names anything else.

A region split into SLR segments runs them concurrently on the card; its C-simulation
wrapper (which calls the segment tops) is checked as one dataflow region with the
segments flattened into it, so ``stream-balance`` and ``stream-depth`` cover the crossing
streams too (a link's FIFO depth must then also be granted in ``connectivity.cfg``).

The analysis is lexical plus a little structure (functions, blocks, loops, calls): our
printer emits a regular subset of C++, and the rules are written for that subset. It is
conservative where counts are not static: then only "written but never read" (and the
reverse) is reported.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from tvm_spatial.errors import LintError

from .c_types import c_type, stream_element
from .fifo_depths import Read, ReadEach, Write, deadlock
from .design import Design, Kernel
from .host_code import buffers

HEAP_KEYWORDS = {"new", "delete"}
HEAP_FUNCTIONS = {"malloc", "calloc", "realloc", "free", "alloca", "make_shared", "make_unique", "aligned_alloc"}
STD_CONTAINERS = {
    "vector", "map", "multimap", "set", "multiset", "unordered_map", "unordered_set",
    "unordered_multimap", "unordered_multiset", "list", "forward_list", "deque", "queue",
    "stack", "priority_queue", "string", "wstring", "string_view", "basic_string",
    "shared_ptr", "unique_ptr", "weak_ptr", "function", "any",
}
STD_UNSUPPORTED = {
    "thread", "mutex", "atomic", "condition_variable", "future", "promise", "async",
    "cout", "cerr", "cin", "clog", "ostream", "istream", "iostream", "stringstream",
    "ostringstream", "istringstream", "fstream", "ifstream", "ofstream", "exception",
    "runtime_error",
}
HEADER_RULES = {
    **{h: "std-container" for h in (
        "vector", "map", "set", "unordered_map", "unordered_set", "list", "forward_list",
        "deque", "queue", "stack", "string", "string_view", "memory", "functional", "any",
    )},
    **{h: "unsupported-type" for h in (
        "iostream", "fstream", "sstream", "thread", "mutex", "atomic", "future",
        "condition_variable", "stdexcept", "exception",
    )},
}
LOOP_INDEX_TYPES = (
    r"(?:unsigned\s+|signed\s+)?(?:int|long|long\s+long|short|char)|u?int(?:8|16|32|64)_t|size_t"
    r"|ap_u?int\s*<\s*\d+\s*>"
)
_FOR_HEADER = re.compile(
    rf"^\s*(?:const\s+)?(?:{LOOP_INDEX_TYPES})\s+(?P<v>\w+)\s*=\s*(?P<lo>[^;]+);"
    r"\s*(?P=v)\s*(?P<cmp><=|<)\s*(?P<hi>[^;]+);"
    r"\s*(?:\+\+\s*(?P=v)|(?P=v)\s*\+\+|(?P=v)\s*\+=\s*(?P<step>[^;]+))\s*$"
)
# ``v < tvs_min<T>(C, expr)``: a loop bounded by the constant C (the printer's last tile).
_CAPPED_BOUND = re.compile(r"^tvs_min\s*<[^>]*>\s*\(\s*(\d+)\s*,.*\)$")
_TOKEN = re.compile(
    r"(?P<id>[A-Za-z_]\w*)|(?P<num>\.?\d(?:[eE][+-]|[\w.])*)|(?P<str>\"\"|'')"
    r"|(?P<op>::|->|\+\+|--|<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|[^\s\w])"
)
DEFAULT_STREAM_DEPTH = 2  # what Vitis HLS gives an hls::stream without a STREAM pragma
NO_HEAP = "uses the heap, which hardware does not have; use a fixed-size (static) array"
COUNTED = "use for (int i = A; i < B; ++i) with integer constants A and B"


@dataclass(frozen=True)
class Finding:
    """One lint failure: kernel (or header) name, 1-based line, rule, explanation."""

    kernel: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"kernel {self.kernel!r}, line {self.line}: [{self.rule}] {self.message}"


# -- lexing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tok:
    text: str
    line: int
    kind: str  # id, num, str, op


def _blank_comments_and_strings(source: str) -> str:
    """Same length and line structure, with comment bodies and literal contents blanked."""
    out = list(source)
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            while i < n and source[i] != "\n":
                out[i] = " "
                i += 1
        elif source.startswith("/*", i):
            while i < n and not source.startswith("*/", i):
                if source[i] != "\n":
                    out[i] = " "
                i += 1
            for j in range(i, min(i + 2, n)):
                out[j] = " "
            i += 2
        elif c in "\"'":
            i += 1
            while i < n and source[i] != c and source[i] != "\n":
                if source[i] == "\\":
                    out[i] = " "
                    i += 1
                out[i] = " "
                i += 1
            i += 1
        else:
            i += 1
    return "".join(out)


def _lex(text: str) -> tuple[list[Tok], list[tuple[int, str]]]:
    """Tokens of the code, and the preprocessor lines (line number, text) apart."""
    tokens: list[Tok] = []
    directives: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.lstrip().startswith("#"):
            directives.append((number, line.strip()))
            continue
        for match in _TOKEN.finditer(line):
            tokens.append(Tok(match.group(), number, match.lastgroup or "op"))
    return tokens, directives


def _int_constant(text: str) -> int | None:
    """Value of an integer constant expression (literals, + - * / % and parentheses)."""
    cleaned = re.sub(r"(?<=\d)[uUlL]+\b", "", text.strip())
    cleaned = re.sub(r"\(\s*(?:const\s+)?(?:" + LOOP_INDEX_TYPES + r")\s*\)", "", cleaned)  # casts
    cleaned = cleaned.strip()
    try:
        tree = ast.parse(cleaned, mode="eval")
    except SyntaxError:
        return None

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)):
            a, b = value(node.left), value(node.right)
            if a is None or b is None or (isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0):
                return None
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Mod):
                return a % b
            return int(a / b)  # C division truncates
        return None

    return value(tree.body)


def trip_count(header: str) -> int | None:
    """Iterations of ``for (header)`` if it is a counted loop with constant bounds, else None."""
    match = _FOR_HEADER.match(header)
    if not match:
        return None
    lo, hi = _int_constant(match.group("lo")), _int_constant(match.group("hi"))
    capped = _CAPPED_BOUND.match(match.group("hi").strip())
    if hi is None and capped:  # a partial last tile: at most the constant cap
        hi = _int_constant(capped.group(1))
    step = _int_constant(match.group("step")) if match.group("step") else 1
    if lo is None or hi is None or step is None or step <= 0:
        return None
    if match.group("cmp") == "<=":
        hi += 1
    return max(0, -(-(hi - lo) // step))


# -- structure: functions, parameters, blocks ----------------------------------------------


@dataclass
class Param:
    name: str
    text: str
    is_stream: bool
    is_memory: bool  # array or pointer: an m_axi candidate at the top level


@dataclass
class Function:
    name: str
    line: int
    params: list[Param]
    body: list[Tok]  # tokens between the braces
    is_top: bool  # extern "C"


@dataclass
class _Counts:
    writes: int = 0
    reads: int = 0
    exact: bool = True


def _match(tokens: list[Tok], start: int, open_: str, close: str) -> int:
    """Index of the token closing the bracket opened at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].text == open_:
            depth += 1
        elif tokens[i].text == close:
            depth -= 1
            if depth == 0:
                return i
    return len(tokens) - 1


def _split_top_level(tokens: list[Tok]) -> list[list[Tok]]:
    """Split at commas outside (), [], {}, <>."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.text in "([{<":
            depth += 1
        elif tok.text in ")]}>":
            depth -= 1
        elif tok.text == ">>":
            depth -= 2
        if tok.text == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _param(tokens: list[Tok]) -> Param:
    text = " ".join(t.text for t in tokens)
    cut = next((i for i, t in enumerate(tokens) if t.text == "["), len(tokens))
    ids = [t.text for t in tokens[:cut] if t.kind == "id"]
    name = ids[-1] if ids else ""
    return Param(
        name=name,
        text=text,
        is_stream="stream" in ids and "hls" in ids,
        is_memory=cut < len(tokens) or any(t.text == "*" for t in tokens[:cut]),
    )


def _functions(tokens: list[Tok]) -> list[Function]:
    """Function definitions at namespace scope (``namespace {`` bodies included)."""
    functions = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.text == "{":
            # a function body: `name ( params ) [const] {`
            j = i - 1
            while j >= 0 and tokens[j].kind == "id" and tokens[j].text in ("const", "noexcept", "override"):
                j -= 1
            if j >= 0 and tokens[j].text == ")":
                depth, k = 0, j
                while k >= 0:
                    if tokens[k].text == ")":
                        depth += 1
                    elif tokens[k].text == "(":
                        depth -= 1
                        if depth == 0:
                            break
                    k -= 1
                if k > 0 and tokens[k - 1].kind == "id" and tokens[k - 1].text not in ("if", "for", "while", "switch"):
                    end = _match(tokens, i, "{", "}")
                    head = tokens[max(0, k - 8) : k]
                    is_top = any(t.text == "extern" for t in head)
                    params = [_param(p) for p in _split_top_level(tokens[k + 1 : j])]
                    params = [p for p in params if p.name and p.text != "void"]
                    functions.append(Function(tokens[k - 1].text, tokens[k - 1].line, params, tokens[i + 1 : end], is_top))
                    i = end + 1
                    continue
        i += 1
    return functions


def _statement_end(body: list[Tok], start: int, end: int) -> int:
    """Index of the last token of the statement starting at ``start`` (a block, a control
    statement with its body, or up to its ``;``)."""
    if start >= end:
        return start
    tok = body[start]
    if tok.text == "{":
        return _match(body, start, "{", "}")
    if tok.text in ("for", "if", "while", "switch") and start + 1 < end and body[start + 1].text == "(":
        last = _statement_end(body, _match(body, start + 1, "(", ")") + 1, end)
        if tok.text == "if" and last + 1 < end and body[last + 1].text == "else":
            last = _statement_end(body, last + 2, end)
        return last
    if tok.text in ("else", "do"):
        return _statement_end(body, start + 1, end)
    i = start
    while i < end and body[i].text != ";":
        i += 1
    return i


class _Unordered(Exception):
    """A stream operation whose place in the program is not static."""


def _merge(ops: list) -> list:
    """Adjacent operations on the same streams become one."""
    out: list = []
    for op in ops:
        last = out[-1] if out else None
        if isinstance(op, Read) and isinstance(last, Read) and last.stream == op.stream:
            out[-1] = Read(op.stream, last.count + op.count)
        elif type(op) in (Write, ReadEach) and type(last) is type(op) and last.streams == op.streams:
            out[-1] = type(op)(op.streams, last.count + op.count)
        else:
            out.append(op)
    return out


_MAX_OPS = 200_000  # a program longer than this is not expanded (its order is left unchecked)


def _repeat(body: list, trips: int) -> list:
    """A counted loop's program: one operation scaled; single writes to several streams in
    one iteration (a value sent to all consumers) in lockstep; else the body repeated."""
    body = _merge(body)
    if len(body) == 1:
        op = body[0]
        return [Read(op.stream, op.count * trips) if isinstance(op, Read) else type(op)(op.streams, op.count * trips)]
    if all(isinstance(op, Write) and op.count == 1 for op in body):
        names = tuple(n for op in body for n in op.streams)
        if len(set(names)) == len(names):
            return [Write(names, trips)]
    if all(isinstance(op, Read) and op.count == 1 for op in body):  # a transfer of each per iteration
        names = tuple(op.stream for op in body)
        if len(set(names)) == len(names):
            return [ReadEach(names, trips)]
    if len(body) * trips > _MAX_OPS:
        raise _Unordered()
    return body * trips


def _bound(program: list, binding: dict) -> list:
    """A callee's stream operations on the caller's streams (``binding``: parameter ->
    the stream passed); operations on streams it was not passed are dropped."""
    ops: list = []
    for op in program:
        if isinstance(op, Read):
            if op.stream in binding:
                ops.append(Read(binding[op.stream], op.count))
            continue
        names = tuple(binding[n] for n in op.streams if n in binding)
        if names:
            ops.append((ReadEach if isinstance(op, ReadEach) else Write)(names, op.count))
    return ops


def _stream_element(text: str) -> str:
    """``T`` (spaces removed) of a parameter declared ``hls :: stream < T > & name``."""
    return "".join(text[text.find("<") + 1 : text.rfind(">")].split())


# -- the checker ---------------------------------------------------------------------------


@dataclass
class _Linter:
    kernel: str
    source: str
    findings: list[Finding] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens, self.directives = _lex(_blank_comments_and_strings(self.source))
        self.functions = _functions(self.tokens)
        self.by_name = {f.name: f for f in self.functions}
        self._summaries: dict[str, dict[str, _Counts]] = {}

    def add(self, line: int, rule: str, message: str) -> None:
        self.findings.append(Finding(self.kernel, line, rule, message))

    # token rules -------------------------------------------------------------------
    def check_tokens(self) -> None:
        toks = self.tokens
        for i, tok in enumerate(toks):
            nxt = toks[i + 1].text if i + 1 < len(toks) else ""
            prev = toks[i - 1].text if i > 0 else ""
            if tok.kind != "id":
                continue
            if tok.text in HEAP_KEYWORDS:
                self.add(tok.line, "heap", f"'{tok.text}' {NO_HEAP}")
            elif tok.text in HEAP_FUNCTIONS and nxt == "(":
                self.add(tok.line, "heap", f"'{tok.text}()' {NO_HEAP}")
            elif tok.text == "virtual":
                self.add(tok.line, "virtual", "virtual functions need dynamic dispatch, which HLS cannot synthesize")
            elif tok.text == "do" or (tok.text == "while" and not self._ends_do_block(i)):
                self.add(tok.line, "unbounded-loop", f"'{tok.text}' loop has no static trip count; {COUNTED}")
            elif tok.text == "goto":
                self.add(tok.line, "unbounded-loop", "'goto' makes control flow (and trip counts) unanalysable")
            elif tok.text == "for" and nxt == "(":
                end = _match(toks, i + 1, "(", ")")
                header = " ".join(t.text for t in toks[i + 2 : end])
                if trip_count(header) is None:
                    self.add(tok.line, "unbounded-loop", f"'for ({header.strip()})' has no static trip count; {COUNTED}")
            elif prev == "::" and i >= 2 and toks[i - 2].text == "std":
                if tok.text in STD_CONTAINERS:
                    self.add(
                        tok.line, "std-container",
                        f"'std::{tok.text}' allocates dynamically; use fixed-size arrays or hls::stream",
                    )
                elif tok.text in STD_UNSUPPORTED:
                    self.add(tok.line, "unsupported-type", f"'std::{tok.text}' cannot be synthesized")
            elif tok.text == "long" and nxt == "double":
                self.add(tok.line, "unsupported-type", "'long double' has no HLS implementation; use float or double")
            elif tok.text == "wchar_t":
                self.add(tok.line, "unsupported-type", "'wchar_t' is not supported in kernel code")
        for line, text in self.directives:
            match = re.match(r"#\s*include\s*<\s*([\w./]+)\s*>", text)
            if match and match.group(1) in HEADER_RULES:
                header = match.group(1)
                self.add(line, HEADER_RULES[header], f"#include <{header}> brings in types HLS cannot synthesize")

    def _ends_do_block(self, i: int) -> bool:
        """Is the ``while`` at token ``i`` the tail of ``do { ... } while (...)``?"""
        toks = self.tokens
        if i == 0 or toks[i - 1].text != "}":
            return False
        depth = 0
        for j in range(i - 1, -1, -1):
            depth += (toks[j].text == "}") - (toks[j].text == "{")
            if depth == 0:
                return j > 0 and toks[j - 1].text == "do"
        return False

    def check_recursion(self) -> None:
        for func in self.functions:
            for i, tok in enumerate(func.body):
                if tok.text == func.name and i + 1 < len(func.body) and func.body[i + 1].text == "(":
                    prev = func.body[i - 1].text if i else ""
                    if prev not in (".", "->", "::"):
                        self.add(tok.line, "recursion", f"function '{func.name}' calls itself; hardware has no call stack")

    # streams -----------------------------------------------------------------------
    def _summary(self, func: Function, active: tuple[str, ...] = ()) -> dict[str, _Counts]:
        """Writes/reads per call of ``func`` for each stream parameter and local stream."""
        if func.name in self._summaries:
            return self._summaries[func.name]
        counts: dict[str, _Counts] = {p.name: _Counts() for p in func.params if p.is_stream}
        for name, _ in self._local_streams(func):
            counts[name] = _Counts()
        body = func.body
        stack: list[tuple[int, bool]] = []  # (trip multiplier, conditional) per open block
        pending: tuple[int, bool] | None = None
        i = 0
        while i < len(body):
            tok = body[i]
            if tok.text in ("else", "do"):
                pending = (pending[0] if pending else 1, True)
                i += 1
                continue
            if tok.text in ("for", "if", "switch", "while") and i + 1 < len(body) and body[i + 1].text == "(":
                end = _match(body, i + 1, "(", ")")
                trips, cond = 1, True
                if tok.text == "for":
                    counted = trip_count(" ".join(t.text for t in body[i + 2 : end]))
                    trips, cond = (counted, False) if counted is not None else (1, True)
                if pending is not None:  # a braceless body that is itself a control statement
                    trips, cond = trips * pending[0], cond or pending[1]
                pending = (trips, cond)
                i = end + 1
                continue
            if tok.text == "{":
                stack.append(pending or (1, False))
                pending = None
            elif tok.text == "}":
                if stack:
                    stack.pop()
            elif tok.text == ";":
                pending = None  # a braceless body ended; counted approximately below
            mult = 1
            conditional = pending is not None and pending[1]
            for trips, cond in stack:
                mult *= trips
                conditional |= cond
            if pending is not None:
                mult *= pending[0]
            if tok.kind == "id" and tok.text in counts and i + 2 < len(body):
                op = body[i + 1].text
                method = body[i + 2].text if op == "." else ""
                entry = counts[tok.text]
                if method in ("write", "write_nb") or op == "<<":
                    entry.writes += mult
                    entry.exact &= not conditional and method != "write_nb"
                elif method in ("read", "read_nb") or op == ">>":
                    entry.reads += mult
                    entry.exact &= not conditional and method != "read_nb"
            callee = self.by_name.get(tok.text)
            is_call = callee is not None and i + 1 < len(body) and body[i + 1].text == "("
            if is_call and callee is not func and callee.name not in active:
                end = _match(body, i + 1, "(", ")")
                args = _split_top_level(body[i + 2 : end])
                inner = self._summary(callee, active + (func.name,))
                for param, arg in zip(callee.params, args):
                    if param.name in inner and len(arg) == 1 and arg[0].text in counts:
                        sub, entry = inner[param.name], counts[arg[0].text]
                        entry.writes += sub.writes * mult
                        entry.reads += sub.reads * mult
                        entry.exact &= sub.exact and not conditional
                i = end + 1
                continue
            i += 1
        self._summaries[func.name] = counts
        return counts

    def _local_streams(self, func: Function) -> list[tuple[str, int]]:
        """(name, line) of each ``hls::stream<...> name`` declared in ``func``'s body."""
        found = []
        body = func.body
        for i in range(len(body) - 3):
            if [t.text for t in body[i : i + 4]] != ["hls", "::", "stream", "<"]:
                continue
            depth, j = 0, i + 3
            while j < len(body):
                depth += (body[j].text == "<") - (body[j].text == ">") - 2 * (body[j].text == ">>")
                if depth <= 0:
                    break
                j += 1
            if j + 2 < len(body) and body[j + 1].kind == "id" and body[j + 2].text in ("(", ";", "{", "[", "=", ","):
                found.append((body[j + 1].text, body[j + 1].line))
        return found

    def _depths(self) -> dict[str, tuple[int, int]]:
        """Stream name -> (depth, pragma line) from ``#pragma HLS STREAM variable=... depth=...``."""
        depths = {}
        for line, text in self.directives:
            if re.match(r"#\s*pragma\s+HLS\s+STREAM\b", text, re.I):
                var = re.search(r"\bvariable\s*=\s*(\w+)", text, re.I)
                depth = re.search(r"\bdepth\s*=\s*(\d+)", text, re.I)
                if var:
                    depths[var.group(1)] = (int(depth.group(1)) if depth else DEFAULT_STREAM_DEPTH, line)
        return depths

    def check_streams(self) -> None:
        depths = self._depths()
        for func in self.functions:
            local = self._local_streams(func)
            if not local:
                continue
            counts = self._summary(func)
            for name, line in local:
                c = counts[name]
                if c.writes == 0 or c.reads == 0:
                    missing = "read" if c.writes else "written"
                    self.add(line, "stream-balance", f"stream '{name}' is declared in '{func.name}' but never {missing}")
                elif c.exact and c.writes != c.reads:
                    self.add(
                        line, "stream-balance",
                        f"stream '{name}' is written {c.writes} times and read {c.reads} times per call of "
                        f"'{func.name}': the dataflow stalls or leaves data behind",
                    )
        called = {
            t.text for f in self.functions for i, t in enumerate(f.body[:-1])
            if t.text in self.by_name and t.text != f.name and f.body[i + 1].text == "("
        }
        for func in self.functions:
            # a dataflow region as a whole: a kernel's top, or the C-simulation wrapper of
            # a region split into SLR segments (its segment tops flattened into it)
            if func.name not in called and self._local_streams(func):
                env = {n: n for n, _ in self._local_streams(func)}
                self._check_depths(func, self._flat_calls(func, env, ()), depths)

    def _flat_calls(self, func: Function, env: dict[str, str], active: tuple[str, ...]) -> list:
        """(process, {param: stream}) in program order, through calls of ``extern "C"`` segment
        tops (whose stream arguments and local streams join ``env``)."""
        calls = []
        body = func.body
        for i, tok in enumerate(body):
            callee = self.by_name.get(tok.text)
            if callee is None or callee is func or callee.name in active:
                continue
            if i + 1 >= len(body) or body[i + 1].text != "(":
                continue
            args = _split_top_level(body[i + 2 : _match(body, i + 1, "(", ")")])
            binding = {
                p.name: env[a[0].text]
                for p, a in zip(callee.params, args)
                if p.is_stream and len(a) == 1 and a[0].text in env
            }
            if callee.is_top:
                inner = {**binding, **{n: n for n, _ in self._local_streams(callee)}}
                calls += self._flat_calls(callee, inner, active + (func.name,))
            else:
                calls.append((callee, binding))
        return calls

    def _program(self, func: Function, active: tuple[str, ...] = ()) -> list | None:
        """``func``'s stream operations in order (``fifo_depths.Read``/``Write`` on its stream
        parameters and locals), read off the text: counted loops repeat their bodies, a
        loop body that writes one element to several streams writes them in lockstep, calls
        contribute their callee's program. None when a stream operation sits under a
        condition or a loop without a static trip count (the order is then unknown)."""
        streams = {p.name for p in func.params if p.is_stream} | {n for n, _ in self._local_streams(func)}
        try:
            ops = self._block_program(func, func.body, 0, len(func.body), streams, active + (func.name,))
        except _Unordered:
            return None
        return _merge(ops)

    def _block_program(self, func: Function, body: list[Tok], i: int, end: int, streams: set, active) -> list:
        ops: list = []
        while i < end:
            tok = body[i]
            if tok.text in ("for", "if", "switch", "while", "else", "do"):
                head_end = i
                if i + 1 < end and body[i + 1].text == "(":
                    head_end = _match(body, i + 1, "(", ")")
                stmt_start = head_end + 1
                stmt_end = _statement_end(body, stmt_start, end)
                if stmt_start < end and body[stmt_start].text == "{":
                    inner = self._block_program(func, body, stmt_start + 1, stmt_end, streams, active)
                else:
                    inner = self._block_program(func, body, stmt_start, stmt_end + 1, streams, active)
                trips = trip_count(" ".join(t.text for t in body[i + 2 : head_end])) if tok.text == "for" else None
                if inner:
                    if trips is None:
                        raise _Unordered()
                    ops += _repeat(inner, trips)
                i = stmt_end + 1
                continue
            if tok.kind == "id" and tok.text in streams and i + 2 < end and body[i + 1].text == ".":
                method = body[i + 2].text
                if method == "write":
                    ops.append(Write((tok.text,), 1))
                elif method == "read":
                    ops.append(Read(tok.text, 1))
                elif method in ("read_nb", "write_nb", "empty", "full"):
                    raise _Unordered()
            callee = self.by_name.get(tok.text)
            if callee is not None and callee.name not in active and i + 1 < end and body[i + 1].text == "(":
                close = _match(body, i + 1, "(", ")")
                args = _split_top_level(body[i + 2 : close])
                binding = {p.name: a[0].text for p, a in zip(callee.params, args)
                           if p.is_stream and len(a) == 1 and a[0].text in streams}
                inner = self._program(callee, active)
                if inner is None:
                    raise _Unordered()
                ops += _bound(inner, binding)
                i = close + 1
                continue
            i += 1
        return ops

    def _check_depths(self, top: Function, calls: list, depths) -> None:
        """Within ``top``'s dataflow region: run its processes' stream programs, read off the
        text, with the FIFO depths its pragmas give (``codegen_hls.fifo_depths``); a
        deadlock is reported at the pragma of a full stream on the cycle."""
        programs = {}
        for index, (callee, binding) in enumerate(calls):
            program = self._program(callee)
            if program is None:
                return  # the order of some process's stream operations is not static
            programs[f"{callee.name}#{index}"] = _bound(program, binding)
        used = {op.stream for ops in programs.values() for op in ops if isinstance(op, Read)}
        used |= {n for ops in programs.values() for op in ops if not isinstance(op, Read) for n in op.streams}
        caps = {name: depths.get(name, (DEFAULT_STREAM_DEPTH, 0))[0] for name in used}
        stuck = deadlock(programs, caps)
        if stuck is not None:
            stream = stuck.full[0] if stuck.full else ""
            where = f"stream '{stream}' has depth {caps[stream]}: " if stream else ""
            self.add(depths.get(stream, (0, top.line))[1] or top.line, "stream-depth",
                     f"{where}with the depths its STREAM pragmas give, the dataflow region '{top.name}' "
                     f"deadlocks ({stuck.waits}): a stream must be deeper")

    # interfaces --------------------------------------------------------------------
    def _interface_pragmas(self, top: Function, want: str = "m_axi") -> dict[str, tuple[int, dict[str, str]]]:
        """``port -> (line, options)`` of the INTERFACE pragmas of mode ``want`` inside ``top``
        (several tops in one file may name the same port: each needs its own pragma)."""
        found = {}
        last = max((t.line for t in top.body), default=top.line) + 1
        for line, text in self.directives:
            if not top.line <= line <= last:
                continue
            if not re.match(r"#\s*pragma\s+HLS\s+INTERFACE\b", text, re.I):
                continue
            words = re.sub(r"^#\s*pragma", "#pragma", text).split()[3:]
            opts = {}
            for word in words:
                key, _, value = word.partition("=")
                opts[key.lower()] = value if value else ""
            mode = opts.pop("mode", None) or next((w for w in words if "=" not in w), "")
            if mode.lower() == want and "port" in opts:
                found[opts["port"]] = (line, opts)
        return found

    def check_axis(self, top: Function, vk, pragmas: dict) -> None:
        """The AXI-stream ports ``vk`` (a VitisKernel) records, against its top's source."""
        params = {p.name: p for p in top.params}
        counts = self._summary(top)
        for a in vk.axis:
            param = params.get(a.name)
            if param is None or not param.is_stream:
                self.add(top.line, "axis-port", f"AXI-stream port '{a.name}' (link with '{a.peer}') is not an "
                         f"hls::stream argument of '{top.name}'")
                continue
            line = pragmas.get(a.name, (top.line, {}))[0]  # a missing pragma: check_interfaces
            want = stream_element(a.dtype, a.width).replace(" ", "")
            got = _stream_element(param.text)
            if got != want:
                self.add(line, "axis-port", f"stream '{a.name}' of '{top.name}' carries '{got}' but the link "
                         f"with '{a.peer}' carries {a.dtype} x {a.width} ('{want}'): the widths differ")
            c = counts.get(a.name)
            if c is None:
                continue
            done, other = (c.writes, c.reads) if a.direction == "out" else (c.reads, c.writes)
            verb = "writes" if a.direction == "out" else "reads"
            if other:
                self.add(line, "axis-port", f"'{top.name}' both writes and reads AXI-stream port '{a.name}'")
            if c.exact and done != a.elements // a.width:
                self.add(line, "axis-port", f"'{top.name}' {verb} AXI-stream port '{a.name}' {done} times per "
                         f"call; the link with '{a.peer}' carries {a.elements} elements, {a.width} per transfer")

    def check_interfaces(self, kernel: Kernel | None, banks: dict | None) -> None:
        tops = [f for f in self.functions if f.is_top]
        for top in tops:
            pragmas = self._interface_pragmas(top)
            axis = self._interface_pragmas(top, "axis")
            for param in top.params:
                if param.is_stream and param.name not in axis:
                    self.add(
                        top.line, "axis-port",
                        f"stream argument '{param.name}' of '{top.name}' has no '#pragma HLS INTERFACE axis "
                        f"port={param.name}'",
                    )
                if not param.is_memory:
                    continue
                if param.name not in pragmas:
                    self.add(
                        top.line, "m_axi-port",
                        f"argument '{param.name}' of '{top.name}' has no '#pragma HLS INTERFACE m_axi "
                        f"port={param.name}'",
                    )
                    continue
                line, opts = pragmas[param.name]
                if not opts.get("bundle"):
                    self.add(
                        line, "m_axi-bundle",
                        f"m_axi port '{param.name}' names no bundle: give it bundle=<name> so it gets "
                        "its own AXI master and memory bank",
                    )
        if kernel is None:
            return
        for vk in kernel.vitis_kernels():
            self._check_vitis_kernel(vk, tops, banks)

    def _check_vitis_kernel(self, kernel, tops, banks) -> None:
        top = next((f for f in tops if f.name == kernel.name), None)
        if top is None:
            self.add(1, "m_axi-port", f"no extern \"C\" function named '{kernel.name}' (the kernel's top function)")
            return
        pragmas = self._interface_pragmas(top)
        self.check_axis(top, kernel, self._interface_pragmas(top, "axis"))
        names = {p.name for p in top.params}
        bank_of_bundle: dict[str, tuple[str, str]] = {}
        for port in kernel.ports:
            if port.name not in names:
                self.add(top.line, "m_axi-port", f"port '{port.name}' of the design is not an argument of '{top.name}'")
                continue
            line, opts = pragmas.get(port.name, (top.line, {}))
            if opts.get("bundle") and opts["bundle"] != port.bundle:
                self.add(
                    line, "m_axi-bundle",
                    f"port '{port.name}' uses bundle '{opts['bundle']}' but the design (and the "
                    f"xclbin) records '{port.bundle}'",
                )
            if banks is None:
                continue
            bank = banks.get((kernel.name, port.name))
            if bank is None:
                self.add(line, "m_axi-bank", f"port '{port.name}' has no memory bank in the placement (sp=)")
                continue
            other = bank_of_bundle.setdefault(port.bundle, (port.name, bank))
            if other[1] != bank:
                self.add(
                    line, "m_axi-bank",
                    f"port '{port.name}' is on {bank} but shares bundle '{port.bundle}' with "
                    f"'{other[0]}' on {other[1]}",
                )


def lint_source(name: str, source: str, kernel: Kernel | None = None, banks: dict | None = None) -> list[Finding]:
    """Every finding in one C++ source (a kernel, or the common header with ``kernel=None``)."""
    linter = _Linter(name, source)
    linter.check_tokens()
    linter.check_recursion()
    linter.check_streams()
    linter.check_interfaces(kernel, banks)
    return sorted(linter.findings, key=lambda f: (f.line, f.rule))


CONNECTIVITY_FILE = "connectivity.cfg"
_STREAM_CONNECT = re.compile(r"^\s*stream_connect\s*=\s*(\w+)\.(\w+)\s*:\s*(\w+)\.(\w+)\s*(?::\s*(\d+))?\s*$")


def _link_need(kernel: Kernel, stream: str) -> int:
    """FIFO depth a crossing stream needs: the depth the region's dataflow plan gives it
    (``codegen_hls.fifo_depths``: what lets the region finish), checked on the C-simulation
    wrapper's pragmas by ``stream-depth``."""
    record = next((s for s in kernel.streams if s.name == stream), None)
    return record.depth if record is not None else 1


def lint_links(design: Design, connectivity: str | None = None) -> list[Finding]:
    """``axis-link``: both ends of every SLR crossing agree, and (given the text of
    ``connectivity.cfg``) exactly one deep-enough ``stream_connect`` links them."""
    findings: list[Finding] = []
    kernels = {vk.name: vk for vk in design.vitis_kernels()}
    regions = {k.name: k for k in design.kernels}
    expected: dict[tuple[str, str, str], int] = {}  # (producer, stream, consumer) -> depth needed
    for vk in kernels.values():
        for a in vk.axis:
            peer = kernels.get(a.peer)
            other = next((b for b in peer.axis if b.name == a.name), None) if peer else None
            if other is None or other.direction == a.direction or other.peer != vk.name:
                side = "input" if a.direction == "out" else "output"
                findings.append(Finding(vk.region, 1, "axis-link", f"'{vk.name}' links stream '{a.name}' with "
                                        f"'{a.peer}', which has no matching {side} port '{a.name}'"))
                continue
            if (other.dtype, other.elements, other.width) != (a.dtype, a.elements, a.width):
                findings.append(Finding(vk.region, 1, "axis-link", f"stream '{a.name}': '{vk.name}' has "
                                        f"{a.elements} x {a.dtype} but '{a.peer}' has {other.elements} x "
                                        f"{other.dtype}; both ends of a link must agree"))
            if a.direction == "out":
                expected[(vk.name, a.name, a.peer)] = _link_need(regions[vk.region], a.name)
    if connectivity is None:
        return findings
    seen: set[tuple[str, str, str]] = set()
    for number, line in enumerate(connectivity.split("\n"), start=1):
        if not line.strip().startswith("stream_connect"):
            continue
        match = _STREAM_CONNECT.match(line)
        if not match:
            findings.append(Finding(CONNECTIVITY_FILE, number, "axis-link", f"cannot parse '{line.strip()}'; "
                                    "expected stream_connect=<cu>.<port>:<cu>.<port>[:<depth>]"))
            continue
        src_cu, src_port, dst_cu, dst_port, depth = match.groups()
        key = (src_cu.removesuffix("_1"), src_port, dst_cu.removesuffix("_1"))
        if src_port != dst_port or key not in expected:
            findings.append(Finding(CONNECTIVITY_FILE, number, "axis-link", f"'{line.strip()}' links no "
                                    "stream crossing of the design (producer port, consumer port)"))
            continue
        if key in seen:
            findings.append(Finding(CONNECTIVITY_FILE, number, "axis-link", f"stream '{src_port}' is "
                                    "connected twice"))
        seen.add(key)
        fifo = int(depth) if depth else DEFAULT_STREAM_DEPTH
        if fifo < expected[key]:
            findings.append(Finding(CONNECTIVITY_FILE, number, "axis-link", f"link of stream '{src_port}' has "
                                    f"FIFO depth {fifo}; the dataflow plan needs depth {expected[key]} "
                                    "(transfers) for the kernels to finish without deadlock"))
    for producer, stream, consumer in expected:
        if (producer, stream, consumer) not in seen:
            findings.append(Finding(CONNECTIVITY_FILE, 1, "axis-link", f"no stream_connect links '{producer}."
                                    f"{stream}' to '{consumer}.{stream}': the AXI-stream ports would be left "
                                    "open and the kernels hang"))
    return findings


_SP = re.compile(r"^\s*sp\s*=\s*(\w+)\.(\w+)\s*:\s*(\S+)\s*$")


def lint_shared_banks(design: Design, banks: dict | None = None, connectivity: str | None = None) -> list[Finding]:
    """``m_axi-shared-bank``: every port of a written argument is connected to the bank of
    the first, read from the ``sp=`` lines of ``connectivity`` (else from ``banks``, the
    placement); nothing to check without either."""
    if connectivity is not None:
        placed: dict[tuple[str, str], tuple[str, int]] = {}
        for number, line in enumerate(connectivity.split("\n"), start=1):
            match = _SP.match(line)
            if match:
                cu, port, bank = match.groups()
                placed[(cu.removesuffix("_1"), port)] = (bank, number)
    elif banks is not None:
        placed = {key: (bank, 1) for key, bank in banks.items()}
    else:
        return []
    findings: list[Finding] = []
    for kernel in design.kernels:
        where = CONNECTIVITY_FILE if connectivity is not None else kernel.name
        for buffer in buffers(kernel):
            if len(buffer.ports) < 2:
                continue
            names = ", ".join(f"'{vk}.{p.name}'" for vk, p in buffer.ports)
            first = None
            for vk, port in buffer.ports:
                if (vk, port.name) not in placed:
                    findings.append(Finding(where, 1, "m_axi-shared-bank", f"'{vk}.{port.name}' has no bank "
                                            f"(sp=); it shares one buffer with {names}, which need one bank"))
                    continue
                bank, line = placed[(vk, port.name)]
                if first is None:
                    first = (vk, port.name, bank)
                elif bank != first[2]:
                    findings.append(Finding(
                        where, line, "m_axi-shared-bank",
                        f"'{vk}.{port.name}' is on {bank} but '{first[0]}.{first[1]}' is on {first[2]}: they "
                        f"write one argument ({names}), which the host passes as one buffer object, so "
                        "XRT needs them connected to one bank",
                    ))
    return findings


def lint_design(design: Design, banks: dict | None = None, connectivity: str | None = None) -> list[Finding]:
    """Findings for every kernel of ``design`` and its common header. ``banks`` maps
    (Vitis kernel, port) to a memory bank, as :func:`vitis_files.place` returns; pass it to
    check that every m_axi port is placed. ``connectivity``: the text of ``connectivity.cfg``,
    to check the AXI-stream links between SLR segments and the banks of shared buffers."""
    findings = lint_source(Design.COMMON_HEADER_NAME, design.common_header)
    for kernel in design.kernels:
        findings += lint_source(kernel.name, kernel.source, kernel, banks)
    return findings + lint_links(design, connectivity) + lint_shared_banks(design, banks, connectivity)


def check_design(design: Design, banks: dict | None = None, connectivity: str | None = None) -> None:
    """Raise :class:`LintError` listing every finding (kernel, line, rule) if there is one."""
    findings = lint_design(design, banks, connectivity)
    if findings:
        lines = [str(f) for f in findings]
        error = LintError(
            f"{len(findings)} synthesizability problem(s) in the generated HLS; Vitis would reject "
            "or mis-build this design:\n  " + "\n  ".join(lines)
        )
        error.findings = tuple(findings)
        raise error
