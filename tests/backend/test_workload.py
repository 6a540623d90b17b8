"""The abstract workload: validation and the transformer builder."""

from __future__ import annotations

import pytest

from cimc.backend.plan.workload import (
    DynamicMatmul,
    MatmulLayer,
    TransformerDims,
    VectorWork,
    Workload,
    transformer_workload,
)
from cimc.errors import CimcError

BERT_BASE = TransformerDims(layers=12, hidden=768, heads=12, intermediate=3072, tokens=128)


def test_weight_bytes_default_to_int8_cells() -> None:
    assert MatmulLayer("a", 96, 250, 7).weight_bytes == 96 * 250


def test_inconsistent_weight_bytes_is_a_user_error() -> None:
    with pytest.raises(CimcError, match=r"weight_bytes 5 != 6 \(k rows of 3 8-bit weights") as info:
        MatmulLayer("a", 2, 3, 1, weight_bytes=5)
    assert info.value.location == "workload item a"


@pytest.mark.parametrize(
    "item",
    [
        lambda: MatmulLayer("a", 0, 3, 1),
        lambda: DynamicMatmul("a", 4, 4, 1, count=0),
        lambda: VectorWork("a", -1),
    ],
)
def test_non_positive_dims_are_rejected(item) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CimcError, match="must be positive"):
        item()


def test_dependencies_must_point_backwards() -> None:
    a = MatmulLayer("a", 4, 4, 1, depends_on=("b",))
    b = MatmulLayer("b", 4, 4, 1)
    with pytest.raises(CimcError, match="depends on 'b', which is not an earlier item"):
        Workload((a, b))


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(CimcError, match="duplicate"):
        Workload((VectorWork("x", 4), VectorWork("x", 4)))


def test_bert_base_workload() -> None:
    work = transformer_workload(BERT_BASE)
    assert len(work.layers) == 72
    assert work.weight_bytes == 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    qk = work.item("layer3.qk")
    assert isinstance(qk, DynamicMatmul)
    assert (qk.k, qk.n, qk.vectors, qk.count) == (64, 128, 128, 12)
    assert work.item("layer1.q").depends_on == ("layer0.norm2",)
    assert work.position("layer0.q") < work.position("layer0.qk") < work.position("layer0.o")


def test_gqa_decode_workload_shapes() -> None:
    dims = TransformerDims(2, 64, 8, 172, tokens=1, kv_heads=2, context=33, gated_mlp=True)
    work = transformer_workload(dims)
    k_proj = work.item("layer0.k")
    assert isinstance(k_proj, MatmulLayer)
    assert (k_proj.k, k_proj.n, k_proj.vectors) == (64, 16, 1)
    pv = work.item("layer1.pv")
    assert isinstance(pv, DynamicMatmul)
    assert (pv.k, pv.n, pv.count) == (33, 8, 8)
    assert [layer.name for layer in work.layers][-3:] == ["layer1.gate", "layer1.up", "layer1.down"]


def test_heads_must_divide_hidden() -> None:
    with pytest.raises(CimcError, match="multiple of heads"):
        TransformerDims(1, 100, 3, 10, 1)
