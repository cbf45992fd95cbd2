"""claude-gateway: a production gateway in front of Anthropic's Claude API."""

__version__ = "0.1.0"
