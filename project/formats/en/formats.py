"""English formats that differ from Django's: timestamps to the second, with their zone."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
