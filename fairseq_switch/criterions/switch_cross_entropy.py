"""`switch_cross_entropy`: label-smoothed cross-entropy + the Switch auxiliary losses.

loss = CE + moe_loss_weight * sum_layers N * sum_i f_i P_i + router_z_loss_weight * sum_layers z_loss

With moe_loss_weight = alpha = 1e-2 this is the paper's Eq. 4 per layer (balanced routing adds
exactly alpha per layer). fairseq sums the CE over tokens and divides the gradient by
sample_size, so the auxiliary terms are multiplied by sample_size to keep their weight.
Under expert parallelism each rank's router returns its share of the global-batch losses, and
fairseq divides by the sample size summed over ranks, so the shares are multiplied by that sum.
"""

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, List, Sequence, Tuple

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics

from ..distributed import world_sum
from ..modules.routing import RouterOutput


@dataclass
class SwitchCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    moe_loss_weight: float = field(
        default=0.01, metadata={"help": "alpha: weight of each Switch layer's load-balancing loss (Eq. 4)"}
    )
    router_z_loss_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the router z-loss (ST-MoE uses 1e-3; the Switch paper recipe uses 0)"},
    )


def log_total(logging_outputs: List[Dict], key: str) -> Any:
    """Sum of one logged value over batches (and workers)."""
    return sum(log.get(key, 0) for log in logging_outputs)


def routing_logging_output(routings: Sequence[RouterOutput], world: int = 1) -> Dict[str, torch.Tensor]:
    """Summable statistics: per-layer expert token counts, drops, entropy (all detached)."""
    out: Dict[str, torch.Tensor] = {}
    if not routings:
        return out
    out["moe_layers"] = len(routings)
    # each rank logs a share of the batch losses; the shares' weights add up to 1 per global batch
    out["moe_batches"] = 1.0 / max(world, 1)
    out["moe_balance"] = sum(r.balance_loss.detach() for r in routings)
    out["moe_z"] = sum(r.z_loss.detach() for r in routings)
    out["moe_ntokens"] = sum(r.stats.num_tokens for r in routings)
    out["moe_dropped"] = sum(r.stats.num_dropped for r in routings)
    out["moe_entropy"] = sum(r.stats.entropy_sum for r in routings)
    for i, r in enumerate(routings):
        out[f"moe_counts_{i}"] = r.stats.expert_counts
        out[f"moe_dropped_{i}"] = r.stats.num_dropped  # per layer: the decoder's few tokens get few slots
        out[f"moe_ntokens_{i}"] = r.stats.num_tokens
    return out


@register_criterion("switch_cross_entropy", dataclass=SwitchCrossEntropyConfig)
class SwitchCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(
        self,
        task: Any,
        sentence_avg: bool,
        label_smoothing: float,
        ignore_prefix_size: int = 0,
        report_accuracy: bool = False,
        moe_loss_weight: float = 0.01,
        router_z_loss_weight: float = 0.0,
    ):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if moe_loss_weight < 0 or router_z_loss_weight < 0:
            raise ValueError(
                f"--moe-loss-weight ({moe_loss_weight}) and --router-z-loss-weight ({router_z_loss_weight}) "
                "must be >= 0"
            )
        self.moe_loss_weight = moe_loss_weight
        self.router_z_loss_weight = router_z_loss_weight

    def main_loss(
        self, model: Any, net_output: Tuple[torch.Tensor, Dict[str, Any]], sample: Dict[str, Any], reduce: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
        """(loss, nll_loss, extra logging) before the auxiliary losses; subclasses change the objective here."""
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        return loss, nll_loss, {}

    def forward(
        self, model: Any, sample: Dict[str, Any], reduce: bool = True
    ) -> Tuple[torch.Tensor, Any, Dict[str, Any]]:
        net_output = model(**sample["net_input"])
        loss, nll_loss, extra = self.main_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        extra_out = net_output[1] if isinstance(net_output[1], dict) else {}
        routings = extra_out.get("moe_routing", [])
        routings = [r for r in routings if r is not None]
        ce = loss
        world = routings[0].world_size if routings else 1
        if routings:
            aux = self.moe_loss_weight * sum(r.balance_loss for r in routings)
            aux = aux + self.router_z_loss_weight * sum(r.z_loss for r in routings)
            scale = sample_size
            if world > 1:  # this rank's share of the global losses, see the module docstring
                mine = 0.0 if extra_out.get("moe_dummy_batch") else float(sample_size)
                scale = float(world_sum(torch.tensor(mine, device=loss.device)))
            loss = loss + aux.to(loss.dtype) * scale
        logging_output = {
            "loss": loss.data,
            "ce_loss": ce.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            "nbatches": 1,
        }
        logging_output.update(extra)
        logging_output.update(routing_logging_output(routings, world))
        if world > 1:
            # fairseq sums logging outputs over ranks: pre-divide so the sum is the mean over ranks
            logging_output["moe_a2a_s"] = float(extra_out.get("moe_a2a_seconds", 0.0)) / world
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = n_correct.data.item()
            logging_output["total"] = total.data.item()
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs: List[Dict]) -> None:
        super().reduce_metrics(logging_outputs)
        total = partial(log_total, logging_outputs)
        ntokens = total("ntokens")
        if ntokens > 0 and any("nll_loss" in log for log in logging_outputs):
            # The paper's quality measure (Sec. 3): minus the per-token cross-entropy, in nats.
            metrics.log_scalar("neg_log_perplexity", -float(total("nll_loss")) / ntokens, ntokens, round=4)
        sample_size = total("sample_size")
        if sample_size > 0 and any("ce_loss" in log for log in logging_outputs):
            metrics.log_scalar("ce_loss", float(total("ce_loss")) / sample_size / math.log(2), sample_size, round=3)
        nbatches = total("moe_batches")
        ntok = float(total("moe_ntokens"))
        if nbatches == 0 or not any("moe_layers" in log for log in logging_outputs):
            return
        # Losses: sum over layers, averaged over (global) batches.
        metrics.log_scalar("moe_balance", float(total("moe_balance")) / nbatches, nbatches, round=4)
        metrics.log_scalar("moe_z", float(total("moe_z")) / nbatches, nbatches, round=4)
        if any("moe_a2a_s" in log for log in logging_outputs):
            # seconds in the all-to-all exchanges per batch, mean over ranks (this forward's exchanges
            # and the previous backward's: the criterion runs before its own backward)
            metrics.log_scalar("moe_a2a_s", float(total("moe_a2a_s")) / nbatches, nbatches, round=4)
        # Token statistics are pooled over every layer, batch and worker.
        metrics.log_scalar("moe_dropped", float(total("moe_dropped")) / max(ntok, 1.0), ntok, round=4)
        metrics.log_scalar("moe_entropy", float(total("moe_entropy")) / max(ntok, 1.0), ntok, round=4)
        layer = 0
        while any(f"moe_counts_{layer}" in log for log in logging_outputs):
            counts = sum(log[f"moe_counts_{layer}"] for log in logging_outputs if f"moe_counts_{layer}" in log)
            counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
            mean = counts.mean().clamp(min=1e-9)
            weight = float(counts.sum())
            metrics.log_scalar(f"moe_load_max_{layer}", float(counts.max() / mean), weight, round=3)
            metrics.log_scalar(f"moe_load_cv_{layer}", float(counts.std(unbiased=False) / mean), weight, round=3)
            if any(f"moe_dropped_{layer}" in log for log in logging_outputs):
                n = float(total(f"moe_ntokens_{layer}"))
                metrics.log_scalar(f"moe_dropped_{layer}", float(total(f"moe_dropped_{layer}")) / max(n, 1.0), n,
                                   round=4)
            layer += 1

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # Every value is a number or a fixed-shape tensor whose sum across workers is meaningful.
        return True
