"""`prsm gateway`: the specification's API gateway and Istio traffic rules as one ASGI app."""

from prsm.gateway.app import Gateway
from prsm.gateway.config import GatewayConfig, load_gateway_config

__all__ = ["Gateway", "GatewayConfig", "load_gateway_config"]
