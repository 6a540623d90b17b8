"""Read the text form written by cimc.ir.printer back into a Graph.

    graph     := "graph" @name "{" statement* "return" output ("," output)* "}"
    statement := %name "=" body ":" type ("loc" "(" string ")")?
    body      := "input" ("{" "meaning" "=" string "}")?
               | "constant" (@name | "dense" "<" (element | "[" element,* "]") ">"
                             | "splat" "<" element ">")
               | opname "(" (%name ("," %name)*)? ")" ("{" attr ("," attr)* "}")?
    attr      := ident "=" (int | float | true | false | string | dtype | "[" int,* "]")
    type      := dtype "[" (int ("," int)*)? "]"          output := string "=" %name

Names are bare (``[A-Za-z0-9_.$-]+``) or JSON strings (``%"/enc/fc 1"``); `//` starts a
comment. Errors are CimcErrors located ``source:line:col``. Constant references (`@name`)
take their data from `constants` (a mapping or an .npz path); with `random_seed` set,
missing data is filled with random values of the declared type (handy for IR in tests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.ir.op_base import Op, attribute_schema, coerce_attribute, op_class, type_name
from cimc.ir.ops_tensor import Constant, Input
from cimc.ir.text_tokens import SourceText, Token, tokenize
from cimc.ir.types import DType, TensorType


def parse_graph(
    text: str,
    constants: Mapping[str, np.ndarray] | str | Path | None = None,
    *,
    source: str = "<ir>",
    random_seed: int | None = None,
) -> Graph:
    """Parse one `graph @name { ... }`; the result is verified."""
    data = _load_constants(constants)
    parser = _Parser(SourceText(text, source), data, random_seed)
    graph = parser.parse()
    graph.verify()
    return graph


def parse_type(text: str, source: str = "<type>") -> TensorType:
    """Parse a type such as ``f32[1, 8, 16]``."""
    parser = _Parser(SourceText(text, source), {}, None)
    t = parser.tensor_type()
    parser.expect("eof")
    return t


def _load_constants(constants: Mapping[str, np.ndarray] | str | Path | None) -> Mapping[str, Any]:
    if constants is None or isinstance(constants, Mapping):
        return constants or {}
    path = Path(constants)
    if not path.is_file():
        raise CimcError("constants file not found", str(path))
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


class _Parser:
    def __init__(self, source: SourceText, data: Mapping[str, Any], seed: int | None) -> None:
        self.tokens = tokenize(source)
        self.pos = 0
        self.source = source
        self.data = data
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.graph = Graph()

    # ---- token helpers --------------------------------------------------------------

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.peek()
        return t.kind == kind and (text is None or t.text == text)

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        return self.next() if self.at(kind, text) else None

    def expect(self, kind: str, text: str | None = None) -> Token:
        if not self.at(kind, text):
            wanted = repr(text) if text else kind
            got = repr(self.peek().text) if self.peek().kind != "eof" else "end of input"
            self.fail(f"expected {wanted}, got {got}")
        return self.next()

    def fail(self, message: str, token: Token | None = None) -> NoReturn:
        t = token or self.peek()
        raise CimcError(message, self.source.where(t.offset))

    @staticmethod
    def name_of(token: Token) -> str:
        body = token.text[1:]
        return str(json.loads(body)) if body.startswith('"') else body

    # ---- grammar --------------------------------------------------------------------

    def parse(self) -> Graph:
        self.expect("ident", "graph")
        self.graph = Graph(self.name_of(self.expect("symbol")))
        self.expect("punct", "{")
        while self.at("value"):
            self.statement()
        self.expect("ident", "return")
        self.outputs()
        self.expect("punct", "}")
        self.expect("eof")
        return self.graph

    def statement(self) -> None:
        name_token = self.next()
        name = self.name_of(name_token)
        if name in self.graph:
            self.fail(f"value %{name} is defined twice", name_token)
        self.expect("punct", "=")
        op_token = self.expect("ident")
        inputs: tuple[str, ...] = ()
        if op_token.text == "input":
            meaning = self.input_meaning()
            type_token, declared, loc = self.typed_tail()
            op: Op = self.construct(op_token, lambda: Input(declared, meaning))
        elif op_token.text == "constant":
            payload = self.constant_payload()
            type_token, declared, loc = self.typed_tail()
            data = self.constant_data(payload, declared)
            op = self.construct(op_token, lambda: Constant(data))
        else:
            op, inputs = self.general_op(op_token)
            type_token, declared, loc = self.typed_tail()
        self.add(name, op, inputs, loc, op_token, declared, type_token)

    def construct(self, token: Token, make: Callable[[], Op]) -> Op:
        try:
            return make()
        except CimcError as e:
            self.fail(e.message, token)

    def typed_tail(self) -> tuple[Token, TensorType, str]:
        """`: type` and an optional `loc("...")`."""
        self.expect("punct", ":")
        type_token = self.peek()
        declared = self.tensor_type()
        return type_token, declared, self.location()

    def add(
        self,
        name: str,
        op: Op,
        inputs: tuple[str, ...],
        loc: str,
        op_token: Token,
        declared: TensorType,
        type_token: Token,
    ) -> None:
        try:
            self.graph.add_node(op, inputs, name=name, loc=loc)
        except CimcError as e:
            self.fail(f"{e.message} (in %{name})", op_token)
        actual = self.graph.node(name).type
        if actual != declared:
            self.fail(f"%{name} is declared {declared} but {op.NAME} gives {actual}", type_token)

    def input_meaning(self) -> str:
        attrs = self.attributes() if self.at("punct", "{") else {}
        token, meaning = attrs.pop("meaning", (self.peek(), "float"))
        if attrs:
            key = sorted(attrs)[0]
            self.fail(f"input has no attribute '{key}' (known: meaning)", attrs[key][0])
        if not isinstance(meaning, str):
            self.fail("input meaning must be a string", token)
        return str(meaning)

    def constant_payload(self) -> tuple[Token, str | list[str]]:
        """`@name` (a reference) or `dense<...>` / `splat<v>` (inline elements)."""
        token = self.peek()
        if self.accept("symbol"):
            return token, self.name_of(token)
        kind = self.expect("ident")
        if kind.text not in ("dense", "splat"):
            self.fail("expected @name, dense<...> or splat<...>", kind)
        self.expect("punct", "<")
        items = self.elements() if kind.text == "dense" else [self.element()]
        self.expect("punct", ">")
        return kind, items

    def constant_data(self, payload: tuple[Token, str | list[str]], t: TensorType) -> np.ndarray:
        token, items = payload
        if isinstance(items, str):
            return self.referenced(token, items, t)
        if token.text == "splat":
            return np.full(t.shape, self.convert(token, items[0], t.dtype), t.dtype.numpy)
        if len(items) != t.numel:
            self.fail(f"dense<...> has {len(items)} elements but {t} needs {t.numel}", token)
        values = [self.convert(token, v, t.dtype) for v in items]
        return np.array(values, dtype=t.dtype.numpy).reshape(t.shape)

    def referenced(self, token: Token, key: str, t: TensorType) -> np.ndarray:
        if key in self.data:
            array = np.asarray(self.data[key])
            if array.shape != t.shape or array.dtype != t.dtype.numpy:
                self.fail(f"data for @{key} is {array.dtype}{list(array.shape)}, not {t}", token)
            return array
        if self.rng is None:
            self.fail(f"no data for constant @{key}; pass it in `constants`", token)
        return random_array(self.rng, t)

    def convert(self, token: Token, text: str, dtype: DType) -> Any:
        if dtype is DType.BOOL:
            if text not in ("true", "false"):
                self.fail(f"expected true or false for a bool constant, got {text}", token)
            return text == "true"
        if dtype.is_float:
            return float(text)
        if not re.fullmatch(r"-?\d+", text):
            self.fail(f"expected an integer for a {dtype} constant, got {text}", token)
        return int(text)

    def elements(self) -> list[str]:
        if not self.accept("punct", "["):
            return [self.element()]
        items: list[str] = []
        while not self.at("punct", "]"):
            items.append(self.element())
            if not self.accept("punct", ","):
                break
        self.expect("punct", "]")
        return items

    def element(self) -> str:
        token = self.next()
        if token.kind == "number" or (token.kind == "ident" and token.text in ("true", "false")):
            return token.text
        self.fail(f"expected a number, true or false, got {token.text!r}", token)

    def general_op(self, op_token: Token) -> tuple[Op, tuple[str, ...]]:
        try:
            cls = op_class(op_token.text)
        except CimcError as e:
            self.fail(e.message, op_token)
        inputs = self.operands()
        attrs = self.attributes() if self.at("punct", "{") else {}
        return self.build_op(cls, attrs, op_token), inputs

    def operands(self) -> tuple[str, ...]:
        self.expect("punct", "(")
        names: list[str] = []
        while self.at("value"):
            token = self.next()
            name = self.name_of(token)
            if name not in self.graph:
                self.fail(f"use of %{name} before its definition", token)
            names.append(name)
            if not self.accept("punct", ","):
                break
        self.expect("punct", ")")
        return tuple(names)

    def attributes(self) -> dict[str, tuple[Token, Any]]:
        self.expect("punct", "{")
        attrs: dict[str, tuple[Token, Any]] = {}
        while self.at("ident"):
            key = self.next()
            self.expect("punct", "=")
            value_token = self.peek()
            if key.text in attrs:
                self.fail(f"attribute {key.text} given twice", key)
            attrs[key.text] = (value_token, self.attribute_value())
            if not self.accept("punct", ","):
                break
        self.expect("punct", "}")
        return attrs

    def attribute_value(self) -> Any:
        token = self.next()
        if token.kind == "string":
            return json.loads(token.text)
        if token.kind == "number":
            text = token.text
            return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        if token.kind == "ident":
            return {"true": True, "false": False}.get(token.text, _Ident(token.text))
        if token.text == "[":
            items: list[Any] = []
            while not self.at("punct", "]"):
                items.append(self.attribute_value())
                if not self.accept("punct", ","):
                    break
            self.expect("punct", "]")
            return items
        self.fail(f"expected an attribute value, got {token.text!r}", token)

    def build_op(self, cls: type[Op], attrs: dict[str, tuple[Token, Any]], op_token: Token) -> Op:
        schema = attribute_schema(cls)
        for key, (token, _) in attrs.items():
            if key not in schema:
                known = ", ".join(sorted(schema)) or "none"
                self.fail(f"{cls.NAME} has no attribute '{key}' (known: {known})", token)
        values: dict[str, Any] = {}
        for key, kind in schema.items():
            if key not in attrs:
                continue
            token, raw = attrs[key]
            if isinstance(raw, _Ident):
                raw = DType.parse(raw.text) if kind is DType and raw.text in _DTYPES else raw.text
            try:
                values[key] = coerce_attribute(cls.NAME, key, kind, raw)
            except CimcError:
                self.fail(f"{cls.NAME}: attribute {key} must be {type_name(kind)}", token)
            except TypeError:  # a dialect attribute (e.g. a plan) with no text form
                self.fail(f"{cls.NAME}: attribute {key} cannot be read from IR text", token)
        try:
            return cls(**values)
        except TypeError:
            missing = sorted(set(schema) - set(values))
            self.fail(f"{cls.NAME} needs attribute(s) {', '.join(missing)}", op_token)
        except CimcError as e:
            self.fail(e.message, op_token)

    def tensor_type(self) -> TensorType:
        token = self.expect("ident")
        if token.text not in _DTYPES:
            self.fail(f"unknown dtype '{token.text}' (valid: {', '.join(_DTYPES)})", token)
        self.expect("punct", "[")
        dims: list[int] = []
        while self.at("number"):
            dim = self.next()
            if not dim.text.isdigit():
                self.fail(f"dimension must be a non-negative integer, got {dim.text}", dim)
            dims.append(int(dim.text))
            if not self.accept("punct", ","):
                break
        self.expect("punct", "]")
        return TensorType(tuple(dims), DType(token.text))

    def location(self) -> str:
        if not self.accept("ident", "loc"):
            return ""
        self.expect("punct", "(")
        text = str(json.loads(self.expect("string").text))
        self.expect("punct", ")")
        return text

    def outputs(self) -> None:
        pairs: list[tuple[str, str]] = []
        while self.at("string"):
            out = str(json.loads(self.next().text))
            self.expect("punct", "=")
            token = self.expect("value")
            name = self.name_of(token)
            if name not in self.graph:
                self.fail(f"output '{out}' uses undefined value %{name}", token)
            pairs.append((out, name))
            if not self.accept("punct", ","):
                break
        if not pairs:
            self.fail('expected outputs: return "name" = %value, ...')
        try:
            self.graph.set_outputs(pairs)
        except CimcError as e:
            self.fail(e.message)


@dataclass(frozen=True)
class _Ident:
    """A bare word in attribute position (a dtype such as i8)."""

    text: str


_DTYPES = tuple(d.value for d in DType)


def random_array(rng: np.random.Generator, t: TensorType) -> np.ndarray:
    """Random data of a type: normal floats, small non-negative ints, random bools."""
    if t.dtype.is_float:
        return rng.standard_normal(t.shape).astype(np.float32)
    if t.dtype is DType.BOOL:
        return rng.random(t.shape) < 0.5
    return rng.integers(0, 4, size=t.shape).astype(t.dtype.numpy)
