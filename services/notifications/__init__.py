"""Notifications: tells citizens and staff by e-mail and webhook, with retries."""
