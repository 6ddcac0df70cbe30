"""Security tests: authentication, authorisation, resource limits, data at rest."""
