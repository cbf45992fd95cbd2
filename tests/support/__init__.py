"""Real servers for tests: redis-server, the simulator, gateways, each on a free port, stopped afterwards."""
