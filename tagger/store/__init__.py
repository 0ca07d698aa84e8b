"""Every line of SQL: engine and schema checks, reads, the one writer, search, reports."""
