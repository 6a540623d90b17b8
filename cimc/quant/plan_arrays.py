"""The array types the plans hold, as declarations their ops check when built.

A plan read back from IR text is checked against these (cimc.ir.op_base.ArrayOf): an
int16 weight or a 2-D multiplier is a located error, never a wrong program.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from cimc.ir.op_base import ArrayOf
from cimc.ir.types import DType

Int8Matrix = Annotated[np.ndarray, ArrayOf((DType.I8,), (2,))]  # linear weights [K, N]
Int32Vector = Annotated[np.ndarray, ArrayOf((DType.I32,), (1,))]  # biases, exp tables
Int64Vector = Annotated[np.ndarray, ArrayOf((DType.I64,), (1,))]  # normalization gain/bias
Int16Matrix = Annotated[np.ndarray, ArrayOf((DType.I16,), (2,))]  # Q1.14 rotary tables
Multipliers = Annotated[np.ndarray, ArrayOf((DType.I64,), (0, 1))]  # per tensor / channel
CodeVector = Annotated[np.ndarray, ArrayOf((DType.I8, DType.I16), (1,))]  # LUT entries
CodeMatrix = Annotated[np.ndarray, ArrayOf((DType.I8, DType.I16), (2,))]  # embedding tables
Codes = Annotated[np.ndarray, ArrayOf((DType.I8, DType.I16))]  # constant activations
Int32Matrix = Annotated[np.ndarray, ArrayOf((DType.I32,), (2,))]  # group multipliers [G, N]
