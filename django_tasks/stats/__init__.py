"""Statistics of long windows (the dashboard's 24 hours and 7 days, the metrics endpoint, the
API's ``stats/``) read from per-slot summaries instead of every run of the window
(:mod:`.slots`)."""
