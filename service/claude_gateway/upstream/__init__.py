"""Everything that talks to Anthropic: the one HTTP client, its retry policy, egress, the relay, SSE and usage."""
