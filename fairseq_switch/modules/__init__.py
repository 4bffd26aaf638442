from .routing import RouterOutput, RouterStats, Top1Router, expert_capacity  # noqa: F401
from .switch_layer import ExpertFFN, SwitchFFN, switch_layer_ids  # noqa: F401
