"""Shared-weight contrastive decoding: when the aligned weak model pi_r is the weak base pi_ref plus a LoRA
adapter, one copy of the base weights serves both.

`load_shared_pair` loads the base, reads the adapter with peft and replaces each LoRA layer by an
`ExpertHalfLoRA`: the decoding engine feeds every prompt twice in one batch, the expert's rows first, and only
the first half of the rows gets the adapter's update. One forward then gives both models' logits, with half the
weights in memory that two models need.

peft can mix adapters in one batch itself (`adapter_names=[...]`), but it gathers each adapter's rows by a
Python index list in every layer at every step; on the testbed that forward took 2.9x a plain forward of the
doubled batch, while slicing the first half as a view costs a few small matmuls per layer. Layers that read the
same input (an attention's q, k and v; an MLP's gate and up) share one down-projection product: on small models
each extra operation is a fixed cost per layer and step.
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from cong.errors import CongError

# Sibling layers that every architecture we know calls one after another on the same tensor.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class SharedDown(nn.Module):
    """The down-projections of sibling LoRA layers, concatenated, applied to the expert rows of an input once.

    The first sibling called with an input computes the product for all of them; the others find their input is
    the same tensor object and take their columns. Any other input (a new step, another caller) recomputes it.
    """

    def __init__(self, downs: list[torch.Tensor]):
        super().__init__()
        self.down_t = nn.Parameter(torch.cat(downs).t().contiguous(), requires_grad=False)
        # The last input and its product, in a plain object: nn.Module's __setattr__ costs microseconds per call.
        self.last = SimpleNamespace(input=None, product=None)

    def expert_rows(self, x: torch.Tensor) -> torch.Tensor:
        last = self.last
        if x is not last.input:
            flat = x.reshape(-1, x.shape[-1])
            # Rows are batch-major, so the first half of the batch is the first half of the flattened rows.
            last.product, last.input = flat[: flat.shape[0] // 2].mm(self.down_t), x
        return last.product


class ExpertHalfLoRA(nn.Module):
    """A linear layer whose first half of the batch rows gets the LoRA update `up @ down` (scaling folded in);
    `columns` are its down-projection's among those of `down` (shared with its siblings).

    It calls F.linear on the base layer's own weight (shared, not copied), saving a nested module call per layer
    and step; other base layers (GPT-2's Conv1D) are called as modules.
    """

    def __init__(self, base: nn.Module, down: SharedDown, columns: slice, up: torch.Tensor):
        super().__init__()
        self.base, self.down = base, down
        self.up_t = nn.Parameter(up.t().contiguous(), requires_grad=False)
        project = partial(F.linear, weight=base.weight, bias=base.bias) if type(base) is nn.Linear else base
        # The forward reads plain references to the same objects: nn.Module's lookup of a parameter or submodule
        # costs about a microsecond, and it would make several per layer and step.
        self.hot_path = (project, down.expert_rows, columns, self.up_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        project, expert_rows, columns, up_t = self.hot_path
        low = expert_rows(x)[:, columns]
        out = project(x)
        out.view(-1, out.shape[-1])[: low.shape[0]].addmm_(low, up_t)
        return out


def load_shared_pair(base_ref: str, adapter_ref: str) -> nn.Module:
    """The weak base with every layer the adapter adapts replaced by an `ExpertHalfLoRA` (see the module doc)."""
    from peft import PeftModel

    from cong.models import load_model

    model = PeftModel.from_pretrained(load_model(base_ref), adapter_ref).get_base_model()
    lora = {name: _plain_lora(name, module, adapter_ref) for name, module in model.named_modules()}
    lora = {name: parts for name, parts in lora.items() if parts is not None}
    if not lora:
        raise CongError(f"the adapter {adapter_ref!r} adapts no layer of {base_ref!r}.")
    for group in _sibling_groups(list(lora)):
        down = SharedDown([lora[name][1] for name in group])
        start = 0
        for name in group:
            base, down_weight, up = lora[name]
            columns = slice(start, start + down_weight.shape[0])
            start = columns.stop
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, ExpertHalfLoRA(base, down, columns, up))
    return model.eval()


def _plain_lora(name: str, module: nn.Module, adapter_ref: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor] | None:
    """A LoRA layer's base layer, down weight and up weight (scaling folded in); None for other modules."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        return None
    (adapter,) = module.active_adapters
    # DoRA and the other variants, and a bias on the update, are not a plain sum base(x) + up(down(x)).
    if not isinstance(module, LoraLinear) or module.lora_variant or module.lora_B[adapter].bias is not None:
        raise CongError(
            f"the adapter {adapter_ref!r} is not plain LoRA on linear layers at {name}; shared-weight "
            "contrastive decoding needs one. Set stages.cd_sample.shared_weights: false to decode with two models."
        )
    dtype = module.base_layer.weight.dtype
    down = module.lora_A[adapter].weight.detach().to(dtype)
    up = (module.lora_B[adapter].weight.detach() * module.scaling[adapter]).to(dtype)
    return module.base_layer, down, up


def _sibling_groups(names: list[str]) -> list[list[str]]:
    """The adapted layers grouped by SIBLINGS within their parent module, every other layer alone."""
    groups: dict[tuple[str, int], list[str]] = {}
    for position, name in enumerate(names):
        parent, _, attribute = name.rpartition(".")
        kind = next((i for i, siblings in enumerate(SIBLINGS) if attribute in siblings), None)
        groups.setdefault((parent, position if kind is None else -1 - kind), []).append(name)
    return list(groups.values())
