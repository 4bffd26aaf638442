from .routing import (  # noqa: F401
    RouterConfig,
    RouterOutput,
    RouterStats,
    RoutingContext,
    RoutingMode,
    Top1Router,
    expert_capacity,
    route_plan,
)
from .switch_layer import ExpertFFN, SwitchFFN, switch_layer_ids  # noqa: F401
