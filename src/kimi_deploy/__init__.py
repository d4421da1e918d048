"""kimi-deploy: plan, launch, benchmark and verify self-hosted Kimi K2 deployments."""

__version__ = "0.1.0"
