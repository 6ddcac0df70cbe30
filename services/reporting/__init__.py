"""Reporting: projects every event into KPI read-models; query API and dashboard."""
