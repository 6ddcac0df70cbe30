"""Each service's own `cityhall` commands, one module per service with ``register(app)``."""
