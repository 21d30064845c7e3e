"""Analysis: collect run files (polars), statistics (scipy), claims ledger, tables and figures."""
