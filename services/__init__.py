"""cityhall's services: applications, payments, notifications, reporting, and their runtime."""
