"""HTTP routes, one module per group: chat, messages (Anthropic-compatible), analyze (jobs), health, ops."""
