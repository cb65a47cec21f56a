"""Device choice, autocast and loss scaling (probpath.device); CUDA cases skip without a GPU."""

import pytest
import torch

from probpath.device import (
    autocast,
    check_compile_mode,
    check_precision,
    compile_networks,
    grad_scaler,
    networks,
    resolve_device,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_and_cpu() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device(None).type == want
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where there is no GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_where_there_is_none_is_one_clear_line(spec: str) -> None:
    with pytest.raises(ValueError, match="--device cpu") as err:
        resolve_device(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["gpu", "tpu:0", "cuda:x", ""])
def test_unknown_devices(spec: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device(spec)


@cuda
def test_cuda_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    assert resolve_device("cuda:0").type == "cuda"


def test_precision_names() -> None:
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        check_precision("fp64")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)]
)
def test_autocast_lowers_the_network_and_promotion_keeps_the_state(
    precision: str, dtype: torch.dtype
) -> None:
    """The matrix product runs in ``dtype``; adding it to a float32 state gives float32."""
    net = torch.nn.Linear(3, 3)
    state = torch.ones(2, 3)
    with autocast(torch.device("cpu"), precision):
        out = net(state)
        new_state = state + 0.1 * out
    assert out.dtype == dtype
    assert new_state.dtype == torch.float32


def test_grad_scaler_only_for_fp16() -> None:
    cpu = torch.device("cpu")
    assert not grad_scaler(cpu, "fp32").is_enabled()
    assert not grad_scaler(cpu, "bf16").is_enabled()
    assert grad_scaler(cpu, "fp16").is_enabled()


def test_networks_are_the_parametrised_children() -> None:
    from probpath.models import build

    model = build("ddpm", dim=2, hidden=[8])
    assert networks(model) == [model.net]
    bare = torch.nn.Linear(2, 2)  # no child with parameters: the module itself
    assert networks(bare) == [bare]


def test_compile_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="reduce-overhead"):
        compile_networks(torch.nn.Linear(2, 2), "fastest")
    assert check_compile_mode("max-autotune") == "max-autotune"
