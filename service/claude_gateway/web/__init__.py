"""The HTTP face of the gateway: the app factory, middleware, exception handlers, routes and request bodies."""
