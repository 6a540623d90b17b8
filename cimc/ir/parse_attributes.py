"""Attributes, arrays and types of the IR text form (the graph parser builds on this).

    attrs  := "{" (ident "=" attr ("," ident "=" attr)*)? "}"
    attr   := int | float | true | false | string | dtype | "[" attr,* "]"
            | array ":" type                           (an np.ndarray attribute)
            | Name "<" (ident "=" attr),* ">"          (a struct: a dataclass by name)
    array  := @name | "dense" "<" (element | "[" element,* "]") ">" | "splat" "<" element ">"
    type   := dtype "[" (int ("," int)*)? "]"

Values are read untyped, then converted to the kinds an op (or struct) declares
(cimc.ir.op_base.attribute_schema), so every error names the attribute and its place.
`@name` arrays take their data from the mapping given to the parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.op_base import (
    attribute_schema,
    coerce_attribute,
    is_struct,
    quiet_fields,
    type_name,
)
from cimc.ir.text_tokens import SourceText, Token, TokenStream
from cimc.ir.types import DType, TensorType

DTYPES = tuple(d.value for d in DType)

Attrs = dict[str, tuple[Token, Any]]  # name -> (token of the value, raw value)


@dataclass(frozen=True)
class _Ident:
    """A bare word in attribute position (a dtype such as i8)."""

    text: str


@dataclass(frozen=True)
class _Struct:
    """`Name<field = value, ...>` as read, before its fields are converted."""

    name: str
    fields: Attrs


NO_DATA_HINT = "give the arrays the text names (its constants)"


class AttributeParser(TokenStream):
    """Attribute values, arrays and tensor types; `data` holds the @name arrays, `hint`
    says where a missing one should have come from."""

    def __init__(
        self,
        source: SourceText,
        data: Mapping[str, Any],
        seed: int | None,
        hint: str = NO_DATA_HINT,
    ) -> None:
        super().__init__(source)
        self.data = data
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.hint = hint

    # ---- untyped values -------------------------------------------------------------

    def attributes(self, close: str = "}") -> Attrs:
        """`{k = v, ...}` (or, with close=">", a struct's fields after its '<')."""
        if close == "}":
            self.expect("punct", "{")
        attrs: Attrs = {}
        while self.at("ident"):
            key = self.next()
            self.expect("punct", "=")
            value_token = self.peek()
            if key.text in attrs:
                self.fail(f"attribute {key.text} given twice", key)
            attrs[key.text] = (value_token, self.attribute_value())
            if not self.accept("punct", ","):
                break
        self.expect("punct", close)
        return attrs

    def attribute_value(self) -> Any:
        token = self.next()
        if token.kind == "string":
            return json.loads(token.text)
        if token.kind == "number":
            text = token.text
            return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        if token.kind == "symbol" or (token.text in ("dense", "splat") and self.at("punct", "<")):
            return self.array_value(token)
        if token.kind == "ident" and self.accept("punct", "<"):
            return _Struct(token.text, self.attributes(close=">"))
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

    def array_value(self, first: Token) -> np.ndarray:
        """`@name : type`, `dense<...> : type` or `splat<v> : type` (`first` is consumed)."""
        self.pos -= 1
        payload = self.constant_payload()
        self.expect("punct", ":")
        return self.constant_data(payload, self.tensor_type())

    # ---- typed conversion -----------------------------------------------------------

    def typed_fields(self, owner: str, schema: dict[str, Any], attrs: Attrs) -> dict[str, Any]:
        """The attributes converted to the kinds of `schema`; unknown names are errors."""
        for key, (token, _) in attrs.items():
            if key not in schema:
                known = ", ".join(sorted(schema)) or "none"
                self.fail(f"{owner} has no attribute '{key}' (known: {known})", token)
        return {
            key: self.typed(owner, key, kind, *attrs[key])
            for key, kind in schema.items()
            if key in attrs
        }

    def typed(self, owner: str, key: str, kind: Any, token: Token, raw: Any) -> Any:
        if is_struct(kind):
            return self.struct(kind, token, raw)
        if isinstance(raw, _Ident):
            raw = DType.parse(raw.text) if kind is DType and raw.text in DTYPES else raw.text
        try:
            return coerce_attribute(owner, key, kind, raw)
        except CimcError:
            self.fail(f"{owner}: attribute {key} must be {type_name(kind)}", token)

    def struct(self, kind: type, token: Token, raw: Any) -> Any:
        if not isinstance(raw, _Struct) or raw.name != kind.__name__:
            self.fail(f"expected {kind.__name__}<...>", token)
        schema = attribute_schema(kind)
        values = self.typed_fields(kind.__name__, schema, raw.fields)
        missing = [f for f in schema if f not in values and f not in quiet_fields(kind)]
        if missing:
            self.fail(f"{kind.__name__} needs field(s) {', '.join(missing)}", token)
        return kind(**values)

    # ---- arrays and types -----------------------------------------------------------

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
            self.fail(f"no data for @{key}; {self.hint}", token)
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

    def tensor_type(self) -> TensorType:
        token = self.expect("ident")
        if token.text not in DTYPES:
            self.fail(f"unknown dtype '{token.text}' (valid: {', '.join(DTYPES)})", token)
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


def random_array(rng: np.random.Generator, t: TensorType) -> np.ndarray:
    """Random data of a type: normal floats, small non-negative ints, random bools."""
    if t.dtype.is_float:
        return rng.standard_normal(t.shape).astype(np.float32)
    if t.dtype is DType.BOOL:
        return rng.random(t.shape) < 0.5
    return rng.integers(0, 4, size=t.shape).astype(t.dtype.numpy)
