"""The preference losses a recipe may name, as LLaMA-Factory spells them, and TRL's names for them.

Beside the recipes (which validate a file's `pref_loss`) and below the training load (which hands
the TRL name to the trainer): both read them from here.
"""

from __future__ import annotations

from toolkit.errors import UsageError

# TRL's KTOTrainer `loss_type` values
TRL_KTO_LOSSES = ("kto", "apo_zero_unpaired")
# LLaMA-Factory `pref_loss` -> TRL's DPOTrainer `loss_type`
DPO_LOSSES = {"sigmoid": "sigmoid", "hinge": "hinge", "ipo": "ipo"}

KTO_PAIR_NOTE = (
    "pref_loss kto_pair (removed from TRL) is run as TRL's KTO loss on unpaired data: "
    "each example is a prompt, a completion and a desirable/undesirable label"
)


def resolve_loss(pref_loss: str) -> tuple[str, str | None]:
    """LLaMA-Factory's KTO `pref_loss` -> TRL's KTO `loss_type`, with a note when mapped.

    TRL removed `kto_pair` (it was a paired DPO-style loss); `KTOConfig` still
    accepts the string and `train()` crashes later, so refuse or map it here.
    """
    if pref_loss in TRL_KTO_LOSSES:
        return pref_loss, None
    if pref_loss == "kto_pair":
        return "kto", KTO_PAIR_NOTE
    raise UsageError(
        f"unsupported KTO loss {pref_loss!r}",
        hint=f"use one of {', '.join((*TRL_KTO_LOSSES, 'kto_pair'))} (kto_pair is mapped to kto)",
    )
