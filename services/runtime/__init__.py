"""The small shared kit every service runs on: settings, database and migrations, streams,
outbox relay, inbox consumer, dead letters, telemetry and the service runner.

It knows no business words: services bring their own domain, handlers, store and routes.
"""
