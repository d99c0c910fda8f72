"""Dates in Simplified Chinese pages, as Chinese writes them (2026年12月4日 19:30)."""

SHORT_DATE_FORMAT = "Y年n月j日"
SHORT_DATETIME_FORMAT = "Y年n月j日 H:i"
