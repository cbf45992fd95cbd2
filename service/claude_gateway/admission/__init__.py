"""What a request must pass before it reaches Anthropic: client keys, policy, limits, budgets, slots, the lease."""
