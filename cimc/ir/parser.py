"""Read the text form written by cimc.ir.printer back into a Graph.

    graph     := "graph" @name "{" statement* "return" output ("," output)* "}"
    statement := %name "=" body ":" type ("loc" "(" string ")")?
    body      := "input" ("{" "meaning" "=" string "}")?
               | "constant" (@name | "dense" "<" (element | "[" element,* "]") ">"
                             | "splat" "<" element ">")
               | opname "(" (%name ("," %name)*)? ")" ("{" attr ("," attr)* "}")?
    attr      := ident "=" value      (values, arrays and structs: cimc.ir.parse_attributes)
    type      := dtype "[" (int ("," int)*)? "]"          output := string "=" %name

Names are bare (``[A-Za-z0-9_.$-]+``) or JSON strings (``%"/enc/fc 1"``); `//` starts a
comment. Errors are CimcErrors located ``source:line:col``. Array references (`@name`,
constants and arrays inside attributes) take their data from `constants` (a mapping or a
.safetensors / .npz path); with `random_seed` set, missing data is filled with random values
of the declared type (handy for IR in tests). Ops of a dialect parse once its module is
imported (cimc.dialects.load_dialects).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.ir.op_base import Op, attribute_schema, op_class
from cimc.ir.ops_tensor import Constant, Input
from cimc.ir.parse_attributes import NO_DATA_HINT, AttributeParser, Attrs
from cimc.ir.tensor_file import load_tensors
from cimc.ir.text_tokens import SourceText, Token
from cimc.ir.types import TensorType


def parse_graph(
    text: str,
    constants: Mapping[str, np.ndarray] | str | Path | None = None,
    *,
    source: str = "<ir>",
    random_seed: int | None = None,
    no_data_hint: str = NO_DATA_HINT,
) -> Graph:
    """Parse one `graph @name { ... }`; the result is verified. `no_data_hint` ends the
    error for an @name without data (where the reader should have put it)."""
    data = _load_constants(constants)
    parser = _Parser(SourceText(text, source), data, random_seed, no_data_hint)
    graph = parser.parse()
    graph.verify()
    return graph


def parse_type(text: str, source: str = "<type>") -> TensorType:
    """Parse a type such as ``f32[1, 8, 16]``."""
    parser = _Parser(SourceText(text, source), {}, None, NO_DATA_HINT)
    t = parser.tensor_type()
    parser.expect("eof")
    return t


def _load_constants(constants: Mapping[str, np.ndarray] | str | Path | None) -> Mapping[str, Any]:
    if constants is None or isinstance(constants, Mapping):
        return constants or {}
    return load_tensors(constants)


class _Parser(AttributeParser):
    def __init__(
        self, source: SourceText, data: Mapping[str, Any], seed: int | None, hint: str
    ) -> None:
        super().__init__(source, data, seed, hint)
        self.graph = Graph()

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
        if self.at("ident", "graph"):
            self.fail("a second graph starts here: IR text holds one graph (keep one IR dump)")
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

    def build_op(self, cls: type[Op], attrs: Attrs, op_token: Token) -> Op:
        values = self.typed_fields(cls.NAME, attribute_schema(cls), attrs)
        try:
            return cls(**values)
        except TypeError:
            missing = sorted(set(attribute_schema(cls)) - set(values))
            self.fail(f"{cls.NAME} needs attribute(s) {', '.join(missing)}", op_token)
        except CimcError as e:
            self.fail(e.message, op_token)

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
