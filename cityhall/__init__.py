"""cityhall command line and local stack."""
