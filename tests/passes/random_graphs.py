"""Random graphs full of foldable, duplicated and no-op nodes (shared by the pass tests)."""

from __future__ import annotations

import numpy as np

from cimc.ir import DType, Graph, TensorType
from cimc.ir import ops as O

F32 = DType.F32


class RandomGraph:
    """Grows a graph by applying random ops to random earlier f32 values."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.g = Graph(f"random{seed}")
        self.values = [self.g.add_input("x", TensorType((2, 3, 4), F32))]
        self.values.append(self.g.add_constant(self.normal((3, 4)), name="c"))

    def normal(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.standard_normal(shape).astype(np.float32)

    def pick(self) -> str:
        return self.values[int(self.rng.integers(len(self.values)))]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.node(name).type.shape

    def add(self, op: O.Op, inputs: list[str]) -> None:
        self.values.append(self.g.add_node(op, inputs))

    def step(self) -> None:
        x = self.pick()
        shape, rank = self.shape(x), len(self.shape(x))
        kind = int(self.rng.integers(12))
        if kind == 0:
            op = [O.Exp(), O.Neg(), O.Tanh(), O.Sigmoid(), O.Relu()][int(self.rng.integers(5))]
            self.add(op, [x])
        elif kind == 1:  # broadcast against a (sometimes neutral) constant
            fill = [1.0, 0.0, -0.0, 0.5][int(self.rng.integers(4))]
            c = self.g.add_constant(np.full(shape[-1:], fill, np.float32))
            op = [O.Add(), O.Mul(), O.Sub(), O.Div()][int(self.rng.integers(4))]
            self.add(op, [x, c] if self.rng.random() < 0.7 else [c, x])
        elif kind == 2:
            self.add(O.Transpose(tuple(int(p) for p in self.rng.permutation(rank))), [x])
        elif kind == 3:
            self.add(O.Reshape(tuple(int(d) for d in self.rng.permutation(shape))), [x])
        elif kind == 4 and rank < 4:
            self.add(O.Expand((2, *shape)), [x])
        elif kind == 5 and rank:
            axis = int(self.rng.integers(rank))
            start = int(self.rng.integers(shape[axis]))
            self.add(O.Slice(axis, start, shape[axis], int(self.rng.integers(1, 3))), [x])
        elif kind == 6:
            self.add(O.Cast(F32), [x])
            cast = self.g.add_node(O.Cast(DType.I32), [self.values[-1]])
            self.add(O.Cast(F32), [cast])
        elif kind == 7 and rank:
            self.add(O.Softmax(int(self.rng.integers(rank))), [x])
        elif kind == 8 and rank > 1:
            reduce = [O.ReduceSum, O.ReduceMax, O.ReduceMean][int(self.rng.integers(3))]
            self.add(reduce((int(self.rng.integers(rank)),), bool(self.rng.random() < 0.5)), [x])
        elif kind == 9 and rank:
            self.add(O.Concat(rank - 1), [x, x])
        elif kind == 10:  # a duplicate of an existing node, for CSE
            node = self.g.node(self.pick())
            if node.inputs:
                self.values.append(self.g.add_node(node.op, node.inputs))
        elif kind == 11:
            zero = self.g.add_constant(np.zeros((), np.float32))
            cond = self.g.add_node(O.Greater(), [x, zero])
            self.add(O.Where(), [cond, x, zero])

    def build(self, steps: int) -> Graph:
        for _ in range(steps):
            self.step()
        self.g.set_outputs([(f"o{k}", v) for k, v in enumerate(self.values[-5:])])
        return self.g
