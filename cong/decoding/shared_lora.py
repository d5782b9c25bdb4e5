"""Shared-weight contrastive decoding: when the aligned weak model pi_r is the weak base pi_ref plus a LoRA
adapter, one copy of the base weights serves both.

`load_shared_pair` loads the base, reads the adapter with peft and replaces each LoRA layer by an
`ExpertHalfLoRA`: the decoding engine feeds every prompt twice in one batch, the expert's rows first, and only
the first half of the rows gets the adapter's update. One forward then gives both models' logits, with half the
weights in memory that two models need.

peft can mix adapters in one batch itself (`adapter_names=[...]`), but it gathers each adapter's rows by a
Python index list in every layer at every step; on the testbed that forward took 2.9x a plain forward of the
doubled batch, while slicing the first half as a view costs a few small matmuls per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cong.errors import CongError


class ExpertHalfLoRA(nn.Module):
    """A linear layer whose first half of the batch rows gets the LoRA update `up @ down` (scaling folded in).

    It calls F.linear on the base layer's own weight (shared, not copied), saving a nested module call per layer
    and step; other base layers (GPT-2's Conv1D) are called as modules.
    """

    def __init__(self, base: nn.Module, down: torch.Tensor, up: torch.Tensor):
        super().__init__()
        self.base = base
        self.linear = type(base) is nn.Linear
        # Transposed once here so that the hot path is two plain matrix products on 2-D views.
        self.down_t = nn.Parameter(down.t().contiguous(), requires_grad=False)
        self.up_t = nn.Parameter(up.t().contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.base.weight, self.base.bias) if self.linear else self.base(x)
        # Rows are batch-major, so the first half of the batch is the first half of the flattened rows.
        flat_x, flat_out = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
        half = flat_x.shape[0] // 2
        flat_out[:half].addmm_(flat_x[:half].mm(self.down_t), self.up_t)
        return out


def load_shared_pair(base_ref: str, adapter_ref: str) -> nn.Module:
    """The weak base with every layer the adapter adapts replaced by an `ExpertHalfLoRA` (see the module doc)."""
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    from cong.models import load_model

    peft_model = PeftModel.from_pretrained(load_model(base_ref), adapter_ref)
    model = peft_model.get_base_model()
    replaced = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
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
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, ExpertHalfLoRA(module.base_layer, down, up))
        replaced += 1
    if not replaced:
        raise CongError(f"the adapter {adapter_ref!r} adapts no layer of {base_ref!r}.")
    return model.eval()
