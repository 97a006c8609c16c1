"""Time units: the model runs in days."""

DAYS_PER_UNIT = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12, "years": 365.25}
DAYS_PER_MONTH = DAYS_PER_UNIT["months"]
DAYS_PER_YEAR = DAYS_PER_UNIT["years"]
