"""Payments: terminal events, captures, refunds, receipts, daily reconciliation."""
