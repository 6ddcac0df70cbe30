"""Applications (申請): procedure catalog, citizens' and counter staff's applications,
certificates."""
