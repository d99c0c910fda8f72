"""Dates in English pages: ISO's order, which nobody misreads (Django's own is 12/04/2026)."""

SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
